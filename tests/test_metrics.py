import math

import pytest
import torch

from morph.analysis.metrics import compare, heat_map, psnr, ssim


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
