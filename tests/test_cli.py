import subprocess
import sys

import pytest
from click.testing import CliRunner

from morph.cli import cli


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_run_renders_and_reports(write_config, tmp_path):
    result = invoke("run", write_config(frames=3), "--quiet")
    assert result.exit_code == 0, result.output
    assert "3 frames" in result.output and "job.mp4" in result.output
    assert (tmp_path / "out" / "job" / "job.mp4").exists()


def test_command_line_options_override_the_config(write_config, tmp_path):
    out = tmp_path / "elsewhere"
    result = invoke("run", write_config(frames=4), "--out", out, "--frames", "1-2", "--batch-size", 1,
                    "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "frames").iterdir()) == ["00001.png", "00002.png"]
    assert not (out / "job.mp4").exists()


@pytest.mark.parametrize("overrides, message", [
    ({"prompts": ["one"]}, "prompts"),
    ({"frames": 1}, "frames: 1"),
    ({"height": 60}, "height: 60"),
    ({"num_inference_steps": -1}, "num_inference_steps: -1"),
    ({"scheduler": "FastestScheduler"}, "scheduler: 'FastestScheduler' is not a diffusers scheduler"),
    ({"unknown": 1}, "unknown key 'unknown'"),
    ({"model": "nobody/no-such-model"}, "model: 'nobody/no-such-model' is neither in the Hugging Face cache"),
    ({"model": "./no/such/folder"}, "no/such/folder' is not a folder"),
])
def test_user_mistakes_exit_2_with_one_line(write_config, overrides, message):
    result = invoke("run", write_config(**overrides), "--quiet")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("text", ["", "[1, 2]", "model: tiny\nprompts: [a\n"])
def test_files_that_are_not_mappings_exit_2(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = invoke("run", path)
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1


def test_batch_size_and_compile_options(write_config):
    auto = invoke("run", write_config(frames=2), "--batch-size", "auto", "--quiet")
    assert auto.exit_code == 0, auto.output
    for bad in ("0", "many"):
        result = invoke("run", write_config(frames=2), "--batch-size", bad)
        assert result.exit_code == 2 and "is not a whole number >= 1 or auto" in result.output
    assert "--compile" in invoke("run", "--help").output


def test_bad_frame_selection_exits_2(write_config):
    result = invoke("run", write_config(frames=4), "--frames", "2-9")
    assert result.exit_code == 2 and "out of range; this job has frames 0-3" in result.output


def test_missing_config_file_is_a_usage_error():
    assert invoke("run", "no-such.yaml").exit_code == 2


@pytest.mark.parametrize("command", [[], ["run"], ["tokens"], ["schema"], ["status"], ["analyze"], ["golden", "save"],
                                     ["golden", "check"]])
def test_help_on_every_command(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0 and "Usage:" in result.output


def test_help_and_version_do_not_import_torch():
    code = ("import sys; from click.testing import CliRunner; from morph.cli import cli; "
            "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0; "
            "r = CliRunner().invoke(cli, ['run', '--help']); assert r.exit_code == 0; "
            "assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "ok"


def test_python_dash_m_morph_is_the_same_cli():
    result = subprocess.run([sys.executable, "-m", "morph", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "morph, version 0.1.0"


def test_tokens_lists_slots_with_their_words():
    result = invoke("tokens", "a drawing of a kitty", "--model", "tiny")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["0", "<|startoftext|>"]
    assert lines[2].split() == ["2", "drawing</w>", "drawing"]
    assert [line.split()[2] for line in lines[5:8]] == ["kitty"] * 3
    assert lines[-1] == "9-76: padding (<|endoftext|>)"


def test_tokens_defaults_to_stable_diffusions_own_clip_tokenizer():
    result = invoke("tokens", "a photo of an axolotl")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[2] for line in lines[5:9]] == ["axolotl"] * 4  # CLIP's BPE: ax, o, lot, l</w>
    assert lines[9].split() == ["9", "<|endoftext|>"] and lines[-1] == "10-76: padding (<|endoftext|>)"


def test_the_shipped_tokenizer_gives_clips_ids():
    from morph.models.clip_bpe import sd15_tokenizer

    # the ids every Stable Diffusion 1.x pipeline feeds its text encoder for this prompt
    assert sd15_tokenizer()("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


@pytest.mark.parametrize("model, message", [
    ("nobody/not-cached", "has no tokenizer in the Hugging Face cache"),
    ("./no/such/folder", "is not a diffusers folder with a tokenizer/"),
])
def test_tokens_of_a_model_that_is_not_on_disk_is_one_line(model, message):
    result = invoke("tokens", "a cat", "--model", model)
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def _morph(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "morph", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_the_libraries_noise_is_hidden_unless_verbose(write_config, tmp_path):
    """No torchvision or accelerate advice, no loading bars: stderr holds morph's own lines only."""
    config = write_config(frames=2, model="toy", height=None, width=None)
    run = _morph("run", config, "--quiet")
    assert run.returncode == 0, run.stderr
    assert run.stderr == "" and run.stdout.startswith("2 frames rendered in")
    tokens = _morph("tokens", "a red circle", "--model", "toy")
    assert tokens.returncode == 0 and tokens.stderr == ""
    verbose = _morph("run", config, "--quiet", "--verbose", "--fresh")
    assert verbose.returncode == 0 and "Loading pipeline components" in verbose.stderr  # diffusers' own bar
