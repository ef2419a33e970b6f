import math

import pytest
import torch

from morph.prompts.ops import add_scaled, lerp, slerp, weighted_sum


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("fn", [lerp, slerp])
def test_endpoints_are_exact(fn):
    a, b = rand(1, 77, 16, seed=1), rand(1, 77, 16, seed=2)
    assert torch.equal(fn(a, b, torch.tensor([0.0])), a)
    assert torch.equal(fn(a, b, torch.tensor([1.0])), b)


def test_lerp_midpoint():
    a, b = torch.zeros(1, 2, 3), torch.full((1, 2, 3), 4.0)
    assert torch.equal(lerp(a, b, torch.tensor([0.25])), torch.full((1, 2, 3), 1.0))


def test_slerp_of_orthogonal_unit_rows_stays_on_the_circle():
    a = torch.tensor([[[1.0, 0.0]]])
    b = torch.tensor([[[0.0, 1.0]]])
    mid = slerp(a, b, torch.tensor([0.5]))
    assert torch.allclose(mid, torch.tensor([[[math.sqrt(0.5), math.sqrt(0.5)]]]))
    third = slerp(a, b, torch.tensor([1 / 3]))
    assert torch.allclose(third, torch.tensor([[[math.cos(math.pi / 6), math.sin(math.pi / 6)]]]))


def test_slerp_interpolates_row_length_linearly():
    a = torch.tensor([[[2.0, 0.0]]])
    b = torch.tensor([[[0.0, 6.0]]])
    t = torch.tensor([0.25])
    assert torch.allclose(slerp(a, b, t).norm(dim=-1), torch.tensor([[3.0]]))


def test_slerp_row_norms_stay_between_the_endpoints():
    a, b = rand(1, 77, 32, seed=3) * 3, rand(1, 77, 32, seed=4)
    t = torch.linspace(0, 1, 11)
    out = slerp(a.expand(11, -1, -1), b.expand(11, -1, -1), t)
    low = torch.minimum(a.norm(dim=-1), b.norm(dim=-1)) - 1e-5
    high = torch.maximum(a.norm(dim=-1), b.norm(dim=-1)) + 1e-5
    norms = out.norm(dim=-1)
    assert ((norms >= low) & (norms <= high)).all()


def test_slerp_handles_parallel_identical_and_zero_rows():
    a = torch.tensor([[[1.0, 2.0], [0.0, 0.0], [3.0, 3.0]]])
    b = torch.tensor([[[2.0, 4.0], [1.0, 1.0], [3.0, 3.0]]])
    out = slerp(a, b, torch.tensor([0.5]))
    assert torch.isfinite(out).all()
    assert torch.allclose(out[0, 0], torch.tensor([1.5, 3.0]))  # parallel: same as lerp
    assert torch.allclose(out[0, 1], torch.tensor([0.5, 0.5]))  # from zero: lerp
    assert torch.equal(out[0, 2], a[0, 2])  # identical rows stay bit-identical


def test_slerp_keeps_dtype_and_is_computed_in_float64():
    a, b = rand(1, 4, 8, seed=5).half(), rand(1, 4, 8, seed=6).half()
    out = slerp(a, b, torch.tensor([0.3]))
    assert out.dtype == torch.float16
    expected = slerp(a.double(), b.double(), torch.tensor([0.3])).half()
    assert torch.equal(out, expected)


def test_weighted_sum_matches_hand_arithmetic():
    cat, tabby = rand(77, 8, seed=7), rand(77, 8, seed=8)
    assert torch.allclose(weighted_sum([cat, tabby], [1.0, 3 / 7]), cat + 3 / 7 * tabby, atol=1e-6)


def test_add_scaled():
    base, direction = rand(2, 3, 4, seed=11), rand(3, 4, seed=12)
    out = add_scaled(base, direction, torch.tensor([-0.5, 2.0]))
    assert torch.allclose(out[0], base[0] - 0.5 * direction) and torch.allclose(out[1], base[1] + 2 * direction)


def test_slerp_of_opposite_rows_keeps_the_length_rule_on_a_deterministic_circle():
    a = torch.tensor([[[3.0, 0.0, 0.0]]])
    b = torch.tensor([[[-1.0, 0.0, 0.0]]])
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    out = slerp(a.expand(4, -1, -1), b.expand(4, -1, -1), t)
    assert torch.allclose(out.norm(dim=-1).flatten(), torch.tensor([3.0, 2.5, 2.0, 1.0]))  # length linear
    assert torch.allclose(out[2, 0], torch.tensor([0.0, 2.0, 0.0]), atol=1e-6)  # a quarter turn at t = 1/2
    assert torch.equal(out[0], a[0]) and torch.equal(out[3], b[0])
    assert torch.equal(out, slerp(a.expand(4, -1, -1), b.expand(4, -1, -1), t))  # same circle every time


@pytest.mark.parametrize("norm", [1e-31, 1e-40, 0.0])
def test_slerp_from_a_row_with_a_tiny_norm_is_the_lerp_path(norm):
    a = torch.tensor([[[norm, 0.0]]], dtype=torch.float64)
    b = torch.tensor([[[0.0, 2.0]]], dtype=torch.float64)
    t = torch.tensor([0.5])
    assert torch.allclose(slerp(a, b, t), lerp(a, b, t), rtol=0, atol=1e-12)
