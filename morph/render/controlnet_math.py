"""The arithmetic of ControlNets acting per row: which steps a ControlNet acts in, its residuals scaled row by row.
Torch only."""

import torch


def scaled(residuals: list[torch.Tensor], weights: torch.Tensor) -> list[torch.Tensor]:
    """Residuals [N, C, h, w] each times its row's weight [N] (float32: each product rounded once, as diffusers'
    float scale is), in the residuals' dtype."""
    return [(r * weights.view(-1, 1, 1, 1)).to(r.dtype) for r in residuals]


def acts(step: int, steps: int, start: float, end: float) -> bool:
    """Whether a ControlNet acts at denoising step `step` of `steps`: diffusers' controlnet_keep."""
    return not (step / steps < start or (step + 1) / steps > end)
