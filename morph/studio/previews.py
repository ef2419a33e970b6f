"""Seeing a walk before rendering it: a short, cheap walk of the same job (a dozen frames at reduced size and steps)
with its filmstrip and storm plot, and any single frame of the full walk on demand, through the job's frame store,
so a frame seen once comes back without rendering it again. Both keep the model they loaded for the next one
(ModelShelf)."""

import inspect
import threading
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from ..analysis.respace import use_placement
from ..config.jobs import JobConfig, validate
from ..errors import MorphError
from ..files import read_walk
from ..job import PreparedJob, prepare_job, run_job
from ..models.pipeline import LoadedModel, load_model, own_side
from ..render.produce import FramePlan, claimed, plan_frames, produce
from ..render.shard import Shard
from ..render.store import FrameStore, stat_signature
from .access import inside
from .configs import BUILT_IN_MODELS

PREVIEW_FRAMES = 12
PREVIEW_SIDE = 256  # pixels: the longest side a preview renders at (built-in models keep their own, smaller size)
PREVIEW_STEP_SHARE = 4  # a quarter of the job's denoising steps ...
PREVIEW_MIN_STEPS = 4  # ... but no fewer than this (few-step models keep theirs)
PREVIEWS = ".preview"  # beside a job's output folder: one folder per job name, reused by the next preview


def preview_config(config: JobConfig) -> JobConfig:
    """The same job made cheap: a dozen uniformly spaced frames (walks and edits), the size and steps reduced, no
    hires pass, no music timing, no deliveries, no attribution renders; it writes beside the job's output, in
    .preview/<name> (outputs/.preview/<name> for a job written to outputs/<name>)."""
    raw = config.to_dict()
    steps = config.num_inference_steps
    raw["num_inference_steps"] = min(steps, max(PREVIEW_MIN_STEPS, steps // PREVIEW_STEP_SHARE))
    if config.model not in BUILT_IN_MODELS or config.height or config.width:
        # a side the job leaves unset is the model's own (square), so the preview keeps the video's aspect
        own = own_side(config.model, config.configs_from) if not (config.height and config.width) else None
        side = own or config.height or config.width or PREVIEW_SIDE
        height, width = config.height or side, config.width or side
        scale = min(1.0, PREVIEW_SIDE / max(height, width))
        raw["height"], raw["width"] = (max(64, round(side * scale / 8) * 8) for side in (height, width))
    if config.kind != "grid":
        raw["frames"] = max(PREVIEW_FRAMES, len(config.keyframe_sources()))
        raw.update(spacing="uniform", timing=None, video={})
    raw["analysis"] = {**raw["analysis"], "explain": False}
    # the base walk: no hires pass, whose strength may give no step of the preview's fewer ones
    raw.update(hires=None, compile=False, output=str(config.output_dir.parent / PREVIEWS / config.name))
    return validate(raw, default_name=config.name)


def preview(config: JobConfig, load=load_model) -> dict:
    """Render the preview of `config` and return its manifest (analysis.filmstrip and analysis.plot: the pictures).
    `load`: pipeline.load_model, or a ModelShelf's."""
    cheap = preview_config(config)
    # the job's own output the studio checked (resolved, in outputs/); a link at .preview/ would take the preview out
    if not inside(cheap.output_dir, config.output_dir.parent):
        raise MorphError(f"output: {cheap.output_dir} leads elsewhere through a link, and the studio writes only "
                         "into its own folders; remove the link")
    return run_job(cheap, quiet=True, load=load)


class ModelShelf:
    """The model the last preview or frame loaded, kept for the next one that loads the same: loading Stable
    Diffusion takes seconds, as long as its preview renders. Its users take turns (the page renders one thing at a
    time), and a job with compile: true loads its own, since compiling changes the pipeline."""

    def __init__(self):
        self._key = self._loaded = None

    def load(self, *args, **kwargs) -> LoadedModel:
        """pipeline.load_model(*args, **kwargs), or the model it loaded last, when the arguments and the files they
        name (model, VAE, embeddings, LoRAs) are unchanged."""
        named = inspect.signature(load_model).bind(*args, **kwargs).arguments
        files = [named["model"], named.get("vae"), named.get("configs_from"),
                 *[e if isinstance(e, str) else e["path"] for e in named.get("embeddings") or []],
                 *[lora.file for lora in named.get("loras") or []]]
        key = repr((sorted(named.items()), [stat_signature(file) for file in files if file]))
        if key != self._key:
            self.release()  # the last model goes before the next one loads
            self._loaded, self._key = load_model(*args, **kwargs), key
        return self._loaded

    def release(self) -> None:
        """Let the model go, e.g. before a full render needs the device's memory."""
        self._key = self._loaded = None


class FrameAt:
    """Single frames of a job's full walk, rendered on demand through its frame store. The last job prepared stays
    prepared, so moving along the same walk renders only the frame asked for."""

    def __init__(self, load=load_model, worker=None):
        self._lock = threading.Lock()
        self._load = load  # as preview's
        self._worker = worker  # the studio's render worker: a frame takes the device only between its renders
        self._job: PreparedJob | None = None
        self._prepared_for = None  # the config the job was prepared from, every key of it, and its manifest's stat
        self._rendered = False  # whether the job's frames are those of the video in its output (_placed_as_rendered)

    def release(self) -> None:
        """Let the prepared job (its model) go, e.g. before a full render needs the device's memory."""
        with self._lock:
            self._job = self._prepared_for = None

    def frame(self, config: JobConfig, index: int) -> np.ndarray:
        """Frame `index` of `config`'s walk, uint8 [H, W, 3]: from the store if it is there, else rendered into it."""
        between = self._worker.between_renders(f"frame {index}") if self._worker else nullcontext()
        # the job's output lock, as a render holds it: no frame is written into a store another run writes
        with self._lock, between, claimed(config.output_dir, Shard()):
            # every key: besides the pixels, the device, dtype, batch size and compile decide what was prepared; and
            # the manifest, whose placement a render from a terminal may have replaced since
            prepared_for = config.to_dict(), stat_signature(str(config.output_dir / "manifest.json"))
            if self._job is None or self._prepared_for != prepared_for:
                self._job = None  # the previous job's model goes before the next one loads
                self._job = prepare_job(config, load=load_model if config.compile else self._load)
                self._rendered = _placed_as_rendered(self._job, config.output_dir)  # spacing: even's frames
                self._prepared_for = prepared_for
            store = FrameStore(config.output_dir)
            # a frame's key holds the size of the batch it renders in: the whole aligned batch renders and is kept,
            # so that the full render finds these frames under the same keys
            batch = self._job.renderer.batch_size
            start = index - index % batch
            plan = plan_frames(self._job, list(range(start, min(start + batch, len(self._job.path)))), store, False)
            key = _video_key(plan, store, index) if self._rendered else None
            if key is None:
                produce(self._job, plan, store, Shard())
                key = plan.keys[index]
            return store.read(key)


def _placing(config: dict) -> tuple:
    """What decides where spacing: even puts a walk's frames, beside its pixel keys (config_hash)."""
    return config.get("spacing"), (config.get("analysis") or {}).get("metric")


def _placed_as_rendered(job: PreparedJob, output: Path) -> bool:
    """Point `job` at the frames of the video rendered in `output` (use_placement), when that video is of the same
    walk: the same pixel keys, spacing, metric and frame count (its name, output, fps or storm factor may differ:
    the studio writes its output as an absolute path). Whether it did; a walk not rendered yet keeps the uniform
    placement."""
    try:
        manifest = read_walk(output, "the slider")
    except MorphError:  # nothing rendered there yet
        return False
    rendered = manifest.get("config")
    if not (isinstance(rendered, dict) and manifest.get("config_hash") == job.config.pixel_hash()
            and _placing(rendered) == _placing(job.config.to_dict()) and len(manifest["frames"]) == len(job.path)):
        return False
    use_placement(job, manifest)
    return True


def _video_key(plan: FramePlan, store: FrameStore, index: int) -> str | None:
    """Frame `index`'s key in the video whose plan the store saved, when the store holds it and it is this job's
    frame: the same render identity and conditioning at one of the batch sizes that run rendered in. spacing: even
    renders its frames as samples, in batches of other sizes than the frames' aligned batches."""
    saved = store.plan() or {}
    keys = saved.get("keys") or []
    if len(keys) != len(plan.identities) or not store.has(keys[index], plan.shape):
        return None
    sizes = range(1, (saved.get("batch_size") or 0) + 1)
    return keys[index] if any(plan.key(index, size) == keys[index] for size in sizes) else None
