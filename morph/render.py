"""Frames from conditionings: one shared starting latent, batches through the diffusers pipeline."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class RenderSettings:
    height: int
    width: int
    num_inference_steps: int
    guidance_scale: float
    seed: int


def shared_latent(pipe, seed: int, height: int, width: int) -> torch.Tensor:
    """The starting noise every frame shares: [1, C, H/8, W/8] float32, drawn on the CPU.

    Drawing on a CPU generator (as diffusers' randn_tensor does) gives the same noise on any device.
    """
    shape = (1, pipe.unet.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)


def render_batch(pipe, conds: torch.Tensor, negative: torch.Tensor, latent: torch.Tensor,
                 settings: RenderSettings) -> tuple[np.ndarray, list[bool]]:
    """Images [B, H, W, 3] float32 in 0..1 for conditionings [B, L, D], and the NSFW flag of each."""
    batch = conds.shape[0]
    device, dtype = pipe.device, pipe.unet.dtype
    output = pipe(
        prompt_embeds=conds.to(device, dtype),
        negative_prompt_embeds=negative.expand(batch, -1, -1).to(device, dtype),
        latents=latent.expand(batch, -1, -1, -1).to(device, dtype),
        # One generator per frame, all on the same seed: schedulers that add noise while sampling
        # give every frame the same noise, whatever batch the frame falls in.
        generator=[torch.Generator("cpu").manual_seed(settings.seed) for _ in range(batch)],
        height=settings.height,
        width=settings.width,
        num_inference_steps=settings.num_inference_steps,
        guidance_scale=settings.guidance_scale,
        output_type="np",
    )
    flags = output.nsfw_content_detected or [False] * batch
    return np.asarray(output.images, dtype=np.float32), [bool(f) for f in flags]


def render_frames(pipe, conditionings_for: Callable[[list[int]], torch.Tensor], indices: list[int],
                  negative: torch.Tensor, latent: torch.Tensor, settings: RenderSettings,
                  batch_size: int) -> Iterator[tuple[int, np.ndarray, bool]]:
    """Yield (frame index, image [H, W, 3] float32, NSFW flag) in order, `batch_size` frames per pipeline call."""
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        images, flags = render_batch(pipe, conditionings_for(chunk), negative, latent, settings)
        yield from zip(chunk, images, flags)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[H, W, 3] float in 0..1 -> uint8, rounded as diffusers' numpy_to_pil does."""
    return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
