"""Model families: SD 1.x, SD 2.x (v-prediction) and SDXL (two encoders, pooled vector) on their tiny shapes,
the family read from the files; a VAE override; textual-inversion embeddings."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from conftest import tiny_job
from morph.cli import cli
from morph.config.yaml_file import load_config
from morph.prompts.encode import prompt_encoder
from morph.models.family import family_of, pipeline_inputs, vae_decodes_in_float32
from morph.golden import check_golden, save_golden
from morph.job import run_job
from morph.prompts.path import WalkPath
from morph.models.pipeline import load_model
from morph.prompts.latent import shared_latent
from morph.render.batch import RenderSettings, render_batch
from morph.models.tiny import XL_HIDDEN_2, build_sdxl_pipeline
from morph.media.video import read_png

SETTINGS = RenderSettings(64, 64, 3, 7.5, 7)


def frames(manifest, out):
    return [read_png(out / "frames" / r["file"]) for r in manifest["frames"]]


@pytest.mark.parametrize("model, family, prediction, shape, pooled", [
    ("tiny", "sd1", "epsilon", [77, 32], None),
    ("tiny-sd2", "sd2", "v_prediction", [77, 32], None),
    ("tiny-sdxl", "sdxl", "epsilon", [77, 32 + XL_HIDDEN_2], XL_HIDDEN_2),
])
def test_every_family_renders_a_walk(tmp_path, model, family, prediction, shape, pooled):
    manifest = run_job(load_config(tiny_job(tmp_path, model=model, frames=4)), quiet=True)
    assert (manifest["family"], manifest["prediction_type"]) == (family, prediction)
    assert manifest["embedding_shape"] == shape and manifest["pooled_dim"] == pooled
    assert manifest["video_frames"] == 4
    pictures = frames(manifest, tmp_path / "out" / "job")
    assert not np.array_equal(pictures[0], pictures[-1])


@pytest.fixture(scope="module")
def xl():
    return load_model("tiny-sdxl", torch.device("cpu"), torch.float32, None, False).pipe


def test_an_sdxl_frame_is_what_the_stock_pipeline_renders_from_the_text(xl):
    encoder = prompt_encoder(xl)
    latent = shared_latent(xl, SETTINGS.seed, 64, 64)
    ours = render_batch(xl, encoder.text("a photo of a cat")[None], encoder.negative(""), latent, SETTINGS).images
    stock = xl(prompt="a photo of a cat", latents=latent, num_inference_steps=3, guidance_scale=7.5, height=64,
               width=64, generator=torch.Generator().manual_seed(SETTINGS.seed), output_type="pt").images
    stock = (stock.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().to(torch.uint8)
    assert (ours.int() - stock.int()).abs().max() <= 1  # float rounding only
    assert torch.equal(encoder.negative(""), torch.zeros_like(encoder.text("")))  # SDXL's empty negative


def test_the_pooled_vector_walks_with_the_tokens(xl):
    encoder = prompt_encoder(xl)
    keyframes = torch.stack([encoder.text("a photo of a cat"), encoder.text("a drawing of a dog in kyoto")])
    assert keyframes.shape == (2, 78, 32 + XL_HIDDEN_2)  # 77 token rows + the pooled row
    assert torch.count_nonzero(keyframes[:, -1, XL_HIDDEN_2:]) == 0  # the pooled row's padding
    middle = WalkPath(keyframes, [2], "slerp").conditionings([1])
    held = middle.clone()
    held[0, -1] = keyframes[0, -1]  # the same frame with the pooled vector held at the first keyframe
    assert not torch.equal(middle[0, -1], keyframes[0, -1]) and not torch.equal(middle[0, -1], keyframes[1, -1])
    inputs = pipeline_inputs(xl, middle, encoder.negative("")[None])
    assert inputs["pooled_prompt_embeds"].shape == (1, XL_HIDDEN_2) and inputs["prompt_embeds"].shape == (1, 77, 80)
    latent = shared_latent(xl, 0, 64, 64)
    moving = render_batch(xl, middle, encoder.negative(""), latent, SETTINGS).images
    still = render_batch(xl, held, encoder.negative(""), latent, SETTINGS).images
    assert not torch.equal(moving, still)


def test_an_sdxl_edit_changes_the_word_in_both_encoders_and_the_pooled_vector(xl):
    encoder = prompt_encoder(xl)
    base, edited = encoder.text("a photo of a cat"), encoder.edit("a photo of a cat", "cat", {"dog": 1.0}, None, None)
    changed = (edited != base).any(dim=1).nonzero().flatten().tolist()
    assert changed == [5, 77]  # the word's slot (BOS = 0) and the pooled row
    dog = encoder.text("a photo of a dog")
    assert torch.equal(edited[5], dog[5]) and torch.equal(edited[77], dog[77])


def test_the_family_comes_from_the_files_not_the_name(tmp_path):
    folder = tmp_path / "my-model"
    build_sdxl_pipeline().save_pretrained(folder)
    from_folder = run_job(load_config(tiny_job(tmp_path, "folder", model=str(folder), frames=3)), quiet=True)
    built_in = run_job(load_config(tiny_job(tmp_path, "built", model="tiny-sdxl", frames=3)), quiet=True)
    assert from_folder["family"] == "sdxl"
    # the same weights; loading through from_pretrained moves the text encoding by ~1e-7, so a pixel by 1/255
    pairs = zip(frames(from_folder, tmp_path / "out" / "folder"), frames(built_in, tmp_path / "out" / "built"))
    assert all(np.abs(a.astype(int) - b).max() <= 2 for a, b in pairs)


def test_a_pipeline_morph_does_not_render_is_one_line(tmp_path):
    folder = tmp_path / "flux"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    result = CliRunner().invoke(cli, ["run", str(tiny_job(tmp_path, model=str(folder))), "--quiet"])
    assert result.exit_code == 2 and "is a FluxPipeline; morph renders Stable Diffusion 1.x, 2.x and XL" in result.output


def test_vae_decodes_in_float32_only_for_sdxl_in_half_precision():
    class Config(dict):
        __getattr__ = dict.get

    class Vae:
        def __init__(self, dtype, upcast):
            self.dtype, self.config = dtype, Config(force_upcast=upcast)

    class Pipe:
        def __init__(self, xl, dtype, upcast=True):
            self.text_encoder_2 = object() if xl else None
            self.text_encoder = type("E", (), {"config": Config(hidden_act="quick_gelu")})()
            self.vae = Vae(dtype, upcast)

    assert vae_decodes_in_float32(Pipe(True, torch.float16))
    assert not vae_decodes_in_float32(Pipe(True, torch.float16, upcast=False))  # an fp16-fix VAE
    assert not vae_decodes_in_float32(Pipe(True, torch.float32))
    assert not vae_decodes_in_float32(Pipe(False, torch.float16))
    assert family_of(Pipe(True, torch.float16)) == "sdxl" and family_of(Pipe(False, torch.float16)) == "sd1"


def test_a_vae_folder_replaces_the_models_and_a_missing_file_is_one_line(tmp_path, xl):
    xl.vae.save_pretrained(tmp_path / "vae")
    with_vae = run_job(load_config(tiny_job(tmp_path, "v", model="tiny-sdxl", frames=3, vae=str(tmp_path / "vae"))),
                       quiet=True)
    plain = run_job(load_config(tiny_job(tmp_path, "p", model="tiny-sdxl", frames=3)), quiet=True)
    assert with_vae["config"]["vae"] == str(tmp_path / "vae")
    assert all(np.array_equal(a, b) for a, b in zip(frames(with_vae, tmp_path / "out" / "v"),
                                                    frames(plain, tmp_path / "out" / "p")))  # the same weights
    result = CliRunner().invoke(cli, ["run", str(tiny_job(tmp_path, "f", vae="fix.safetensors")), "--quiet"])
    assert result.exit_code == 2 and f"vae: '{tmp_path / 'fix.safetensors'}' is not a file" in result.output


@pytest.fixture
def sparkle(tmp_path):
    path = tmp_path / "sparkle.safetensors"
    save_file({"<sparkle>": torch.randn(1, 32, generator=torch.Generator().manual_seed(1)) * 20}, str(path))
    return path


def test_a_textual_inversion_token_is_one_slot(sparkle):
    result = CliRunner().invoke(cli, ["tokens", "a photo of a <sparkle>", "--model", "tiny",
                                      "--embedding", str(sparkle)])
    assert result.exit_code == 0, result.output
    assert "  5  <sparkle>            <sparkle>" in result.output and "  6  <|endoftext|>" in result.output


def test_a_textual_inversion_token_changes_the_picture_in_prompts_expressions_and_edits(tmp_path, sparkle):
    def run(name, **keys):
        manifest = run_job(load_config(tiny_job(tmp_path, name, frames=2, embeddings=[str(sparkle)], **keys)),
                           quiet=True)
        return frames(manifest, tmp_path / "out" / name)

    cat = run("cat", prompts=["a photo of a cat", "a photo of a cat"])
    token = run("token", prompts=["a photo of a <sparkle>", "a photo of a <sparkle>"])
    expression = run("expr", define={"s": "a photo of a <sparkle>", "c": "a photo of a cat"}, prompts=["c", "s"])
    edit = run("edit", prompts=None, base="a photo of a cat", edit={"word": "cat", "prompts": ["cat", "<sparkle>"]})
    assert not np.array_equal(cat[0], token[0])
    assert np.array_equal(expression[0], cat[0]) and np.array_equal(expression[1], token[0])
    assert np.array_equal(edit[0], cat[0]) and not np.array_equal(edit[1], cat[0])


def test_sdxl_textual_inversion_loads_into_both_encoders(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file({"clip_l": torch.randn(1, 32), "clip_g": torch.randn(1, XL_HIDDEN_2)}, str(path))
    manifest = run_job(load_config(tiny_job(tmp_path, model="tiny-sdxl", frames=2, embeddings=[
        {"path": str(path), "token": "<x>"}], prompts=["a photo of a cat", "a photo of a <x>"])), quiet=True)
    pictures = frames(manifest, tmp_path / "out" / "job")
    assert not np.array_equal(pictures[0], pictures[1])


def test_embeddings_that_do_not_fit_are_one_line(tmp_path):
    pickle = tmp_path / "old.pt"
    pickle.write_bytes(b"not read")
    wide = tmp_path / "wide.safetensors"
    save_file({"<wide>": torch.randn(1, 768)}, str(wide))
    xl_file = tmp_path / "xl.safetensors"
    save_file({"clip_l": torch.randn(1, 32), "clip_g": torch.randn(1, 48)}, str(xl_file))
    for path, expected in [(pickle, "no pickle files"), (wide, "768 channels"), (xl_file, "made for SDXL")]:
        result = CliRunner().invoke(cli, ["run", str(tiny_job(tmp_path, embeddings=[str(path)])), "--quiet"])
        assert result.exit_code == 2 and expected in result.output, result.output


def test_goldens_work_for_sdxl(tmp_path):
    config = load_config(tiny_job(tmp_path, model="tiny-sdxl", frames=4))
    save_golden(config, [0, 3], tmp_path / "golden")
    result = check_golden(config, tmp_path / "golden", "exact", report_dir=tmp_path / "report")
    assert result.passed and len(result.frames) == 2


@pytest.fixture(scope="module")
def single_file(tmp_path_factory):
    """The tiny SD 1.x pipeline as a diffusers folder, and the same weights as one original-layout checkpoint."""
    from morph.models.ldm_checkpoint import ldm_checkpoint
    from morph.models.tiny import build_pipeline

    folder = tmp_path_factory.mktemp("single")
    pipe = build_pipeline()
    pipe.save_pretrained(folder / "tiny")
    checkpoint = ldm_checkpoint(pipe)
    save_file(checkpoint, str(folder / "tiny.safetensors"))
    save_file({k: v for k, v in checkpoint.items() if k.startswith("first_stage_model.")},
              str(folder / "vae.safetensors"))
    return folder


def test_a_single_file_checkpoint_gives_the_frames_of_the_folder_it_came_from(tmp_path, single_file):
    from_file = run_job(load_config(tiny_job(tmp_path, "file", model=str(single_file / "tiny.safetensors"),
                                             configs_from=str(single_file / "tiny"), frames=3)), quiet=True)
    from_folder = run_job(load_config(tiny_job(tmp_path, "folder", model=str(single_file / "tiny"), frames=3)),
                          quiet=True)
    assert from_file["family"] == "sd1" and from_file["model"]["location"].endswith("tiny.safetensors")
    pairs = zip(frames(from_file, tmp_path / "out" / "file"), frames(from_folder, tmp_path / "out" / "folder"))
    assert all(np.array_equal(a, b) for a, b in pairs)


def test_a_single_file_vae_replaces_the_models(tmp_path, single_file):
    with_vae = run_job(load_config(tiny_job(tmp_path, "v", model=str(single_file / "tiny"), frames=2,
                                            vae=str(single_file / "vae.safetensors"),
                                            configs_from=str(single_file / "tiny"))), quiet=True)
    plain = run_job(load_config(tiny_job(tmp_path, "p", model=str(single_file / "tiny"), frames=2)), quiet=True)
    pairs = zip(frames(with_vae, tmp_path / "out" / "v"), frames(plain, tmp_path / "out" / "p"))
    assert all(np.array_equal(a, b) for a, b in pairs)  # the same VAE weights, read from the single file


def test_a_single_file_can_be_tried_offline_with_the_written_example(tmp_path):
    result = subprocess.run([sys.executable, "-m", "morph.models.ldm_checkpoint", str(tmp_path / "try")], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and f"morph run {tmp_path / 'try' / 'single_file.yaml'}" in result.stdout
    done = CliRunner().invoke(cli, ["run", str(tmp_path / "try" / "single_file.yaml"), "--out", str(tmp_path / "out"),
                                    "--quiet"])
    assert done.exit_code == 0, done.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["model"]["location"] == str(tmp_path / "try" / "tiny.safetensors") and manifest["rendered"] == 12


def test_a_pickle_checkpoint_is_refused_without_the_opt_in(tmp_path, single_file):
    pickle = tmp_path / "old.ckpt"
    torch.save({"state_dict": {}}, pickle)
    result = CliRunner().invoke(cli, ["run", str(tiny_job(tmp_path, model=str(pickle))), "--quiet"])
    assert result.exit_code == 2 and "is a pickle checkpoint" in result.output and "allow_pickle: true" in result.output


def test_a_single_file_without_configs_offline_says_how_to_get_them(tmp_path, single_file):
    result = CliRunner().invoke(cli, ["run", str(tiny_job(tmp_path, model=str(single_file / "tiny.safetensors"))),
                                      "--quiet"])
    assert result.exit_code == 2 and "set configs_from:" in result.output, result.output


@pytest.mark.parametrize("example, model, family", [("sdxl_cat_kitten.yaml", "tiny-sdxl", "sdxl"),
                                                     ("cat_kitten.yaml", "tiny-sd2", "sd2")])
def test_the_family_examples_run_on_the_built_in_shapes(tmp_path, example, model, family):
    from pathlib import Path

    config = Path(__file__).parent.parent / "configs" / example
    result = CliRunner().invoke(cli, ["run", str(config), "--model", model, "--frames", "0,1", "--out",
                                      str(tmp_path / "out"), "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["family"] == family


def test_sdxl_in_half_precision_decodes_in_float32_unless_the_vae_is_made_for_float16(tmp_path, xl):
    half = run_job(load_config(tiny_job(tmp_path, "half", model="tiny-sdxl", frames=2, dtype="float16")), quiet=True)
    assert (half["dtype"], half["vae_decode"]) == ("float16", "float32")
    full = run_job(load_config(tiny_job(tmp_path, "full", model="tiny-sdxl", frames=2)), quiet=True)
    assert full["vae_decode"] == "float32"
    pairs = zip(frames(half, tmp_path / "out" / "half"), frames(full, tmp_path / "out" / "full"))
    assert all(np.abs(a.astype(int) - b).max() <= 16 for a, b in pairs)  # float16 against float32
    config = {k: v for k, v in xl.vae.config.items() if not k.startswith("_")}
    fixed = type(xl.vae).from_config({**config, "force_upcast": False})  # as the fp16-fix VAE's config says
    fixed.load_state_dict(xl.vae.state_dict())
    fixed.save_pretrained(tmp_path / "fp16-vae")
    made_for_half = run_job(load_config(tiny_job(tmp_path, "fix", model="tiny-sdxl", frames=2, dtype="float16",
                                                 vae=str(tmp_path / "fp16-vae"))), quiet=True)
    assert made_for_half["vae_decode"] == "float16"
