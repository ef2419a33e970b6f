"""How violently a walk changes from frame to frame: distances, smoothness, storm zones, blinks. Imports only torch
and the standard library.

Frames are uint8 tensors [H, W, 3]; a walk of N frames has N - 1 neighbour distances d [N - 1]
(d[i] between frames i and i + 1) and N - 2 skip distances s [N - 2] (s[i] between i and i + 2).
"""

from collections.abc import Callable
from typing import NamedTuple

import torch

from .metrics import ssim_of_stats, ssim_stats

ANALYSIS_SIZE = 128  # frames are compared at most this large: cheap, and what the eye sees as change


def downscale(frame, size=ANALYSIS_SIZE):
    """uint8 [H, W, 3] -> uint8 [h, w, 3] with max(h, w) <= size, by area averaging."""
    height, width = frame.shape[:2]
    scale = size / max(height, width)
    if scale >= 1:
        return frame
    channels = frame.permute(2, 0, 1)
    factor, rest = divmod(max(height, width), size)
    if rest == 0 and height % factor == 0 and width % factor == 0:
        # whole blocks (512 px -> 128): their mean, 10x faster than interpolate's and the same pixels. float32 holds
        # a block's sum exactly, and its mean is either exact or at least 1 / (2 factor^2) from a rounding tie
        small = torch.nn.functional.avg_pool2d(channels.float(), factor)
    else:
        small = torch.nn.functional.interpolate(channels[None].double(), scale_factor=scale, mode="area")[0]
    return small.permute(1, 2, 0).round().to(torch.uint8)


class Distance(NamedTuple):
    """A change between frames in two parts, so that a walk prepares each frame once however many frames it is
    compared with: `prepare(frame)` of a uint8 frame [H, W, 3], `between(p, q)` of two prepared frames -> float."""

    prepare: Callable
    between: Callable

    def __call__(self, a, b) -> float:
        return self.between(self.prepare(a), self.prepare(b))


def _mean_absolute(a, b) -> float:
    """Mean absolute difference of two float64 frames [h, w, 3] of 0..255, in 0..1."""
    return float((a - b).abs().mean() / 255)


def _one_minus_ssim(a, b) -> float:
    """1 - SSIM of two frames' ssim_stats: 0 for identical frames."""
    return 1.0 - ssim_of_stats(a, b)


pixel_distance = Distance(torch.Tensor.double, _mean_absolute)  # of uint8 frames [H, W, 3], in 0..1
ssim_distance = Distance(ssim_stats, _one_minus_ssim)  # 1 - SSIM of uint8 frames [H, W, 3]

DISTANCES = {"pixel": pixel_distance, "ssim": ssim_distance}


def gini(d):
    """Gini coefficient of non-negative values d [n]: 0 when all are equal, towards 1 when one holds everything."""
    d = torch.sort(d.double()).values
    n, total = d.numel(), d.sum()
    if n == 0 or total == 0:
        return 0.0
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    return float((2 * (ranks * d).sum()) / (n * total) - (n + 1) / n)


def summarize(d):
    """Figures of neighbour distances d [n]: mean, median, max, max/median, smoothness, worst-10 % share."""
    d = d.double()
    median = float(d.median())
    worst = max(1, round(0.1 * d.numel()))
    total = float(d.sum())
    return {
        "mean": float(d.mean()), "median": median, "max": float(d.max()),
        "max_over_median": float(d.max()) / median if median > 0 else None,
        "smoothness": 1.0 - gini(d),
        "worst_10_percent_share": float(torch.topk(d, worst).values.sum()) / total if total > 0 else 0.0,
    }


def storm_zones(d, threshold):
    """Maximal runs of steps with d [n] > threshold, as (first step, last step) pairs; step i joins frames i, i + 1."""
    zones, start = [], None
    for i, over in enumerate((d > threshold).tolist()):
        if over and start is None:
            start = i
        if not over and start is not None:
            zones.append((start, i - 1))
            start = None
    if start is not None:
        zones.append((start, d.numel() - 1))
    return zones


def blinks(d, s, threshold, ratio=0.5):
    """Frames i that jump away and back: d[i-1] and d[i] above threshold, s[i-1] (frames i-1 to i+1) below
    `ratio` times the smaller of them. d [n], s [n - 1] -> frame indices."""
    found = []
    for i in range(1, d.numel()):
        smaller = min(float(d[i - 1]), float(d[i]))
        if smaller > threshold and float(s[i - 1]) < ratio * smaller:
            found.append(i)
    return found
