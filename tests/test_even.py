"""spacing: even on the toy model, whose square -> triangle walk has a fast flip and a true discontinuity."""

import json

import imageio_ffmpeg
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import tiny_job
from morph.cli import cli
from morph.config import load_config
from morph.errors import MorphError
from morph.job import run_job
from morph.video import read_png

FRAMES = 30
EXTRA = 20  # enough for the bisection to narrow the discontinuity below 1e-4


def toy_walk(folder, spacing):
    return load_config(tiny_job(folder, "walk", model="toy", prompts=["a blue square", "a green triangle"],
                                frames=FRAMES, seed=3, height=None, width=None, num_inference_steps=25,
                                guidance_scale=5.0, batch_size=8, spacing=spacing, output=str(folder / "out")))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The uniform walk, then the even walk into the same output (its first pass is the uniform walk), then
    the even walk again; and the store's size after the even walk."""
    folder = tmp_path_factory.mktemp("even")
    uniform = run_job(toy_walk(folder, "uniform"), quiet=True)
    uniform_frames = {r["index"]: read_png(folder / "out" / "frames" / r["file"]) for r in uniform["frames"]}
    even_config = toy_walk(folder, {"mode": "even", "max_extra_renders": EXTRA})
    even = run_job(even_config, quiet=True)
    stored = len(list((folder / "out" / ".store").glob("*.png")))
    again = run_job(even_config, quiet=True)
    return folder / "out", uniform, uniform_frames, even, stored, again


def test_even_keeps_exactly_n_real_frames_in_increasing_t(runs):
    out, _, _, even, _, _ = runs
    t = [r["t"] for r in even["frames"]]
    assert len(t) == FRAMES and t[0] == 0.0 and t[-1] == 1.0 and all(a < b for a, b in zip(t, t[1:]))
    assert sorted(p.name for p in (out / "frames").glob("*.png")) == [f"{i:05d}.png" for i in range(FRAMES)]
    assert imageio_ffmpeg.count_frames_and_secs(str(out / "walk.mp4")) == (FRAMES, FRAMES / 20)
    assert even["video_frames"] == FRAMES


def test_the_uniform_frames_are_reused_and_no_sample_renders_twice(runs):
    out, uniform, uniform_frames, even, stored, again = runs
    spacing = even["spacing"]
    assert uniform["rendered"] == FRAMES
    assert 0 < spacing["extra_renders"] <= EXTRA
    assert even["rendered"] == spacing["extra_renders"]  # the first pass came from the store
    assert stored == FRAMES + spacing["extra_renders"]  # every sample is in the store once
    assert again["rendered"] == 0 and again["frames"] == even["frames"]
    # the even video's frames are renders that exist: the keyframes' are the uniform walk's, bit for bit
    for i in (0, FRAMES - 1):
        assert np.array_equal(read_png(out / "frames" / f"{i:05d}.png"), uniform_frames[i])
    uniform_t = {r["t"] for r in uniform["frames"]}
    assert sum(r["t"] in uniform_t for r in even["frames"]) == even["reused"]


def test_even_spreads_the_change_and_reports_the_discontinuity(runs):
    out, uniform, _, even, _, _ = runs
    spacing = even["spacing"]
    before, after = spacing["uniform"], spacing["even"]
    assert before["distances"] == pytest.approx(uniform["analysis"]["distances"])
    assert after["summary"] == even["analysis"]["summary"]
    assert after["summary"]["smoothness"] > before["summary"]["smoothness"]
    assert after["summary"]["max_over_median"] < before["summary"]["max_over_median"]
    # the triangle's jump does not shrink however close the samples: one step of the video, and reported
    [jump] = spacing["discontinuities"]
    assert jump["to_t"] - jump["from_t"] <= 1e-4 and jump["change"] > 10 * before["summary"]["median"]
    assert after["steps_across_discontinuities"] == 1
    calm_before, calm_after = before["summary_without_discontinuities"], after["summary_without_discontinuities"]
    assert calm_after["smoothness"] > calm_before["smoothness"] + 0.1
    assert calm_after["max_over_median"] * 3 < calm_before["max_over_median"]
    page = (out / "report.html").read_text()
    assert "Even spacing" in page and "no spacing can spread them" in page


def test_morph_analyze_keeps_the_uniform_curve_of_an_even_walk(runs):
    out = runs[0]
    result = CliRunner().invoke(cli, ["analyze", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["spacing"]["spacing"] == "even" and (out / "storm.png").stat().st_size > 10_000


def test_a_global_budget_moves_frames_to_the_segment_that_changes_most(tmp_path):
    # tiny model, three keyframes; the keyframes still land on frames
    config = load_config(tiny_job(tmp_path, prompts=["a cat", "a cat", "a drawing of a dog in kyoto"], frames=13,
                                  spacing={"mode": "even", "budget": "walk", "max_extra_renders": 6}))
    manifest = run_job(config, quiet=True)
    frames = manifest["frames"]
    keyframes = [0] + [i for i, r in enumerate(frames) if r["t"] == 1.0]
    assert len(frames) == 13 and len(keyframes) == 3 and keyframes[-1] == 12
    assert keyframes[1] < 6  # segment 0 walks from a prompt to itself: no change, so it keeps few frames


def test_even_spacing_refuses_a_frame_selection_before_loading_a_model(tmp_path):
    config = load_config(tiny_job(tmp_path, model="no/such-model", spacing="even"))
    with pytest.raises(MorphError, match="spacing: even places every frame"):
        run_job(config, frames="0-2", quiet=True)


def test_spacing_accepts_a_word_or_a_mapping_and_rejects_others(tmp_path):
    assert load_config(tiny_job(tmp_path, spacing="even")).spacing.mode == "even"
    assert load_config(tiny_job(tmp_path, spacing={"mode": "even", "budget": "walk"})).spacing.budget == "walk"
    result = CliRunner().invoke(cli, ["run", str(tiny_job(tmp_path, spacing="smooth")), "--quiet"])
    assert result.exit_code == 2 and "spacing" in result.output and len(result.output.strip().splitlines()) == 1
