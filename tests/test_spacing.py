"""Even spacing's math, with analytic answers: picking frames among samples, splitting gaps, sharing steps."""

import math

import pytest
import torch

from morph.analysis.spacing import (MIN_GAP, crossing, cumulative, gaps_to_split, growth, interpolate, marks, pick_steps,
                           share_steps, step_cost)


def additive_steps(c, window):
    """change [S, W] of steps from sample j - w - 1 to j along a path whose cumulative change is c [S]."""
    change = torch.full((c.numel(), window), math.inf, dtype=torch.float64)
    for j in range(c.numel()):
        for w in range(min(window, j)):
            change[j, w] = c[j] - c[j - w - 1]
    return change


def test_picked_frames_sit_at_equal_steps_of_a_known_cumulative_change():
    t = torch.linspace(0, 1, 401, dtype=torch.float64)
    c = t**2  # the picture changes faster and faster: frames must crowd towards t = 1
    steps = 8
    picked = pick_steps(step_cost(additive_steps(c, 200), 1 / steps), steps)
    assert picked[0] == 0 and picked[-1] == 400 and bool((picked[1:] > picked[:-1]).all())
    expected = torch.sqrt(torch.arange(steps + 1, dtype=torch.float64) / steps)  # where c = k / steps
    assert torch.allclose(t[picked], expected, atol=1 / 400)


def test_uniform_change_keeps_uniform_samples():
    c = torch.arange(11, dtype=torch.float64)
    assert pick_steps(step_cost(additive_steps(c, 4), 1.0), 10).tolist() == list(range(11))
    assert pick_steps(step_cost(additive_steps(c, 4), 2.0), 5).tolist() == [0, 2, 4, 6, 8, 10]


def test_forbidden_steps_are_never_taken_and_impossible_requests_say_so():
    c = torch.arange(7, dtype=torch.float64)
    cost = step_cost(additive_steps(c, 3), 2.0)
    cost[4, :] = math.inf  # no step may end at sample 4
    picked = pick_steps(cost, 3).tolist()
    assert 4 not in picked and picked[0] == 0 and picked[-1] == 6
    with pytest.raises(ValueError, match="cannot give"):
        pick_steps(cost, 7)
    with pytest.raises(ValueError, match="no 2 allowed steps"):
        pick_steps(step_cost(additive_steps(c, 2), 1.0), 2)  # steps of at most 2 samples cannot span 6


def test_gaps_above_the_step_split_biggest_first_and_narrow_ones_are_discontinuities():
    t = [0.0, 0.25, 0.5, 0.5 + MIN_GAP / 2, 1.0]
    d = [0.1, 0.3, 0.9, 0.2]
    split, narrow = gaps_to_split(t, d, step=0.15)
    assert split.tolist() == [1, 3] and narrow.tolist() == [2]
    split, narrow = gaps_to_split(t, d, step=1.0)
    assert split.numel() == 0 and narrow.numel() == 0


def test_steps_follow_change_within_caps():
    steps = share_steps([1.0, 0.0, 3.0], 10, [9, 9, 9])
    assert steps.tolist() == [3, 1, 6] and int(steps.sum()) == 10  # one each, then 7 shared 1 : 0 : 3
    capped = share_steps([1.0, 0.0, 30.0], 10, [9, 9, 5])
    assert capped.tolist()[2] == 5 and int(capped.sum()) == 10 and min(capped.tolist()) >= 1
    assert share_steps([0.0, 0.0], 5, [9, 9]).tolist() in ([3, 2], [2, 3])
    with pytest.raises(ValueError):
        share_steps([1.0, 1.0], 10, [3, 3])


def test_steps_reaching_into_a_gap_are_found():
    positions = [0.0, 0.4, 0.6, 1.0]
    assert crossing(positions, 0.45, 0.46).tolist() == [False, True, False]
    assert crossing(positions, 0.4, 0.6).tolist() == [False, True, False]
    # a frame inside the gap: the jump is in one of the two steps either side of it, so both reach into it
    assert crossing(positions, 0.5, 0.7).tolist() == [False, True, True]
    assert crossing(positions, 0.6, 0.61).tolist() == [False, False, True]  # not the step ending where it starts


def test_steps_can_aim_at_different_changes():
    c = torch.arange(13, dtype=torch.float64)  # one unit of change per sample
    targets = [1.0, 1.0, 8.0, 1.0, 1.0]  # a beat in the middle: one big step
    picked = pick_steps(lambda k: step_cost(additive_steps(c, 10), targets[k - 1]), 5)
    assert torch.diff(picked).tolist() == [1, 1, 8, 1, 1]


def test_shares_of_music_placed_frames_sum_to_one_per_segment():
    from morph.analysis.spacing import shares_of

    t = [0.0, 0.1, 0.5, 1.0, 0.25, 1.0]  # segments of 3 and 2 steps
    shares = shares_of(t, [3, 2])
    assert [s.tolist() for s in shares] == [pytest.approx([0.1, 0.4, 0.5]), pytest.approx([0.25, 0.75])]


def test_marks_sit_at_equal_steps_of_the_cumulative_change():
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    c = t**2
    placed = marks(t, torch.diff(c), [], 4)
    assert torch.allclose(placed, torch.sqrt(torch.arange(5, dtype=torch.float64) / 4), atol=1e-3)
    # a music-timed walk: the last step holds half the change
    even = torch.full((10,), 0.1, dtype=torch.float64)
    assert torch.allclose(marks(torch.linspace(0, 1, 11, dtype=torch.float64), even, [], 3, shares=[0.25, 0.25, 0.5]),
                          torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64))


def test_a_discontinuity_is_a_step_of_its_own_and_the_rest_is_shared_by_change():
    position = [0.0, 0.2, 0.4, 0.5, 0.5 + MIN_GAP / 2, 0.7, 1.0]
    change = [0.1, 0.1, 0.1, 5.0, 0.2, 0.4]  # 0.3 before the jump, 0.6 after: 2 and 3 of the 5 other steps
    placed = marks(position, change, [3], 6)
    assert placed.tolist() == pytest.approx([0.0, 0.3, 0.5, 0.5 + MIN_GAP / 2, 0.7, 0.85, 1.0])
    # one step cannot keep the jump apart: the ends only
    assert marks(position, change, [3], 1).tolist() == [0.0, 1.0]


def test_growth_is_the_exponent_at_which_halves_add_up():
    assert growth(2.0, [1.0, 1.0]) == 1.0  # change adds up: linear in distance
    assert growth(2**1.5, [1.0, 1.0]) == pytest.approx(1.5)  # change ~ distance ** 1.5
    assert growth(3.0**2, [1.0, 4.0]) == pytest.approx(2.0)  # unequal halves: 1 + 2 = 3
    assert growth(1.5, [1.0, 1.0]) == 1.0 and growth(100.0, [1.0, 1.0]) == 3.0  # clamped to [1, 3]


def test_interpolation_is_piecewise_linear_and_flat_past_the_ends():
    xp, fp = [0.0, 1.0, 1.0, 3.0], [0.0, 2.0, 2.0, 3.0]  # a repeated sample
    assert interpolate([-1.0, 0.5, 1.0, 2.0, 5.0], xp, fp).tolist() == [0.0, 1.0, 2.0, 2.5, 3.0]
    assert cumulative([1.0, 2.0]).tolist() == [0.0, 1.0, 3.0]
