"""Image comparison for regression renders. Imports only torch.

Images are uint8 tensors [H, W, 3] (as read from PNG); metrics are computed in float64.
"""

import math

import torch


def abs_diff(a, b):
    """Per-pixel absolute difference [H, W, 3] (float64, 0..255) of two uint8 images [H, W, 3]."""
    return (a.double() - b.double()).abs()


def psnr(a, b):
    """Peak signal-to-noise ratio in dB of two uint8 images [H, W, 3]; inf when identical."""
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _gaussian(size=11, sigma=1.5):
    """Normalised 1-D Gaussian [size] (float64)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(a, b):
    """Mean structural similarity (Wang et al. 2004; 11x11 Gaussian, sigma 1.5) of uint8 images [H, W, 3], per channel."""
    x = a.double().permute(2, 0, 1)[:, None]  # [3, 1, H, W]
    y = b.double().permute(2, 0, 1)[:, None]
    g = _gaussian(min(11, x.shape[-1], x.shape[-2]))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    # the five local statistics in one pass of the separable window (rows, then columns)
    stacked = torch.cat([x, y, x * x, y * y, x * y])
    blurred = torch.nn.functional.conv2d(torch.nn.functional.conv2d(stacked, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))
    mu_x, mu_y, xx, yy, xy = blurred.chunk(5)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(s.mean())


def heat_map(a, b, gain=8.0):
    """Amplified difference of uint8 images [H, W, 3] as a uint8 heat map [H, W, 3]: black, red, yellow, white."""
    d = (abs_diff(a, b).amax(dim=-1) * gain / 255).clamp(0, 1)  # [H, W]
    r = (d * 3).clamp(0, 1)
    g = (d * 3 - 1).clamp(0, 1)
    bl = (d * 3 - 2).clamp(0, 1)
    return (torch.stack([r, g, bl], dim=-1) * 255).round().to(torch.uint8)


def compare(a, b):
    """All the figures for one frame pair: max and mean abs diff (0..255), PSNR (dB), SSIM."""
    d = abs_diff(a, b)
    return {"max_abs_diff": int(d.max()), "mean_abs_diff": float(d.mean()), "psnr": psnr(a, b), "ssim": ssim(a, b)}
