import pytest
import torch

from morph.config.jobs import segment_steps
from morph.prompts.path import WalkPath, frame_schedule


@pytest.mark.parametrize("frames, keyframes, expected", [
    (400, 2, [399]),
    (10, 4, [3, 3, 3]),
    (11, 4, [4, 3, 3]),
    ([100, 300], 3, [100, 300]),
])
def test_segment_steps(frames, keyframes, expected):
    assert segment_steps(frames, keyframes) == expected


def test_a_total_gives_exactly_that_many_frames():
    for total in (2, 3, 61, 400):
        for keyframes in range(2, min(total, 6) + 1):
            segment, t = frame_schedule(segment_steps(total, keyframes))
            assert len(t) == total


def test_keyframes_land_on_frames_without_duplicates():
    segment, t = frame_schedule([2, 3])  # 6 frames
    assert segment.tolist() == [0, 0, 0, 1, 1, 1]
    assert t.tolist() == pytest.approx([0, 0.5, 1, 1 / 3, 2 / 3, 1])


@pytest.mark.parametrize("interpolation", ["lerp", "slerp"])
def test_walk_hits_every_keyframe_exactly(interpolation):
    keyframes = torch.randn(3, 77, 8, generator=torch.Generator().manual_seed(0))
    path = WalkPath(keyframes, [4, 5], interpolation)
    assert len(path) == 10
    frames = path.conditionings(list(range(10)))
    assert torch.equal(frames[0], keyframes[0])
    assert torch.equal(frames[4], keyframes[1])
    assert torch.equal(frames[9], keyframes[2])
    # no frame repeats: segments join without a duplicated frame
    assert all(not torch.equal(frames[i], frames[i + 1]) for i in range(9))
    assert path.describe(5) == {"index": 5, "segment": 1, "t": pytest.approx(0.2), "file": "00005.png"}


def test_grid_cells_are_computed_on_the_device_of_the_prompts():
    """A meta tensor mixed with a CPU one raises as a CUDA one would: the rows' t must move to the prompts' device."""
    from morph.prompts.path import GridPath, linspace

    start, end, add = (torch.zeros(3, 4, device="meta") for _ in range(3))
    grid = GridPath(start, end, add, linspace(0, 1, 3), linspace(0, 2, 2), "slerp")
    assert grid.conditionings([0, 3, 5]).device.type == "meta"
    grid.interpolation = "lerp"
    assert grid.conditionings([1, 2]).shape == (2, 3, 4)
