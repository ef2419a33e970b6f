"""Bad input and faults: the corpus of hostile configs, output locations, disk faults, the JSON Schema.

Every case in tests/corpus/ starts with `# exit N: fragment`: `morph run` on it must exit N with
one line containing the fragment (`…` stands for any text, such as the folder a path was resolved in), no
traceback, and (for exit 2) without loading a model or leaving an output folder.
"""

import errno
import json
import re
import struct
import subprocess
import sys
import wave
import zlib
from pathlib import Path

import jsonschema
import pytest
import torch
import yaml
from PIL import Image
from click.testing import CliRunner
from PIL import Image

import morph.files
import morph.job
import morph.media.video
from morph.cli import cli
from morph.config.jobs import json_schema
from morph.media.video import read_png

CORPUS = Path(__file__).parent / "corpus"
CONFIGS = Path(__file__).parents[1] / "configs"
HEADER = re.compile(r"# exit (\d): (.+)")


def generated_cases():
    """Cases too large to keep as files: (name, YAML text, exit code, fragment)."""
    walk = "model: tiny\ndefine: {cat: a cat}\nprompts: [cat, %s]\n"
    return [
        ("nested_parentheses", walk % f"'{'(' * 250}cat{')' * 250}'", 2, "nests deeper than 50 levels"),
        ("leading_minus_signs", walk % f"'{'-' * 990}cat'", 2, "nests deeper than 50 levels"),
        ("nested_products", walk % f"'{'2*(' * 400}cat{')' * 400}'", 2, "nests deeper than 50 levels"),
        ("weight_with_300_digits", walk % f"'1{'0' * 300} * cat'", 2, "is too large"),
        ("division_by_a_tiny_number", walk % f"'cat / 0.{'0' * 300}1'", 2, "comes to 1e+301, beyond +-1000"),
        ("weight_beyond_1000", walk % "'1001 * cat'", 2, "comes to 1001, beyond +-1000"),
        ("expression_of_200000_terms", walk % f"'{' + '.join(['cat'] * 200_000)}'", 2,
         "(1199999 characters) is not allowed; expected at most 10000 characters"),
        ("error_after_300000_spaces", walk % f"'cat{' ' * 300_000}+ ?'", 2,
         "(300008 characters) is not allowed; expected at most 10000 characters"),
        ("error_after_9000_spaces", walk % f"'cat{' ' * 9000}+ ?'", 2, "unexpected '?' at column 9006"),
        ("deep_yaml", "model: tiny\nprompts: " + "[" * 5000 + "]" * 5000 + "\n", 2, "nests too deeply"),
    ]


def corpus_cases():
    for path in sorted(CORPUS.glob("*.yaml")):
        match = HEADER.match(path.read_text().splitlines()[0])
        yield pytest.param(path.read_text(), int(match[1]), match[2], id=path.stem)
    for name, text, code, fragment in generated_cases():
        yield pytest.param(text, code, fragment, id=name)


@pytest.fixture
def no_model_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded for a config that should have been refused")

    # the job functions take the loader as a default argument, bound when morph.job was imported
    for function in (morph.job.run_job, morph.job.prepare_job):
        monkeypatch.setattr(function, "__defaults__", tuple(refuse if value is morph.job.load_model else value
                                                            for value in function.__defaults__))
    monkeypatch.setattr(morph.job, "load_model", refuse)  # and any call of it by name


def corpus_files(folder: Path) -> None:
    """The files the corpus cases name, each wrong for the key that names it (or right, for the keys around it)."""
    from safetensors.torch import save_file

    (folder / "random.safetensors").write_bytes(bytes(range(256)) * 16)
    save_file({"model.diffusion_model.conv_in.weight": torch.zeros(64, 64)}, folder / "truncated.safetensors")
    whole = (folder / "truncated.safetensors").read_bytes()
    (folder / "truncated.safetensors").write_bytes(whole[:len(whole) // 2])
    save_file({"lora_unet_down_blocks_0.lora_down.weight": torch.zeros(4, 8),
               "lora_unet_down_blocks_0.lora_up.weight": torch.zeros(8, 4)}, folder / "lora.safetensors")
    save_file({"lora_unet_down_blocks_0.lora_down.weight": torch.zeros(4, 8),
               "lora_unet_down_blocks_0.lora_up.weight": torch.zeros(8, 4),
               "lora_unet_down_blocks_0.dora_scale": torch.ones(1, 8)}, folder / "dora.safetensors")
    save_file({"emb_params": torch.zeros(1, 32)}, folder / "embedding.safetensors")
    save_file({"encoder.conv_in.weight": torch.zeros(4, 3), "decoder.conv_in.weight": torch.zeros(3, 4)},
              folder / "vae.safetensors")
    block = "down_blocks.1.attentions.0"  # a header-only stand-in of an SDXL ControlNet
    save_file({"controlnet_cond_embedding.conv_in.weight": torch.zeros(16, 3, 3, 3), "add_embedding.linear_1.weight":
               torch.zeros(1280, 2816), f"{block}.proj_in.weight": torch.zeros(640, 640),
               f"{block}.transformer_blocks.0.attn2.to_k.weight": torch.zeros(640, 2048),
               "controlnet_down_blocks.0.weight": torch.zeros(320, 320, 1, 1)},
              folder / "controlnet_sdxl.safetensors")
    Image.new("RGB", (16, 16)).save(folder / "image.png")
    save_file({"image_proj.proj.weight": torch.zeros(128, 16), "ip_adapter.1.to_k_ip.weight": torch.zeros(32, 32)},
              folder / "ip-adapter.safetensors")  # a plain IP-Adapter's tensors, without its image_encoder/
    Image.new("RGB", (8, 8)).save(folder / "picture.png")
    (folder / "model.ckpt").write_bytes(b"PK\x03\x04 a zip of pickles")
    (folder / "notes.txt").write_text("not music\n")
    Image.new("RGB", (8, 8), (200, 40, 40)).save(folder / "picture.png")
    Image.new("CMYK", (8, 8)).save(folder / "print.jpg")
    Image.new("RGBA", (8, 8), (1, 2, 3, 0)).save(folder / "see-through.png")
    Image.new("L", (8, 8)).save(folder / "moving.gif", save_all=True, append_images=[Image.new("L", (8, 8), 255)])
    (folder / "bomb.png").write_bytes(_png_header(100_000, 100_000))
    Image.effect_noise((64, 64), 60).convert("RGB").save(folder / "whole.jpg", quality=95)
    whole = (folder / "whole.jpg").read_bytes()
    (folder / "cut-short.jpg").write_bytes(whole[:len(whole) // 2])  # its header and half its data
    with wave.open(str(folder / "track.wav"), "wb") as track:  # 2 s of silence
        track.setnchannels(1)
        track.setsampwidth(2)
        track.setframerate(8000)
        track.writeframes(b"\0\0" * 16000)


def _png_header(width: int, height: int) -> bytes:
    """The start of a PNG that claims width x height pixels: a decompression bomb's header, and a few bytes of data."""
    chunks = [b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0), b"IDAT" + zlib.compress(bytes(64))]
    return b"\x89PNG\r\n\x1a\n" + b"".join(struct.pack(">I", len(c) - 4) + c + struct.pack(">I", zlib.crc32(c))
                                          for c in chunks)


@pytest.mark.parametrize("text, code, fragment", list(corpus_cases()))
def test_bad_config_exits_with_one_clear_line(text, code, fragment, tmp_path, no_model_loads, monkeypatch):
    corpus_files(tmp_path)
    monkeypatch.chdir(tmp_path)  # the cases name their files relative to here
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path / "out" / "job")])
    lines = result.output.strip().splitlines()
    assert result.exit_code == code, result.output[:500]
    assert len(lines) == 1 and re.search(".*".join(map(re.escape, fragment.split("…"))), lines[0]), lines[0][:500]
    assert len(lines[0]) < 400 and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # a refusal leaves the disk as it found it


def test_a_config_that_is_not_utf8(tmp_path, no_model_loads):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("model: tiny\nprompts: [chat, 'château']\n".encode("latin-1"))
    result = CliRunner().invoke(cli, ["run", str(path)])
    assert result.exit_code == 2 and "not UTF-8 text (byte 0xe2 on line 2); save the file as UTF-8" in result.output


def test_a_config_mistake_answers_before_torch_is_imported(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: tiny\nprompts: [cat, kitten]\nguidance_scale: .nan\n")
    code = ("import sys; from click.testing import CliRunner; from morph.cli import cli; "
            f"r = CliRunner().invoke(cli, ['run', {str(path)!r}]); assert r.exit_code == 2, r.output; "
            "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules; print('ok')")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.stdout.strip() == "ok", run.stderr


# --- output locations, checked before any model loads -------------------------------------------

def run_into(write_config, tmp_path, out, **config):
    return CliRunner().invoke(cli, ["run", str(write_config(frames=3, **config)), "--out", str(out), "--quiet"])


def test_out_naming_an_existing_file(write_config, tmp_path, no_model_loads):
    (tmp_path / "taken").write_text("x")
    result = run_into(write_config, tmp_path, tmp_path / "taken")
    assert result.exit_code == 2 and "is a file, not a folder" in result.output


def test_a_file_where_the_frames_folder_goes(write_config, tmp_path, no_model_loads):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "frames").write_text("x")
    result = run_into(write_config, tmp_path, tmp_path / "out")
    assert result.exit_code == 2 and "is a file where the frames folder goes" in result.output


def test_a_folder_where_the_video_goes(write_config, tmp_path, no_model_loads):
    (tmp_path / "out" / "job.mp4").mkdir(parents=True)
    result = run_into(write_config, tmp_path, tmp_path / "out")
    assert result.exit_code == 2 and "is a folder where the file job.mp4 goes" in result.output


def test_an_output_folder_that_cannot_be_written(write_config, tmp_path, monkeypatch, no_model_loads):
    def read_only(folder):
        raise OSError(errno.EROFS, "Read-only file system", str(folder))

    monkeypatch.setattr(morph.files, "_probe_write", read_only)
    result = run_into(write_config, tmp_path, tmp_path / "out")
    assert result.exit_code == 2 and "cannot write in" in result.output and "Read-only file system" in result.output


def test_short_disk_space_is_a_warning_not_a_refusal(write_config, tmp_path, monkeypatch):
    monkeypatch.setattr(morph.files.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 1000})())
    result = run_into(write_config, tmp_path, tmp_path / "out")
    assert result.exit_code == 0 and "may need about" in result.output


# --- faults while writing: exit 1, one line, nothing partial under a final name ------------------

@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "No space left on device"),
                                         (errno.EACCES, "Permission denied")])
def test_a_write_fault_stops_with_one_line_and_leaves_no_partial_file(write_config, tmp_path, monkeypatch, code,
                                                                       words):
    real_write, written = morph.media.video.write_atomic, []

    def failing_write(path, write):
        if len(written) == 2:  # the third frame: half a file, then the fault
            Path(path).write_bytes(b"\x89PNG half")
            raise OSError(code, words, str(path))
        written.append(path)
        return real_write(path, write)

    monkeypatch.setattr(morph.media.video, "write_atomic", failing_write)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(write_config(frames=6, batch_size=2)), "--out", str(out),
                                      "--quiet"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and words in lines[0] and "/.store/" in lines[0]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in files if "partial" in p.name] and not list(out.glob("*.mp4"))
    assert not (out / "manifest.json").exists()
    stored = [p for p in files if p.suffix == ".png"]
    assert len(stored) == 2 and all(read_png(p).shape == (64, 64, 3) for p in stored)  # whole frames only


# --- the JSON Schema ------------------------------------------------------------------------------

def test_the_committed_schema_is_the_current_one():
    assert json.loads((CONFIGS / "morph.schema.json").read_text()) == json_schema()
    result = CliRunner().invoke(cli, ["schema"])
    assert result.exit_code == 0 and json.loads(result.output) == json_schema()


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_follows_the_schema_and_names_it_for_editors(path):
    text = path.read_text()
    assert text.startswith("# yaml-language-server: $schema=morph.schema.json\n")
    jsonschema.validate(yaml.safe_load(text), json_schema())


# JSON has no NaN or inf, so the .nan and .inf cases are for morph's own loader alone
SCHEMA_ERRORS = ["seed_overflow", "seed_negative", "unknown_key",
                 "nested_unknown_key", "yes_is_not_true", "string_number", "float_steps", "two_kinds", "no_kind",
                 "missing_model", "bad_device", "bad_batch", "bad_name", "bad_define_name", "empty_prompt",
                 "scheduler_injection", "edit_slots_bad", "attention_mode_sideways", "attention_until_2",
                 "attention_on_a_keyframe", "attention_true"]


@pytest.mark.parametrize("name", SCHEMA_ERRORS)
def test_the_schema_rejects_the_corpus_cases_that_are_schema_errors(name):
    raw = yaml.safe_load((CORPUS / f"{name}.yaml").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(raw, json_schema())


def test_a_refusal_while_loading_removes_only_the_folders_it_made(tmp_path, monkeypatch):
    """A checkpoint whose header passes but whose configs cannot be had offline is refused after the output folder
    was made: the folders this run made go again, a folder that was there before stays with what it holds."""
    from safetensors.torch import save_file

    save_file({"model.diffusion_model.conv_in.weight": torch.zeros(4, 4)}, tmp_path / "unet-only.safetensors")
    config = tmp_path / "job.yaml"
    config.write_text(f"model: {tmp_path / 'unet-only.safetensors'}\nprompts: [cat, kitten]\n")
    result = CliRunner().invoke(cli, ["run", str(config), "--out", str(tmp_path / "new" / "deeper" / "job")])
    assert result.exit_code == 2 and "model:" in result.output, result.output
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    result = CliRunner().invoke(cli, ["run", str(config), "--out", str(kept / "job")])
    assert result.exit_code == 2 and sorted(p.name for p in kept.iterdir()) == ["notes.txt"]
