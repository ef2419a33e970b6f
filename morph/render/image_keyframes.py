"""Image keyframes: a keyframe's picture, DDIM-inverted, is that keyframe's starting latent.

The inverted noise joins the seeds' noise in the path's along["latent"] [K, C, h, w], which frames slerp between
as a seed walk's do (WalkPath.frame_inputs); a keyframe without an image keeps its seed's noise. Each inversion is
kept in the frame store, keyed by the picture's bytes and everything else that decides it, so a re-run or a
resume never inverts again. The mechanism itself only names what it put into the walk: its identity (the inputs,
never a measurement, so every rank and every re-run keys a frame alike) joins every frame's store key and the
manifest; how well each keyframe's frame redraws its picture joins the manifest alone.
"""

import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch

from ..config.image_keys import INVERTIBLE_SPACING
from ..config.jobs import JobConfig
from ..errors import MorphError
from ..media.picture import fitted, read_picture
from ..prompts.conditioning import negative_tensor
from ..prompts.encode import prompt_encoder
from ..prompts.latent import shared_latent
from .batch import Mechanism, RenderSettings, render_batch
from .inversion import invert, psnr
from .store import FrameStore, content_digest, digest, file_digest

INVERSION_CODE = 1  # bumped when the inversion's code moves the noise it gives
WARN_BELOW_DB = 20.0  # a frame that far from its picture no longer shows it
MAX_DB = 100.0  # an exact redraw (infinite PSNR) is recorded as this: the manifest is strict JSON


class ImageKeyframes(Mechanism):
    """Names the inverted pictures a walk starts its keyframes from (the noise itself walks in the path)."""

    name = "image_keyframes"

    def __init__(self, inversion: dict, keyframes: list[dict], psnr: list[float], seconds: float):
        self.inversion, self.keyframes, self.psnr, self.seconds = inversion, keyframes, psnr, seconds

    def identity(self) -> dict:
        return {"inversion": self.inversion, "keyframes": self.keyframes}

    def measured(self) -> dict:
        return {"psnr": self.psnr, "inversion_s": self.seconds}


def image_keyframes(config: JobConfig, loaded, path) -> ImageKeyframes | None:
    """For a walk with keyframe images: invert each (or read its inversion from the store), put every keyframe's
    starting latent into path.along["latent"], and warn of a keyframe its frame redraws below 20 dB. None for a job
    without images."""
    images = config.keyframe_images() if config.kind == "walk" else []
    if not images:
        return None
    pipe = loaded.pipe
    _check_spacing(pipe, images[0][0])
    height = config.height or pipe.unet.config.sample_size * pipe.vae_scale_factor
    width = config.width or pipe.unet.config.sample_size * pipe.vae_scale_factor
    spec = config.inversion.model_dump() if config.inversion else {"guidance_scale": 1.0, "num_inference_steps": None}
    inversion = {"guidance_scale": spec["guidance_scale"],
                 "num_inference_steps": spec["num_inference_steps"] or config.num_inference_steps}
    settings, along = config.keyframe_settings(), path.along
    latents = along["latent"] if "latent" in along else \
        torch.cat([shared_latent(pipe, s["seed"], height, width) for s in settings])
    encoder, store, records, measured = prompt_encoder(pipe, loaded.loras), FrameStore(config.output_dir), [], []
    started = time.perf_counter()
    for k, image_path, fit in images:
        picture = fitted(read_picture(image_path, config.limits.max_image_pixels, f"prompts[{k}].image"), width,
                         height, fit)
        own = settings[k]
        negative = along["negative"][k] if "negative" in along else \
            negative_tensor(encoder, config.negative_terms(own["negative_prompt"], "negative_prompt"))
        render = RenderSettings(height, width, config.num_inference_steps, own["guidance_scale"], own["seed"])
        key = digest(_decides(config, loaded, k, image_path, fit, inversion, render))
        kept = store.tensor(key)
        if kept is None:
            rows = along["loras"][k:k + 1] if "loras" in along else None
            # the keyframe's own LoRA strengths, as its frame renders with them
            with loaded.loras.rows(rows) if loaded.loras else nullcontext():
                noise = invert(pipe, picture, path.keyframes[k:k + 1], negative, render,
                               inversion["num_inference_steps"], inversion["guidance_scale"], f"prompts[{k}].image")
            frame = render_batch(pipe, path.keyframes[k:k + 1], negative, noise, render, loras=loaded.loras,
                                 lora_rows=rows).images[0].cpu().numpy()
            kept = noise, {"psnr": round(min(psnr(frame, picture), MAX_DB), 2)}
            store.put_tensor(key, *kept)
        noise, redrawn = kept
        latents = torch.cat([latents[:k], noise.to(latents), latents[k + 1:]])
        # by content: the path is the config's (in the manifest), and moving the picture moves no pixel
        records.append({"keyframe": k, "sha256": file_digest(Path(image_path)), "fit": fit, "inversion": key})
        measured.append(redrawn["psnr"])
        if redrawn["psnr"] < WARN_BELOW_DB:
            warnings.warn(f"prompts[{k}].image: its frame redraws the picture at only {redrawn['psnr']:.1f} dB PSNR "
                          f"(below {WARN_BELOW_DB:g}); lower inversion.guidance_scale and the keyframe's "
                          "guidance_scale towards 1, or use more num_inference_steps", stacklevel=2)
    along["latent"] = latents
    return ImageKeyframes(inversion, records, measured, round(time.perf_counter() - started, 3))


def _check_spacing(pipe, k: int) -> None:
    """The model's own scheduler options (which the config check cannot see) are ones DDIMInverseScheduler runs."""
    spacing = pipe.scheduler.config.get("timestep_spacing", "leading")
    if spacing not in INVERTIBLE_SPACING or pipe.scheduler.config.get("thresholding"):
        raise MorphError(f"prompts[{k}].image: the model's scheduler has timestep_spacing {spacing}"
                         f"{' and thresholding' if pipe.scheduler.config.get('thresholding') else ''}, which DDIM "
                         f"inversion cannot run; set scheduler: {{name: DDIMScheduler, timestep_spacing: leading, "
                         "thresholding: false}")


def _decides(config: JobConfig, loaded, k: int, image_path: str, fit: str, inversion: dict,
             render: RenderSettings) -> dict:
    """What decides keyframe k's inverted noise and the frame that redraws it: the picture's bytes and fit, the
    model, its scheduler, the prompt and negative (as weighted texts), the size, steps and guidances, numerics."""
    pipe, where = loaded.pipe, f"prompts[{k}]"
    return {"code": INVERSION_CODE, "image": file_digest(Path(image_path)), "fit": fit, "model": loaded.model,
            "weights": content_digest(loaded.location, loaded.revision),
            "scheduler_config": {key: v for key, v in pipe.scheduler.config.items() if not key.startswith("_")},
            "loras": [content_digest(lora.file, None) for lora in loaded.loras.loras] if loaded.loras else [],
            "lora_scales": config.keyframe_lora_scales()[k],
            "prompt": config.prompt_terms(config.keyframe_sources()[k], where),
            "negative": config.negative_terms(config.keyframe_settings()[k]["negative_prompt"], where),
            "inversion": inversion,
            "render": {"height": render.height, "width": render.width, "steps": render.num_inference_steps,
                       "guidance_scale": render.guidance_scale},
            "dtype": str(pipe.unet.dtype), "device": pipe.device.type,
            "vae": config.vae and content_digest(config.vae, config.vae),
            "embeddings": [content_digest(e, None) for e in config.embedding_paths()],
            "cpu_threads": torch.get_num_threads() if pipe.device.type == "cpu" else None}
