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


def ssim_stats(a):
    """What SSIM needs of one uint8 image [H, W, 3], computed once however many images it is compared with: the image
    as float64 [3, 1, H, W] and its local means and means of squares [6, 1, h, w] (11x11 Gaussian, sigma 1.5)."""
    x = a.double().permute(2, 0, 1)[:, None]
    return x, _blurred(torch.cat([x, x * x]))


def _blurred(stacked):
    """[N, 1, H, W] float64 -> [N, 1, h, w]: the separable Gaussian window, rows then columns (valid positions)."""
    g = _gaussian(min(11, stacked.shape[-1], stacked.shape[-2]))
    return torch.nn.functional.conv2d(torch.nn.functional.conv2d(stacked, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))


def ssim_of_stats(sx, sy):
    """Mean SSIM of two images given as ssim_stats: only their product's local means are new."""
    (x, blurred_x), (y, blurred_y) = sx, sy
    (mu_x, xx), (mu_y, yy) = blurred_x.chunk(2), blurred_y.chunk(2)
    xy = _blurred(x * y)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(s.mean())


def ssim(a, b):
    """Mean structural similarity (Wang et al. 2004; 11x11 Gaussian, sigma 1.5) of uint8 images [H, W, 3], per channel."""
    return ssim_of_stats(ssim_stats(a), ssim_stats(b))


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
