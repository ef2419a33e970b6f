import math

import pytest
import torch

from morph.analysis.metrics import compare, heat_map, psnr, ssim, ssim_of_stats, ssim_stats


def image(seed, shape=(32, 32, 3)):
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_identical_images():
    a = image(0)
    assert compare(a, a) == {"max_abs_diff": 0, "mean_abs_diff": 0.0, "psnr": math.inf, "ssim": pytest.approx(1.0)}


def test_psnr_of_a_uniform_offset():
    a = torch.full((8, 8, 3), 100, dtype=torch.uint8)
    b = a + 1  # MSE = 1 -> PSNR = 20 log10(255)
    assert psnr(a, b) == pytest.approx(20 * math.log10(255))
    assert psnr(a, a + 10) == pytest.approx(20 * math.log10(255 / 10))


def test_ssim_falls_with_noise_and_is_symmetric():
    a = image(1).double().mul(0.5).add(64).to(torch.uint8)
    small = (a.int() + torch.randint(-3, 4, a.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 255)
    small = small.to(torch.uint8)
    unrelated = image(3)
    assert 0.9 < ssim(a, small) < 1.0
    assert ssim(a, unrelated) < 0.2
    assert ssim(a, small) == pytest.approx(ssim(small, a))


def test_heat_map_marks_where_the_images_differ():
    a = torch.zeros(16, 16, 3, dtype=torch.uint8)
    b = a.clone()
    b[4:8, 10:14] = 40
    heat = heat_map(a, b)
    assert heat.shape == (16, 16, 3) and heat.dtype == torch.uint8
    assert (heat[4:8, 10:14].int().sum(-1) > 0).all()
    outside = heat.clone()
    outside[4:8, 10:14] = 0
    assert outside.max() == 0


def test_ssim_from_each_image_s_statistics_equals_the_windowed_formula():
    """SSIM from per-image statistics (each image's computed once, as the storm map does) equals Wang et al.'s
    formula evaluated directly with the full 2-D 11 x 11 Gaussian window."""
    generator = torch.Generator().manual_seed(5)
    a = torch.randint(0, 256, (24, 20, 3), dtype=torch.uint8, generator=generator)
    b = (a.int() + torch.randint(-40, 41, a.shape, generator=generator)).clamp(0, 255).to(torch.uint8)
    x = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(x**2) / (2 * 1.5**2))
    window = (g[:, None] * g[None, :]) / g.sum() ** 2
    patches = lambda img: img.double().permute(2, 0, 1).unfold(1, 11, 1).unfold(2, 11, 1)  # [3, h, w, 11, 11]
    mean = lambda p: (p * window).sum((-1, -2))  # noqa: E731
    pa, pb = patches(a), patches(b)
    mu_a, mu_b = mean(pa), mean(pb)
    var_a, var_b, cov = mean(pa * pa) - mu_a**2, mean(pb * pb) - mu_b**2, mean(pa * pb) - mu_a * mu_b
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    expected = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    assert 0.3 < float(expected.mean()) < 0.95  # a pair neither identical nor unrelated
    assert ssim(a, b) == pytest.approx(float(expected.mean()), abs=1e-12)
    kept = ssim_stats(a)  # computed once and compared twice, as the storm map does: comparing leaves it as it was
    assert ssim_of_stats(kept, ssim_stats(b)) == pytest.approx(float(expected.mean()), abs=1e-12)
    assert ssim_of_stats(kept, ssim_stats(a.flip(0))) == ssim(a, a.flip(0)) != ssim(a, b)
    assert ssim_of_stats(kept, ssim_stats(b)) == ssim(a, b)
