"""The trained toy model: shipped weights, the normal loading path, drawing what it is told."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from morph.models.pipeline import load_model
from morph.analysis.toy_quality import ground_truth_accuracy, render_captions
from morph.models.toy.scenes import measure, sample_scenes
from morph.models.toy.train import DEFAULT_OUT, train


@pytest.fixture(scope="module")
def toy():
    return load_model("toy", torch.device("cpu"), torch.float32, None, False)


def test_the_package_ships_the_weights_under_10_mb():
    files = [p for p in DEFAULT_OUT.rglob("*") if p.is_file()]
    assert (DEFAULT_OUT / "model_index.json").exists()
    assert {p.suffix for p in files} >= {".safetensors", ".json"}
    assert sum(p.stat().st_size for p in files) <= 10 * 1024 * 1024


def test_toy_loads_through_the_normal_model_path(toy):
    pipe = toy.pipe
    assert type(pipe).__name__ == "StableDiffusionPipeline" and toy.location == str(DEFAULT_OUT)
    assert pipe.tokenizer.model_max_length == 77 and pipe.text_encoder.config.hidden_size == 64
    assert pipe.unet.config.cross_attention_dim == 64 and pipe.vae_scale_factor == 8
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    assert {pipe.unet.dtype, pipe.vae.dtype, pipe.text_encoder.dtype} == {torch.float32}


def test_a_plain_diffusers_call_works():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(DEFAULT_OUT)
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle", num_inference_steps=4, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.shape == (64, 64, 3)


@pytest.mark.parametrize("colour, shape", [("red", "circle"), ("blue", "square"), ("green", "triangle"),
                                           ("yellow", "circle"), ("purple", "square")])
def test_renders_show_the_colour_named(toy, colour, shape):
    image = render_captions(toy.pipe, [f"a large {colour} {shape}"], [123], steps=15, guidance=5.0)[0]
    assert measure(image)["colour"] == colour


def test_the_measure_is_right_on_drawn_ground_truth():
    assert ground_truth_accuracy() == {"colour": 1.0, "shape": 1.0}
    images, captions = sample_scenes(32, torch.Generator().manual_seed(5))
    for image, text in zip(images, captions):
        measured = measure(((image + 1) / 2).permute(1, 2, 0))
        assert text.endswith(f"{measured['colour']} {measured['shape']}"), (text, measured)


def test_a_short_training_run_is_deterministic(tmp_path):
    for run in ("a", "b"):
        train(tmp_path / run, vae_steps=2, unet_steps=2, batch=4, dataset=16, vae_batch=2)
    for part in ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                 "text_encoder/model.safetensors"):
        a, b = load_file(tmp_path / "a" / part), load_file(tmp_path / "b" / part)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    assert Path(tmp_path / "a" / "model_index.json").read_text() == Path(tmp_path / "b" / "model_index.json").read_text()


def test_float16_renders_end_to_end_and_stay_close_to_float32(tmp_path, monkeypatch):
    """The dtype users get on CUDA, exercised on the CPU: weights, embeddings and latents all in half."""
    from morph.config.jobs import validate
    from morph.job import run_job
    from morph.analysis.metrics import compare
    from morph.media.video import read_png

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on the GPU machine: still the CPU's check

    frames = {}
    for dtype in ("float16", "float32"):
        config = validate({"name": dtype, "model": "toy", "prompts": ["a red circle", "a blue square"], "frames": 3,
                           "num_inference_steps": 10, "guidance_scale": 5.0, "dtype": dtype, "device": "cpu",
                           "output": str(tmp_path / dtype)})
        manifest = run_job(config, quiet=True)
        assert manifest["dtype"] == dtype
        frames[dtype] = [torch.from_numpy(read_png(config.output_dir / "frames" / f"{i:05d}.png")) for i in range(3)]
    for half, full in zip(frames["float16"], frames["float32"]):
        assert compare(half, full)["psnr"] > 35
