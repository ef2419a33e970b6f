"""What a run records about itself: the environment that decides whether renders match, and the manifest."""

import json
import platform

import numpy as np
import torch

from ..version import __version__
from ..models.family import conditioning_shape, family_of, prediction_type, vae_decodes_in_float32
from ..files import write_atomic
from ..render.produce import render_identity


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


def write_manifest(output, written: dict) -> None:
    """`output`/manifest.json: strict JSON (no NaN or Infinity), and never half a file."""
    write_atomic(output / "manifest.json", lambda path: path.write_text(json.dumps(written, indent=2,
                                                                                   allow_nan=False)))


def _prompt_terms(config) -> list[dict]:
    """Every prompt entry with the weighted texts it resolved to."""
    return [{"key": where, "source": source, "terms": config.prompt_terms(source, where)}
            for where, source in config.prompt_sources()]


def _loras(job) -> list[dict]:
    """Each LoRA: name, file, content hash, what it changes, its default strength (frames record their own)."""
    if job.loaded.loras is None:
        return []
    return [{**record, "weights": identity["weights"]}
            for record, identity in zip(job.loaded.loras.record(), render_identity(job)["loras"])]


def manifest(job, records: list[dict], flags: dict[str, list[int]], counts: dict, video, sheet, folder) -> dict:
    """The manifest of a run of the PreparedJob `job`: config, model, environment, frames and outputs."""
    config, pipe, renderer = job.config, job.loaded.pipe, job.renderer
    attention = {type(p).__name__ for p in pipe.unet.attn_processors.values()}
    shape = conditioning_shape(pipe)
    return {
        "name": config.name,
        "kind": config.kind,
        "config": config.to_dict(),
        "config_hash": config.pixel_hash(),
        "model": {"name": job.loaded.model, "location": job.loaded.location, "revision": job.loaded.revision},
        "seed": config.seed,
        **environment(pipe),
        "scheduler": type(pipe.scheduler).__name__,
        "scheduler_options": config.scheduler_choice()[1],  # what the job set on its config
        "loras": _loras(job),
        "classifier_free_guidance": config.classifier_free_guidance(),  # else the UNet runs once a step
        "attention": sorted(attention),
        # what each UNet-side mechanism (render/mechanisms.py) does, as the store key holds it, and what it measured
        **{mechanism.name: {**mechanism.identity(), **mechanism.measured()} for mechanism in renderer.mechanisms},
        "memory_format": "channels_last" if pipe.unet.conv_in.weight.is_contiguous(
            memory_format=torch.channels_last) else "contiguous",
        "compiled": config.compile,
        "batch_size": renderer.batch_size,
        "batch_size_backoffs": renderer.backoffs,
        "height": renderer.frame_size()[0],
        "width": renderer.frame_size()[1],
        "family": family_of(pipe),
        "prediction_type": prediction_type(pipe),
        "embedding_shape": shape["tokens"],
        "pooled_dim": shape["pooled"],
        "vae_decode": "float32" if vae_decodes_in_float32(pipe) else str(pipe.vae.dtype).removeprefix("torch."),
        "prompts": _prompt_terms(config),
        "frame_count": len(job.path),
        **counts,
        "frames_dir": str(folder),
        "frames": records,
        "nsfw_flagged": flags["nsfw"],  # blacked out by the safety checker
        "redecoded_float32": flags["redecoded"],  # decoded again in float32 after a NaN/inf/black decode
        "broken_frames": flags["broken"],  # still NaN/inf/black: bad latents
        "video": str(video.path) if video else None,
        "video_frames": video.frames if video else None,
        "fps": config.fps,
        "grid": str(sheet) if sheet else None,
        "timings": {k: round(v, 3) for k, v in job.timings.items()},
    }
