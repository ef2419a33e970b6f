"""Easing: where a frame sits within its segment, as a map of its uniform t. Imports only torch."""

import math

import torch

EASES = {
    "linear": lambda t: t,
    "smoothstep": lambda t: t * t * (3 - 2 * t),  # slow at both keyframes
    "cosine": lambda t: (1 - torch.cos(math.pi * t)) / 2,  # slow at both keyframes, sine-shaped
    "ease-in": lambda t: t * t,  # slow leaving the keyframe, fast arriving
    "ease-out": lambda t: 1 - (1 - t) * (1 - t),  # fast leaving, slow arriving
}


def ease(t, name):
    """t [F] in 0..1 (float64) through the easing `name`: [F], 0 and 1 kept exactly, monotone between."""
    out = EASES[name](t.double())
    return torch.where(t == 0, t.double(), torch.where(t == 1, t.double(), out))


def eased(segment, t, names):
    """t [F] of frames in segments [F] (long), each segment's t through its easing names[segment]: [F] float64."""
    out = t.double().clone()
    for s, name in enumerate(names):
        here = segment == s
        out[here] = ease(t[here], name)
    return out
