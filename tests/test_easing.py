"""Easing: analytic curves, and a walk whose segments move along their own easing."""

import pytest
import torch

from morph.config.yaml_file import load_config
from morph.prompts.easing import EASES, ease, eased
from morph.errors import MorphError
from morph.job import run_job

T = torch.linspace(0, 1, 101, dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(EASES))
def test_every_easing_keeps_the_keyframes_and_moves_forward(name):
    out = ease(T, name)
    assert out[0] == 0 and out[-1] == 1 and (out.diff() >= 0).all()


def test_the_easings_are_the_curves_they_name():
    t = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
    assert ease(t, "linear").tolist() == [0.25, 0.5, 0.75]
    assert ease(t, "smoothstep").tolist() == pytest.approx([0.15625, 0.5, 0.84375])
    assert ease(t, "cosine").tolist() == pytest.approx([(1 - 2**-0.5) / 2, 0.5, (1 + 2**-0.5) / 2])
    assert ease(t, "ease-in").tolist() == pytest.approx([0.0625, 0.25, 0.5625])
    assert ease(t, "ease-out").tolist() == pytest.approx([0.4375, 0.75, 0.9375])


def test_each_segment_goes_through_its_own_easing():
    segment = torch.tensor([0, 0, 0, 1, 1])
    t = torch.tensor([0.0, 0.5, 1.0, 0.5, 1.0], dtype=torch.float64)
    assert eased(segment, t, ["ease-in", "linear"]).tolist() == [0.0, 0.25, 1.0, 0.5, 1.0]


def test_a_walk_with_an_eased_segment_records_where_each_frame_sits(write_config):
    config = load_config(write_config(prompts=[{"prompt": "a cat", "ease": "ease-in"}, "a dog", "a cow"], frames=9,
                                      num_inference_steps=2))
    frames = run_job(config, quiet=True)["frames"]
    assert [f["t"] for f in frames] == pytest.approx([0, 0.0625, 0.25, 0.5625, 1, 0.25, 0.5, 0.75, 1])
    assert [f["ease"] for f in frames] == ["ease-in"] * 5 + ["linear"] * 4


@pytest.mark.parametrize("keys, message", [
    ({"ease": "cosine", "spacing": "even"}, "ease: spacing: even places frames"),
    ({"prompts": ["a", {"prompt": "b", "ease": "cosine"}]}, r"prompts\[1\].ease: the last keyframe starts no segment"),
])
def test_ease_with_what_also_places_frames_is_one_line(write_config, keys, message):
    with pytest.raises(MorphError, match=message):
        load_config(write_config(**keys))
