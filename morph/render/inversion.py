"""DDIM inversion: a picture -> the starting noise from which the pipeline's DDIM sampling redraws it.

The stock pipeline runs the loop both ways: with diffusers' DDIMInverseScheduler in place of its DDIMScheduler,
the same call walks the timesteps upwards, from the picture's latent to noise (as the pix2pix-zero and DiffEdit
pipelines invert), so every model family the pipeline renders is inverted by the code that renders it.
"""

from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import torch

from ..errors import MorphError
from ..models.family import vae_decodes_in_float32
from .batch import RenderSettings, _denoise, on_device


def encode(pipe, image: np.ndarray) -> torch.Tensor:
    """A uint8 picture [H, W, 3] -> its latent [1, C, H/8, W/8] float32: the mean of the VAE's posterior (no
    sampling), scaled as batch.decode unscales it; in float32 where the family's VAE overflows in float16 (SDXL)."""
    vae = pipe.vae
    upcast = vae_decodes_in_float32(pipe)
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 127.5 - 1
    if upcast:
        vae.to(torch.float32)
    try:
        latent = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mean.float()
    finally:
        if upcast:
            vae.to(torch.float16)
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if mean is not None and std is not None:
        shape = (1, -1, 1, 1)
        return (latent - torch.tensor(mean).view(shape).to(latent)) * vae.config.scaling_factor / \
            torch.tensor(std).view(shape).to(latent)
    return latent * vae.config.scaling_factor


@contextmanager
def inverse_scheduler(pipe):
    """The pipeline with DDIMInverseScheduler made from its DDIMScheduler's config, for the duration."""
    from diffusers import DDIMInverseScheduler

    forward = pipe.scheduler
    pipe.scheduler = DDIMInverseScheduler.from_config(forward.config)
    try:
        yield pipe
    finally:
        pipe.scheduler = forward


@torch.no_grad()
def invert(pipe, image: np.ndarray, conds: torch.Tensor, negative: torch.Tensor, settings: RenderSettings,
           steps: int, guidance_scale: float, where: str) -> torch.Tensor:
    """The noise [1, C, h, w] float32 that DDIM sampling with conditioning conds [1, L, D] over `steps` steps turns
    back into the picture [H, W, 3] (negative [L, D] only matters at guidance_scale above 1); a one-line MorphError
    (naming `where`) where it is not finite."""
    latent = encode(pipe, image)
    with inverse_scheduler(pipe):
        noise = _denoise(pipe, conds, negative, on_device(pipe, latent), replace(settings, num_inference_steps=steps),
                         guidance_scale).float().cpu()
    if not torch.isfinite(noise).all():
        raise MorphError(f"{where}: DDIM inversion of the picture gave non-finite noise (NaN or inf: the model "
                         f"overflowed in {pipe.unet.dtype}); run with dtype: float32")
    return noise


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 pictures [H, W, 3] (analysis.metrics' formula, which sits
    downstream of rendering); inf when identical."""
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * float(np.log10(255.0**2 / mse))
