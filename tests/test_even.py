"""spacing: even on the toy model, whose square -> triangle walk has a fast flip and a true discontinuity."""

import json

import imageio_ffmpeg
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import tiny_job
from morph.cli import cli
from morph.config.yaml_file import load_config
from morph.errors import MorphError
from morph.job import run_job
from morph.media.video import read_png

FRAMES = 30
EXTRA = 20  # enough for the bisection to follow the discontinuity down and still place every frame


def toy_walk(folder, spacing):
    return load_config(tiny_job(folder, "walk", model="toy", prompts=["a blue square", "a green triangle"],
                                frames=FRAMES, seed=3, height=None, width=None, num_inference_steps=25,
                                guidance_scale=5.0, batch_size=8, spacing=spacing, output=str(folder / "out")))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The uniform walk, then the even walk into the same output (which finds the uniform frames there and
    measures its "before" on them), then the even walk again; and the store's size after the even walk."""
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


def test_samples_keep_to_the_budget_and_none_renders_twice(runs):
    out, uniform, uniform_frames, even, stored, again = runs
    spacing = even["spacing"]
    assert uniform["rendered"] == FRAMES
    assert spacing["renders"] == FRAMES + spacing["extra_renders"] and 0 < spacing["extra_renders"] <= EXTRA
    assert stored == FRAMES + even["rendered"]  # every render is a new file in the store
    # the first frame is the uniform walk's, found in the store: a sample that was not rendered again
    assert even["rendered"] == spacing["renders"] - 1 and even["reused"] == 1
    assert np.array_equal(read_png(out / "frames" / "00000.png"), uniform_frames[0])
    # run again, every sample is in the store: the same choices, nothing rendered
    assert again["rendered"] == 0 and again["frames"] == even["frames"] and again["reused"] == FRAMES


def test_even_spreads_the_change_and_reports_the_discontinuity(runs):
    out, uniform, _, even, _, _ = runs
    spacing = even["spacing"]
    before, after = spacing["uniform"], spacing["even"]
    assert not before["estimated"] and before["distances"] == pytest.approx(uniform["analysis"]["distances"])
    assert after["summary"] == even["analysis"]["summary"]
    assert after["summary"]["smoothness"] > before["summary"]["smoothness"]
    assert after["summary"]["max_over_median"] < before["summary"]["max_over_median"]
    assert 1 < spacing["growth"] < 3  # 1 - SSIM grows faster than distance
    # the triangle's jump keeps its change through every halving: followed down to under a quarter of a frame's step
    # in t, it is one step of the video, and reported
    [jump] = spacing["discontinuities"]
    assert jump["to_t"] - jump["from_t"] <= 1 / (4 * (FRAMES - 1)) and jump["change"] > 10 * before["summary"]["median"]
    assert after["steps_across_discontinuities"] == 1
    calm_before, calm_after = before["summary_without_discontinuities"], after["summary_without_discontinuities"]
    assert calm_after["smoothness"] > calm_before["smoothness"] + 0.1
    assert calm_after["max_over_median"] * 3 < calm_before["max_over_median"]
    page = (out / "report.html").read_text()
    assert "Even spacing" in page and "no spacing can spread them" in page and "estimated" not in page
    assert f"p = {spacing['growth']:.2f}" in page


def test_without_the_uniform_frames_the_before_is_estimated_and_says_so(runs, tmp_path):
    uniform = runs[1]
    even = run_job(toy_walk(tmp_path, {"mode": "even", "max_extra_renders": EXTRA}), quiet=True)
    before = even["spacing"]["uniform"]
    assert before["estimated"] and len(before["distances"]) == FRAMES - 1
    # the estimate finds the uniform walk's biggest step: the one across the triangle's jump
    measured = uniform["analysis"]["distances"]
    assert np.argmax(before["distances"]) == np.argmax(measured)
    assert 0.8 < np.median(np.array(before["distances"]) / np.array(measured)) < 1.25
    assert "estimated: not rendered" in (tmp_path / "out" / "report.html").read_text()


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


def test_a_walk_that_does_not_change_keeps_uniform_steps(tmp_path):
    # every frame is the same picture: no change to even out, so ties go to equal steps of t (batch_size 1: samples
    # rendered in batches of other sizes would differ by 1/255, which is change)
    config = load_config(tiny_job(tmp_path, prompts=["a cat", "a cat"], frames=5, spacing="even", batch_size=1))
    assert [r["t"] for r in run_job(config, quiet=True)["frames"]] == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_with_no_extra_renders_every_sample_is_a_frame(tmp_path):
    config = load_config(tiny_job(tmp_path, prompts=["a cat", "a dog", "a cow"], frames=9,
                                  spacing={"mode": "even", "max_extra_renders": 0}))
    manifest = run_job(config, quiet=True)
    assert manifest["spacing"]["renders"] == manifest["rendered"] == 9 and manifest["video_frames"] == 9


def test_even_spacing_refuses_a_frame_selection_before_loading_a_model(tmp_path):
    config = load_config(tiny_job(tmp_path, model="no/such-model", spacing="even"))
    with pytest.raises(MorphError, match="spacing: even places every frame"):
        run_job(config, frames="0-2", quiet=True)


def test_spacing_accepts_a_word_or_a_mapping_and_rejects_others(tmp_path):
    assert load_config(tiny_job(tmp_path, spacing="even")).spacing.mode == "even"
    assert load_config(tiny_job(tmp_path, spacing={"mode": "even", "budget": "walk"})).spacing.budget == "walk"
    result = CliRunner().invoke(cli, ["run", str(tiny_job(tmp_path, spacing="smooth")), "--quiet"])
    assert result.exit_code == 2 and "spacing" in result.output and len(result.output.strip().splitlines()) == 1
