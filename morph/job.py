"""The job runner: config -> prompt tensors -> path of conditionings -> frames -> video and manifest.

The only module that knows every stage; `run_job` reads as the numbered script it is.
"""

import json
import platform
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import __version__
from .config import JobConfig, parse_frame_spec
from .encode import PromptEncoder, embedding_shape
from .path import GridPath, WalkPath, linspace, segment_steps
from .pipeline import LoadedModel, load_model, quiet_libraries, resolve_device, resolve_dtype
from .render import RenderSettings, render_frames, shared_latent, to_uint8
from .video import VideoWriter, write_png


@dataclass
class PreparedJob:
    """A job ready to render any of its frames: model loaded, prompts encoded, path built."""

    config: JobConfig
    loaded: LoadedModel
    path: WalkPath | GridPath
    negative: torch.Tensor  # [L, D]
    latent: torch.Tensor  # [1, C, H/8, W/8]
    settings: RenderSettings
    timings: dict = field(default_factory=dict)

    def frames(self, indices: list[int]):
        """Yield (index, uint8 image [H, W, 3], NSFW flag) for the chosen frames, batched."""
        for i, image, flagged in render_frames(self.loaded.pipe, self.path.conditionings, indices, self.negative,
                                               self.latent, self.settings, self.config.batch_size):
            yield i, to_uint8(image), flagged


def frame_count(config: JobConfig) -> int:
    """How many frames (walks, edits) or cells (grids) the job has, known before any model loads."""
    if config.grid:
        return config.grid.rows.steps * config.grid.columns.steps
    n_keyframes = len(config.edit.prompts if config.edit else config.prompts)
    return sum(segment_steps(config.frames, n_keyframes)) + 1


def _keyframes(config: JobConfig, encoder: PromptEncoder) -> torch.Tensor:
    """Keyframe tensors [K, L, D] of a walk or a one-word edit."""
    if config.edit:
        edit = config.edit
        return torch.stack([
            encoder.edit(config.base, edit.word, config.prompt_terms(p, f"edit.prompts[{i}]"), edit.occurrence,
                         edit.slots)
            for i, p in enumerate(edit.prompts)])
    return torch.stack([encoder.terms(config.prompt_terms(p, f"prompts[{i}]")) for i, p in enumerate(config.prompts)])


def _build_path(config: JobConfig, encoder: PromptEncoder) -> WalkPath | GridPath:
    if config.grid:
        rows, columns = config.grid.rows, config.grid.columns
        start, end, add = (encoder.terms(config.prompt_terms(source, where))
                           for where, source in config.prompt_sources())
        return GridPath(start, end, add, linspace(0, 1, rows.steps), linspace(columns.start, columns.end, columns.steps),
                        config.interpolation, names=(rows.start, rows.end, columns.add))
    keyframes = _keyframes(config, encoder)
    return WalkPath(keyframes, segment_steps(config.frames, len(keyframes)), config.interpolation)


def prepare_job(config: JobConfig, quiet: bool = False) -> PreparedJob:
    """Steps 1-4 of a job: everything before the first frame is rendered."""
    timings = {}
    # 1. Check inputs that need torch (devices); the config itself was validated on load
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    if quiet:
        quiet_libraries()

    # 2. Load the model
    started = time.perf_counter()
    loaded = load_model(config.model, device, dtype, config.scheduler, config.safety_checker)
    pipe = loaded.pipe
    timings["load_s"] = time.perf_counter() - started

    # 3. Encode the prompts, each distinct text once, into full [L, D] tensors
    started = time.perf_counter()
    encoder = PromptEncoder(pipe.tokenizer, pipe.text_encoder)
    path = _build_path(config, encoder)
    negative = encoder.text(config.negative_prompt)
    timings["encode_s"] = time.perf_counter() - started

    # 4. One starting latent, shared by every frame
    height = config.height or pipe.unet.config.sample_size * pipe.vae_scale_factor
    width = config.width or pipe.unet.config.sample_size * pipe.vae_scale_factor
    settings = RenderSettings(height, width, config.num_inference_steps, config.guidance_scale, config.seed)
    latent = shared_latent(pipe, config.seed, height, width)
    return PreparedJob(config, loaded, path, negative, latent, settings, timings)


def run_job(config: JobConfig, frames: str | None = None, quiet: bool = False) -> dict:
    """Render a job to its output folder and return the manifest it wrote.

    `frames` ('0,17,100-120') renders only those frames: their PNGs and the manifest, no video.
    """
    count = frame_count(config)
    selection = parse_frame_spec(frames, count) if frames else list(range(count))
    quiet = quiet or not sys.stderr.isatty()
    started = time.perf_counter()
    job = prepare_job(config, quiet=quiet)
    settings = job.settings

    # 5. Render, streaming every frame to its PNG (and, for a full walk, to the MP4) as it is decoded
    out = config.output_dir
    folder = out / ("cells" if config.grid else "frames")
    full = len(selection) == count
    if full and folder.exists():
        shutil.rmtree(folder)  # a full run replaces the previous run's frames, so none are stale
    folder.mkdir(parents=True, exist_ok=True)
    make_video = full and not config.grid
    writer = VideoWriter(out / f"{config.name}.mp4", settings.width, settings.height, config.fps) if make_video \
        else nullcontext()
    flagged, records = [], []
    render_started = time.perf_counter()
    with writer as video, tqdm(total=len(selection), unit="frame", disable=quiet) as bar:
        for i, image, nsfw in job.frames(selection):
            record = job.path.describe(i)
            write_png(folder / record["file"], image)
            if video:
                video.write(image)
            flagged += [i] if nsfw else []
            records.append(record)
            bar.update(1)
    render_s = time.perf_counter() - render_started

    # 6. Grids: the labelled contact sheet of all cells
    sheet = None
    if config.grid and full:
        sheet = out / "grid.png"
        _contact_sheet(config, job.path, folder).save(sheet)

    # 7. Write the manifest
    manifest = _manifest(job, records, selection, flagged, video, sheet, folder)
    manifest["timings"].update(render_s=round(render_s, 3), total_s=round(time.perf_counter() - started, 3),
                               frames_per_s=round(len(selection) / render_s, 3) if render_s else None)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def _contact_sheet(config: JobConfig, path: GridPath, folder: Path):
    from .sheet import contact_sheet, grid_labels

    rows, columns = config.grid.rows, config.grid.columns
    title, row_labels, column_labels = grid_labels(rows.start, rows.end, columns.add, path.row_t, path.column_k)
    files = [[folder / path.describe(i * len(path.column_k) + j)["file"] for j in range(len(path.column_k))]
             for i in range(len(path.row_t))]
    return contact_sheet(files, title, row_labels, column_labels)


def _prompt_terms(config: JobConfig) -> list[dict]:
    """Every prompt entry with the weighted texts it resolved to, for the manifest."""
    return [{"key": where, "source": source, "terms": config.prompt_terms(source, where)}
            for where, source in config.prompt_sources()]


def environment(pipe) -> dict:
    """Where and with what the frames were rendered: decides whether two renders can match exactly."""
    import diffusers
    import transformers

    return {
        "device": str(pipe.device),
        "device_name": torch.cuda.get_device_name(pipe.device) if pipe.device.type == "cuda" else platform.processor()
        or platform.machine(),
        "dtype": str(pipe.unet.dtype).removeprefix("torch."),
        "versions": {"morph": __version__, "python": platform.python_version(), "torch": torch.__version__,
                     "diffusers": diffusers.__version__, "transformers": transformers.__version__,
                     "numpy": np.__version__, "cuda": torch.version.cuda},
    }


def _manifest(job: PreparedJob, records, selection, flagged, video, sheet, folder) -> dict:
    config, pipe = job.config, job.loaded.pipe
    attention = {type(p).__name__ for p in pipe.unet.attn_processors.values()}
    return {
        "name": config.name,
        "kind": config.kind,
        "config": config.to_dict(),
        "config_hash": config.pixel_hash(),
        "model": {"name": job.loaded.model, "location": job.loaded.location, "revision": job.loaded.revision},
        "seed": config.seed,
        **environment(pipe),
        "scheduler": type(pipe.scheduler).__name__,
        "attention": sorted(attention),
        "height": job.settings.height,
        "width": job.settings.width,
        "embedding_shape": list(embedding_shape(pipe.tokenizer, pipe.text_encoder)),
        "prompts": _prompt_terms(config),
        "frame_count": len(job.path),
        "rendered": len(selection),
        "frames_dir": str(folder),
        "frames": records,
        "nsfw_flagged": flagged,
        "video": str(video.path) if video else None,
        "video_frames": video.frames if video else None,
        "fps": config.fps,
        "grid": str(sheet) if sheet else None,
        "timings": {k: round(v, 3) for k, v in job.timings.items()},
    }
