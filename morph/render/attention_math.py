"""Attention interpolation between two keyframes (AID, He et al. 2024, arXiv 2403.17924), as pure tensor math.
Imports only torch.

Shapes: queries q [B, H, N, d]; keys and values [B, H, M, d] (each frame's row of a keyframe's); t [B], a frame's
position between its keyframes a (t = 0) and b (t = 1).
"""

import torch
import torch.nn.functional as F


def attend(q, k, v):
    """softmax(q k^T / sqrt(d)) v: q [B, H, N, d], k, v [B, H, M, d] -> [B, H, N, d]."""
    return F.scaled_dot_product_attention(q, k, v)


def _per_row(t, like):
    """t [B] -> [B, 1, 1, 1] in the dtype and on the device of `like`."""
    return t.to(like.device, like.dtype).view(-1, *([1] * (like.dim() - 1)))


def lerp(a, b, t):
    """a + t (b - a) per row: a, b [B, ...], t [B]; exactly a at t = 0 and b at t = 1 (torch.lerp)."""
    return torch.lerp(a, b, _per_row(t, a))


def fused(own, other):
    """Keys (or values) own [B, H, M, d] beside other [B, H, M', d] -> [B, H, M + M', d]."""
    return torch.cat([own, other], dim=2)


def inner(q, ka, va, kb, vb, t, own=None):
    """One attention over the keyframes' keys and values interpolated by t -> [B, H, N, d]. `own` (k, v): the
    frame's own, kept beside them (fused self-attention)."""
    k, v = lerp(ka, kb, t), lerp(va, vb, t)
    if own is not None:
        k, v = fused(own[0], k), fused(own[1], v)
    return attend(q, k, v)


def outer(q, ka, va, kb, vb, t, own=None):
    """The attentions to keyframe a and to keyframe b, blended by t -> [B, H, N, d]. `own` (k, v): the frame's own,
    kept beside each keyframe's (fused self-attention)."""
    if own is not None:
        ka, va, kb, vb = fused(own[0], ka), fused(own[1], va), fused(own[0], kb), fused(own[1], vb)
    return lerp(attend(q, ka, va), attend(q, kb, vb), t)
