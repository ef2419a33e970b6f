"""Golden frames: save, check, tolerances, reports, updates, the pytest helper and our own goldens."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import morph.golden
from morph.cli import cli
from morph.config.yaml_file import load_config
from morph.golden import PRESETS, pick_frames
from morph.testing import assert_matches_golden
from morph.media.video import read_png, write_png


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def saved(write_config, tmp_path):
    """A config with goldens for frames 0, 3, 5 saved next to it."""
    config = write_config(name="gold", num_inference_steps=2)
    result = invoke("golden", "save", config, "--frames", "0,3,5")
    assert result.exit_code == 0, result.output
    return config, tmp_path / "golden" / "gold"


def alter(golden_dir, index, region, delta):
    """Add `delta` to the pixels of `region` in a golden PNG."""
    path = golden_dir / f"{index:05d}.png"
    image = read_png(path).astype(int)
    image[region] = (image[region] + delta).clip(0, 255)
    write_png(path, image.astype(np.uint8))


def test_pick_frames_spreads_about_16_including_first_and_last():
    picked = pick_frames(400)
    assert len(picked) == 16 and picked[0] == 0 and picked[-1] == 399
    assert pick_frames(10, every=4) == [0, 4, 8, 9]
    assert pick_frames(5) == [0, 1, 2, 3, 4]


def test_save_then_check_is_bit_identical(saved):
    config, golden_dir = saved
    golden = json.loads((golden_dir / "golden.json").read_text())
    assert [f["index"] for f in golden["frames"]] == [0, 3, 5]
    assert golden["device"] == "cpu" and golden["dtype"] == "float32" and len(golden["frames"][0]["sha256"]) == 64
    assert golden["model"]["name"] == "tiny" and "torch" in golden["versions"]
    result = invoke("golden", "check", config, "--tolerance", "exact")
    assert result.exit_code == 0, result.output
    assert result.output.count("identical") == 3


@pytest.mark.parametrize("change, key", [
    ({"seed": 8}, "seed: 7 -> 8"),
    ({"prompts": ["a photo of a cat", "a red circle"]}, "prompts:"),
    ({"scheduler": "EulerDiscreteScheduler"}, 'scheduler: null -> "EulerDiscreteScheduler"'),
])
def test_a_changed_config_is_caught(saved, write_config, change, key):
    _, golden_dir = saved
    changed = write_config(name="gold", num_inference_steps=2, **change)
    result = invoke("golden", "check", changed)
    assert result.exit_code == 2 and key in result.output and "--force" in result.output
    forced = invoke("golden", "check", changed, "--force")
    if "seed" in change:  # a new starting latent moves every frame
        assert forced.exit_code == 1 and "REGRESSED" in forced.output


def test_a_few_changed_pixel_values_pass_cross_device_but_not_exact(saved):
    config, golden_dir = saved
    alter(golden_dir, 3, (slice(10, 12), slice(10, 12)), 3)
    assert invoke("golden", "check", config, "--tolerance", "cross-device").exit_code == 0
    exact = invoke("golden", "check", config, "--tolerance", "exact")
    assert exact.exit_code == 1 and exact.output.count("REGRESSED") == 1


def test_a_heavily_altered_golden_fails_everywhere_and_the_report_marks_it(saved, tmp_path):
    config, golden_dir = saved
    alter(golden_dir, 5, (slice(20, 44), slice(8, 32)), 120)
    for preset in PRESETS:
        report = tmp_path / f"report-{preset}"
        result = invoke("golden", "check", config, "--tolerance", preset, "--report", report)
        assert result.exit_code == 1, (preset, result.output)
    saved_report = json.loads((report / "report.json").read_text())
    assert [f["passed"] for f in saved_report["frames"]] == [True, True, False]
    side_by_side = read_png(report / "00005_golden_new_diff.png")
    assert side_by_side.shape == (64, 192, 3)
    heat = side_by_side[:, 128:].astype(int).sum(-1)
    inside = heat[20:44, 8:32]
    outside = heat.copy()
    outside[20:44, 8:32] = 0
    assert inside.min() > 0 and outside.max() == 0


def test_update_accepts_the_new_renders(saved):
    config, golden_dir = saved
    alter(golden_dir, 0, (slice(0, 64), slice(0, 64)), 90)
    result = invoke("golden", "check", config, "--update")
    assert result.exit_code == 0 and "REGRESSED" in result.output and "updated the goldens" in result.output
    assert invoke("golden", "check", config, "--tolerance", "exact").exit_code == 0


def test_goldens_from_another_environment_use_the_cross_device_tolerance(saved):
    config, golden_dir = saved
    meta = json.loads((golden_dir / "golden.json").read_text())
    meta.update(device="cuda:0", dtype="float16")
    (golden_dir / "golden.json").write_text(json.dumps(meta))
    result = invoke("golden", "check", config)
    assert result.exit_code == 0
    assert "goldens made on cuda:0 float16, this check runs on cpu float32" in result.output
    assert "tolerance cross-device" in result.output


def test_config_overrides_tighten_a_preset(saved, write_config):
    _, golden_dir = saved
    alter(golden_dir, 3, (slice(10, 12), slice(10, 12)), 3)
    strict = write_config(name="gold", num_inference_steps=2, golden={"tolerance": "cross-device", "max_abs_diff": 1})
    result = invoke("golden", "check", strict)
    assert result.exit_code == 1 and "cross-device + config overrides" in result.output


def test_missing_goldens_are_a_usage_error(write_config):
    result = invoke("golden", "check", write_config(name="nothing"))
    assert result.exit_code == 2 and "golden.json missing" in result.output


def test_assert_matches_golden(saved):
    config, golden_dir = saved
    assert_matches_golden(config)
    alter(golden_dir, 3, (slice(0, 64), slice(0, 64)), 100)
    with pytest.raises(AssertionError, match="REGRESSED"):
        assert_matches_golden(config)


@pytest.mark.parametrize("name", ["tiny_demo", "toy_demo"])
def test_the_projects_own_goldens_still_match(name, tmp_path, monkeypatch):
    """configs/golden/<name> holds goldens made with `morph golden save configs/<name>.yaml`, on the CPU; checked
    there at their own tolerance (tests/test_gpu.py checks them on CUDA)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on the GPU machine: still the CPU's check
    config = Path(__file__).parents[1] / "configs" / f"{name}.yaml"
    assert load_config(config).name == name
    assert (config.parent / "golden" / name / "golden.json").exists()
    assert_matches_golden(config, device="cpu", output=str(tmp_path))  # the report to tmp_path, not into the repo
    assert (tmp_path / "golden-report" / "report.json").exists()


def test_model_and_device_options_make_goldens_for_a_hub_config_offline(write_config, tmp_path):
    config = write_config(name="hub", model="stable-diffusion-v1-5/stable-diffusion-v1-5", device="auto")
    saved = invoke("golden", "save", config, "--model", "tiny", "--device", "cpu", "--frames", "0,5")
    assert saved.exit_code == 0, saved.output
    golden = json.loads((tmp_path / "golden" / "hub" / "golden.json").read_text())
    assert golden["model"]["name"] == "tiny" and golden["device"] == "cpu"
    checked = invoke("golden", "check", config, "--model", "tiny", "--device", "cpu", "--tolerance", "exact")
    assert checked.exit_code == 0 and checked.output.count("identical") == 2, checked.output
    # without --model the config names the hub model: a different pixel-deciding key, caught before loading
    assert "model:" in invoke("golden", "check", config).output


def test_a_save_that_fails_leaves_the_old_goldens_as_they_were(saved, monkeypatch):
    config, golden_dir = saved
    before = {p.name: p.read_bytes() for p in golden_dir.iterdir()}
    written = []

    def disk_full_after_one(path, image):
        if written:
            raise OSError(28, "No space left on device")
        written.append(path)
        write_png(path, image)

    monkeypatch.setattr(morph.golden, "write_png", disk_full_after_one)
    result = invoke("golden", "save", config, "--frames", "1,2,4", "--force")
    assert result.exit_code == 1 and "No space left on device" in result.output
    assert {p.name: p.read_bytes() for p in golden_dir.iterdir()} == before
    assert [p.name for p in golden_dir.parent.iterdir()] == ["gold"]  # no half-made folder beside it


def test_a_new_save_replaces_the_frames_and_keeps_other_files(saved):
    config, golden_dir = saved
    (golden_dir / "NOTES.txt").write_text("why these frames")
    assert invoke("golden", "save", config, "--frames", "1,2", "--force").exit_code == 0
    assert sorted(p.name for p in golden_dir.iterdir()) == ["00001.png", "00002.png", "NOTES.txt", "golden.json"]
    assert [f["index"] for f in json.loads((golden_dir / "golden.json").read_text())["frames"]] == [1, 2]
