"""The starting latent: the noise every frame of a walk shares (a seed walk slerps between keyframes' own)."""

import torch


def shared_latent(pipe, seed: int, height: int, width: int) -> torch.Tensor:
    """The starting noise every frame shares: [1, C, H/8, W/8] float32, drawn on the CPU.

    Drawing on a CPU generator (as diffusers' randn_tensor does) gives the same noise on any device.
    """
    shape = (1, pipe.unet.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)
