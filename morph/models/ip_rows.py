"""Per-row tensors of an IP-Adapter batch. Imports only torch.

A UNet batch under classifier-free guidance is [unconditional rows, conditional rows] (2B); without it, B rows.
"""

import torch


def guided_rows(unconditional: torch.Tensor, conditional: torch.Tensor, guided: bool) -> torch.Tensor:
    """The UNet's rows of per-frame values [B, ...]: [unconditional; conditional] [2B, ...] under guidance, else
    the conditional ones [B, ...]."""
    return torch.cat([unconditional, conditional]) if guided else conditional


def scaled_rows(values: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Values [R, ...] (an IP-Adapter's [R, images, tokens, C]) times each row's scale [R], in the values' dtype:
    [R, ...]; 0 gives exact zeros."""
    if scale.shape != values.shape[:1]:
        raise ValueError(f"scaled_rows: {values.shape[0]} rows of values and {tuple(scale.shape)} scales; a batch's "
                         "rows must each have their own scale")
    return values * scale.to(values.dtype).view(-1, *([1] * (values.dim() - 1)))
