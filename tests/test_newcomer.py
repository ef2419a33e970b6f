"""What a newcomer following the README ran into: relative paths in configs, exports into new folders, goldens
that must not be overwritten by accident, YAML booleans, spacing options, help and messages."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from conftest import tiny_job
from morph.cli import cli
from morph.config.frame_list import parse_frame_spec
from morph.config.yaml_file import load_config
from morph.errors import MorphError
from test_axes import clicks

ROOT = Path(__file__).parents[1]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def timed_walk(tmp_path):
    """A timed walk whose config names its music relative to itself, rendered from another current folder."""
    project = tmp_path / "project"
    project.mkdir()
    clicks(project / "track.wav", seconds=1.0, at=(0.5,))
    config = tiny_job(project, "timed", frames=None, timing={"audio": "track.wav"}, output=str(tmp_path / "out"))
    return project, config, tmp_path / "out"


def test_paths_in_a_config_are_read_from_its_folder_whatever_the_current_one(timed_walk, tmp_path, monkeypatch):
    project, config, out = timed_walk
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = invoke("run", config, "--quiet")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["timing"]["audio"] == str(project / "track.wav")  # absolute: readable from anywhere
    assert manifest["frame_count"] == 20  # 1 s of music at 20 fps
    # an export from yet another folder finds the music too
    monkeypatch.chdir(tmp_path)
    made = invoke("export", out, "--preset", "x", "--out", elsewhere / "new" / "dir" / "x.mp4")
    assert made.exit_code == 0, made.output
    assert (elsewhere / "new" / "dir" / "x.mp4").is_file() and "with the music" in made.output


def test_model_names_stay_hub_ids_unless_they_name_something_beside_the_config(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mine").mkdir()
    hub = load_config(tiny_job(tmp_path, model="stable-diffusion-v1-5/stable-diffusion-v1-5"))
    assert hub.model == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert load_config(tiny_job(tmp_path, model="models/mine")).model == str(tmp_path / "models" / "mine")
    assert load_config(tiny_job(tmp_path, model="weights.safetensors")).model == str(tmp_path / "weights.safetensors")
    assert load_config(tiny_job(tmp_path, model="tiny")).model == "tiny"
    # the command line's paths are the current folder's: --model overrides as given
    assert load_config(tiny_job(tmp_path), model="models/mine").model == "models/mine"


def test_a_failed_export_leaves_nothing_and_keeps_an_earlier_file(timed_walk, tmp_path):
    _, config, out = timed_walk
    assert invoke("run", config, "--quiet").exit_code == 0
    target = tmp_path / "exports" / "x.mp4"
    assert invoke("export", out, "--preset", "x", "--out", target).exit_code == 0
    earlier = target.read_bytes()
    (config.parent / "track.wav").unlink()  # the music is gone
    result = invoke("export", out, "--preset", "x", "--out", target)
    assert result.exit_code == 2 and "track.wav" in result.output and "is not a file" in result.output
    assert target.read_bytes() == earlier and sorted(p.name for p in target.parent.iterdir()) == ["x.mp4"]
    result = invoke("export", out, "--preset", "x", "--out", tmp_path / "never" / "x.mp4")
    assert result.exit_code == 2 and not (tmp_path / "never").exists()


def test_golden_save_replaces_goldens_only_with_force(write_config, tmp_path):
    config = write_config(name="gold", num_inference_steps=2)
    assert invoke("golden", "save", config, "--frames", "0,2").exit_code == 0
    golden = tmp_path / "golden" / "gold" / "golden.json"
    before = golden.read_bytes()
    result = invoke("golden", "save", config, "--frames", "1")
    assert result.exit_code == 2 and "holds goldens already" in result.output and "--force" in result.output
    assert golden.read_bytes() == before
    assert invoke("golden", "save", config, "--frames", "1", "--force").exit_code == 0
    assert [f["index"] for f in json.loads(golden.read_text())["frames"]] == [1]


@pytest.mark.parametrize("key, word", [("compile", "yes"), ("safety_checker", "on"), ("compile", "off")])
def test_unquoted_yaml_yes_no_on_off_are_words_not_booleans(tmp_path, key, word):
    path = tiny_job(tmp_path)
    path.write_text(path.read_text() + f"{key}: {word}\n")
    result = invoke("run", path)
    assert result.exit_code == 2 and f"{key}: '{word}' is not allowed; expected true or false" in result.output


def test_a_prompt_that_reads_no_stays_the_word(tmp_path):
    path = tmp_path / "words.yaml"
    path.write_text("model: tiny\nprompts: [no, yes]\n")
    assert [p.prompt for p in load_config(path).prompts] == ["no", "yes"]


def test_even_spacings_options_imply_it(tmp_path):
    assert load_config(tiny_job(tmp_path, spacing={"budget": "walk"})).spacing.mode == "even"
    assert load_config(tiny_job(tmp_path, spacing={"max_extra_renders": 3})).spacing.mode == "even"
    with pytest.raises(MorphError, match="spacing.max_extra_renders: only spacing: even uses it"):
        load_config(tiny_job(tmp_path, spacing={"mode": "uniform", "max_extra_renders": 3}))


def test_configs_from_where_no_single_file_is_loaded_is_refused(tmp_path):
    result = invoke("run", ROOT / "configs" / "single_file.yaml", "--model", "tiny-sd2", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "configs_from: describes a single-file model or vae" in result.output
    assert not (tmp_path / "out").exists()


def test_a_frame_range_written_high_to_low_says_so():
    with pytest.raises(MorphError, match="'5-2' starts after it ends; write the range low to high, 2-5"):
        parse_frame_spec("5-2", 10)


def test_tokens_refuses_an_embedding_of_the_wrong_width(tmp_path):
    from safetensors.torch import save_file

    save_file({"emb_params": torch.zeros(1, 32)}, tmp_path / "narrow.safetensors")  # 32 channels: the tiny model's
    result = invoke("tokens", "a <narrow> cat", "--embedding", tmp_path / "narrow.safetensors")
    assert result.exit_code == 2 and "has 32 channels, and the model's text encoder 768" in result.output
    fits = invoke("tokens", "a <narrow> cat", "--model", "tiny", "--embedding", tmp_path / "narrow.safetensors")
    assert fits.exit_code == 0 and "<narrow>" in fits.output


def test_the_gpu_benchmark_without_a_gpu_is_one_line():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the benchmark would run")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_render.py"), "--sd15-shaped"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "sees none" in done.stderr


def test_analyze_names_storm_zones_by_their_steps(tmp_path):
    from morph.analysis.storm_map import Analysis, format_summary

    analysis = Analysis("pixel", [0.1] * 10, 0.3, {"mean": 0.1, "median": 0.1, "max": 0.1, "max_over_median": 1.0,
                                                  "smoothness": 1.0, "worst_10_percent_share": 0.1},
                        [(86, 88), (98, 98)], [])
    assert "86-88, 98" in format_summary(analysis)


# the README: every config in configs/ runs on the tiny model with --model tiny but the two that name files made for a
# real model
FILES_OF_THEIR_OWN = {"lcm_cat_kitten.yaml": "loras[0]: 'latent-consistency/lcm-lora-sdv1-5'",  # a LoRA for SD 1.5
                      "single_file.yaml": "configs_from: describes a single-file model or vae"}


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_a_shipped_config_renders_on_the_tiny_model_unless_it_names_files_of_its_own(path, tmp_path):
    out = tmp_path / "out"
    result = invoke("run", path, "--model", "tiny", "--device", "cpu", "--frames", "0", "--out", out, "--quiet")
    if path.name in FILES_OF_THEIR_OWN:
        assert result.exit_code == 2 and FILES_OF_THEIR_OWN[path.name] in result.output
        assert len(result.output.strip().splitlines()) == 1 and not out.exists()
    else:
        assert result.exit_code == 0, result.output
        assert (out / "frames" / "00000.png").exists() or (out / "cells" / "r00_c00.png").exists()
