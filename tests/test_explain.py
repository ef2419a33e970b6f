"""Why did it jump: the rows of a step grouped by the prompts' words, shares that add up, and `morph explain` on the
toy model (renders through the store, the manifest, report.html, bad input)."""

import json
import math

import pytest
from click.testing import CliRunner

import morph.job
from morph.analysis.attribution import biggest_steps, row_groups, shares, summary_line
from morph.cli import cli
from morph.config.yaml_file import load_config
from morph.job import run_job
from morph.models.tiny import build_tokenizer
from morph.prompts.encode import word_slots

L = 77


def labels(groups):
    return [(g.label, g.rows[0], g.rows[-1]) for g in groups]


def test_tokenizations_that_agree_give_a_group_per_word_then_eos_and_padding():
    groups = row_groups([("a", [1]), ("red", [2]), ("circle", [3])], 4, [("a", [1]), ("red", [2]), ("square", [3])], 4,
                        L)
    assert labels(groups) == [("BOS", 0, 0), ("'a'", 1, 1), ("'red'", 2, 2), ("'circle'→'square'", 3, 3),
                              ("EOS", 4, 4), ("padding", 5, L - 1)]
    assert sorted(r for g in groups for r in g.rows) == list(range(L))  # every row in exactly one group


def test_where_tokenizations_part_one_group_runs_to_the_later_eos():
    tokenizer = build_tokenizer()  # "kitty" is spelt out in tokens; "cat" is one
    a, b = word_slots(tokenizer, "a red cat"), word_slots(tokenizer, "a red kitty")
    assert a[0][2] == ("cat", [3]) and len(b[0][2][1]) > 1
    groups = row_groups(*a, *b, L)
    assert labels(groups)[:3] == [("BOS", 0, 0), ("'a'", 1, 1), ("'red'", 2, 2)]
    assert labels(groups)[3] == (f"slots 3-{b[1]}", 3, b[1]) and labels(groups)[4] == ("padding", b[1] + 1, L - 1)
    assert sorted(r for g in groups for r in g.rows) == list(range(L))


def test_a_longer_prompt_and_sdxls_pooled_row():
    groups = row_groups([("a", [1]), ("cat", [2])], 3, [("a", [1]), ("cat", [2]), ("sleeping", [3])], 4, L,
                        pooled=True)
    assert labels(groups) == [("BOS", 0, 0), ("'a'", 1, 1), ("'cat'", 2, 2), ("slots 3-4", 3, 4), ("padding", 5, L - 1),
                              ("pooled", L, L)]


def test_shares_and_the_remainder_add_up_to_one():
    parts, remainder = shares([0.02, 0.0, 0.05], 0.1)
    assert parts == pytest.approx([0.2, 0.0, 0.5]) and remainder == pytest.approx(0.3)
    assert shares([0.08, 0.07], 0.1)[1] == pytest.approx(-0.5)  # together they do less than apart
    record = {"step": 98, "groups": [{"label": "padding", "share": 0.22}, {"label": "'triangle'", "share": 0.61},
                                     {"label": "BOS", "share": 0.0}], "remainder": 0.17}
    assert summary_line(record) == "98→99: 'triangle' 0.61, padding 0.22, remainder 0.17"


def test_the_biggest_steps_overall_or_one_per_storm_zone():
    distances = [0.1, 0.9, 0.8, 0.1, 0.5, 0.7, 0.1]
    assert biggest_steps(distances, 3) == [1, 2, 5]
    assert biggest_steps(distances, 3, storms=[(1, 2), (4, 5)]) == [1, 5]


@pytest.fixture
def circle_to_square(write_config):
    """A toy walk 'a red circle' -> 'a red square' whose storm map finds a storm (its biggest step explained)."""
    config = write_config(name="shape", model="toy", prompts=["a red circle", "a red square"], frames=12, seed=3,
                          num_inference_steps=6, guidance_scale=5.0, batch_size=8, height=None, width=None,
                          analysis={"explain": True})
    return config, run_job(load_config(config), quiet=True)


def test_a_run_with_analysis_explain_attributes_its_storm_to_the_shape_word_and_the_rows_after_it(circle_to_square):
    config, manifest = circle_to_square
    analysis = manifest["analysis"]
    assert analysis["storms"] and len(analysis["attribution"]) == len(analysis["storms"])
    record = analysis["attribution"][0]
    assert record["step"] == biggest_steps(analysis["distances"], 3, analysis["storms"])[0]
    groups = {g["label"]: g for g in record["groups"]}
    assert list(groups) == ["BOS", "'a'", "'red'", "'circle'→'square'", "EOS", "padding"]
    for same in ("BOS", "'a'", "'red'"):  # CLIP's attention is causal: these rows are the same at both frames
        assert groups[same]["share"] == 0.0 and groups[same]["key"] is None
    assert math.isclose(sum(g["share"] for g in record["groups"]) + record["remainder"], 1.0, abs_tol=1e-12)
    moved = sum(groups[g]["share"] for g in ("'circle'→'square'", "EOS", "padding"))
    assert moved > 0.8, record
    output = manifest["frames_dir"].rsplit("/", 1)[0]
    for group in record["groups"]:
        assert group["key"] is None or (morph.job.Path(output) / group["file"]).is_file()
    report = (morph.job.Path(output) / "report.html").read_text()
    assert "Why it jumped" in report and f"Frames {record['step']} → {record['step'] + 1}" in report


def test_morph_explain_renders_a_step_once_and_reuses_it_after(circle_to_square):
    config, manifest = circle_to_square
    output = morph.job.Path(manifest["frames_dir"]).parent
    result = CliRunner().invoke(cli, ["explain", str(output), "--step", "0", "--step", "5"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("0→1: ") and lines[1].startswith("5→6: ") and "remainder" in lines[1]
    stored = sorted((output / ".store").iterdir())
    again = CliRunner().invoke(cli, ["explain", str(output), "--step", "0", "--step", "5"])
    assert again.output == result.output and sorted((output / ".store").iterdir()) == stored  # nothing rendered
    written = json.loads((output / "manifest.json").read_text())["analysis"]["attribution"]
    assert [r["step"] for r in written] == [0, 5]


def test_morph_analyze_keeps_the_attribution_while_the_metric_stays_and_drops_it_under_another(circle_to_square):
    _, manifest = circle_to_square
    output = morph.job.Path(manifest["frames_dir"]).parent
    attributed = manifest["analysis"]["attribution"]
    result = CliRunner().invoke(cli, ["analyze", str(output), "--storm-factor", "1.5"])
    assert result.exit_code == 0, result.output
    analysis = json.loads((output / "manifest.json").read_text())["analysis"]
    assert analysis["threshold"] != manifest["analysis"]["threshold"]  # recomputed
    assert analysis["distances"] == manifest["analysis"]["distances"] and analysis["attribution"] == attributed  # kept
    report = (output / "report.html").read_text()
    assert f"Frames {attributed[0]['step']} → {attributed[0]['step'] + 1}" in report and "morph explain" not in \
        result.output
    # shares of the steps' ssim change do not belong beside pixel distances: dropped, and the CLI says what to run
    result = CliRunner().invoke(cli, ["analyze", str(output), "--metric", "pixel"])
    assert result.exit_code == 0, result.output
    analysis = json.loads((output / "manifest.json").read_text())["analysis"]
    assert analysis["metric"] == "pixel" and analysis["distances"] != manifest["analysis"]["distances"]
    assert analysis["attribution"] is None and "Why it jumped" not in (output / "report.html").read_text()
    steps = " ".join(f"--step {r['step']}" for r in attributed)
    assert f"measured with ssim, not pixel: run `morph explain {output} {steps}` again" in result.output


def test_after_morph_analyze_measured_the_walk_again_explain_measures_as_it_did(write_config):
    def walk(name, metric):
        config = load_config(write_config(name=name, model="toy", prompts=["a red circle", "a red square"], frames=12,
                                          seed=3, num_inference_steps=6, guidance_scale=5.0, batch_size=8,
                                          height=None, width=None, analysis={"metric": metric}))
        run_job(config, quiet=True)
        return config.output_dir

    def explained(output):
        result = CliRunner().invoke(cli, ["explain", str(output), "--step", "5"])
        assert result.exit_code == 0, result.output
        return json.loads((output / "manifest.json").read_text())["analysis"]["attribution"]

    measured_again = walk("again", "ssim")
    assert CliRunner().invoke(cli, ["analyze", str(measured_again), "--metric", "pixel"]).exit_code == 0
    # the same pixels, measured as pixel from the start: the same shares of the same step
    assert explained(measured_again) == explained(walk("pixel", "pixel"))


def test_morph_explain_on_an_even_walk_attributes_the_frames_its_video_has(write_config):
    # storm_factor 1: steps above the median are storms, so the run attributes some (through the even walk's frames)
    config = load_config(write_config(name="shape", model="toy", prompts=["a red circle", "a red square"], frames=12,
                                      seed=3, num_inference_steps=6, guidance_scale=5.0, batch_size=8, height=None,
                                      width=None, spacing={"mode": "even", "max_extra_renders": 8},
                                      analysis={"explain": True, "storm_factor": 1.0}))
    manifest = run_job(config, quiet=True)
    assert any(r["t"] != r["index"] / 11 for r in manifest["frames"])  # not the uniform walk's frames
    attributed = manifest["analysis"]["attribution"]
    assert attributed
    steps = [arg for record in attributed for arg in ("--step", str(record["step"]))]
    stored = sorted((config.output_dir / ".store").iterdir())
    result = CliRunner().invoke(cli, ["explain", str(config.output_dir), *steps])
    assert result.exit_code == 0, result.output
    # the same frames' steps as the run explained: the same renders, found in the store, and the same shares
    assert sorted((config.output_dir / ".store").iterdir()) == stored
    assert json.loads((config.output_dir / "manifest.json").read_text())["analysis"]["attribution"] == attributed


def test_an_even_walks_manifest_whose_frames_are_not_its_walks_is_one_line(write_config):
    config = load_config(write_config(name="short", frames=4, spacing={"mode": "even", "max_extra_renders": 2}))
    run_job(config, quiet=True)
    path = config.output_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    frames = manifest["frames"][:3]  # edited: a frame record less than the config's walk has
    path.write_text(json.dumps({**manifest, "frames": frames, "frame_count": 3}))
    result = CliRunner().invoke(cli, ["explain", str(config.output_dir), "--step", "0"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "manifest.json: its frames hold 3 records and its config's walk 4 frames; render the walk again" in \
        result.output


@pytest.mark.parametrize("args, message", [
    (["--step", "11"], "--step 11: the walk's steps are 0 to 10 (step i is frame i -> i + 1)"),
    (["--step", "-1"], "--step -1: the walk's steps are 0 to 10"),
])
def test_a_step_outside_the_walk_is_one_line_before_any_model_loads(circle_to_square, monkeypatch, args, message):
    _, manifest = circle_to_square
    monkeypatch.setattr(morph.job, "prepare_job", lambda *a, **k: pytest.fail("a model was loaded"))
    result = CliRunner().invoke(cli, ["explain", str(morph.job.Path(manifest["frames_dir"]).parent), *args])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1 and message in result.output


def test_a_folder_without_a_walk_is_one_line(tmp_path, write_config):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(cli, ["explain", str(empty)])
    assert result.exit_code == 2 and "no readable manifest.json; is it a morph output folder?" in result.output
    (empty / "manifest.json").write_text("[]")  # JSON, but not a manifest
    result = CliRunner().invoke(cli, ["explain", str(empty)])
    assert result.exit_code == 2 and "no readable manifest.json; is it a morph output folder?" in result.output
    grid = run_job(load_config(write_config(name="grid", prompts=None, frames=None, num_inference_steps=1, grid={
        "rows": {"from": "a cat", "to": "a dog", "steps": 2}, "columns": {"add": "red", "from": 0, "to": 1,
                                                                           "steps": 2}})), quiet=True)
    result = CliRunner().invoke(cli, ["explain", grid["grid"].rsplit("/", 1)[0]])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "an explanation needs a whole walk (this is a grid" in result.output
