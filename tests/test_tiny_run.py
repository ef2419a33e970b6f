"""The whole job end to end on the built-in tiny model."""

import json
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest
import torch

from morph.job import prepare_job, run_job
from morph.render.batch import render_batch
from morph.media.video import read_png


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    from morph.config.jobs import validate

    out = tmp_path_factory.mktemp("run")
    config = validate({"name": "walk", "model": "tiny", "prompts": ["a photo of a cat", "a drawing of a dog in kyoto"],
                       "frames": 6, "seed": 7, "height": 64, "width": 64, "num_inference_steps": 3,
                       "batch_size": 4, "device": "cpu", "output": str(out)})
    return config, run_job(config, quiet=True)


def test_run_writes_pngs_video_and_manifest(full_run):
    config, manifest = full_run
    out = config.output_dir
    assert sorted(p.name for p in (out / "frames").iterdir()) == [f"{i:05d}.png" for i in range(6)]
    assert read_png(out / "frames" / "00000.png").shape == (64, 64, 3)
    saved = json.loads((out / "manifest.json").read_text())
    assert saved == manifest
    assert [f["t"] for f in manifest["frames"]] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert manifest["seed"] == 7 and manifest["device"] == "cpu" and manifest["dtype"] == "float32"
    assert manifest["embedding_shape"] == [77, 32]
    assert manifest["video_frames"] == 6 and manifest["config"]["prompts"][0] == "a photo of a cat"
    assert set(manifest["versions"]) >= {"torch", "diffusers", "transformers"}
    assert manifest["timings"]["render_s"] > 0


def test_video_has_one_frame_per_render_at_20_fps_h264_yuv420p(full_run):
    config, _ = full_run
    video = str(config.output_dir / "walk.mp4")
    assert imageio_ffmpeg.count_frames_and_secs(video) == (6, 0.3)
    reader = imageio_ffmpeg.read_frames(video)
    meta = next(reader)
    assert meta["codec"] == "h264" and meta["fps"] == 20.0 and meta["pix_fmt"].startswith("yuv420p")
    assert sum(1 for _ in reader) == 6
    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", video],
                           capture_output=True, text=True).stderr
    assert "h264 (High)" in probe


def test_a_frame_rendered_alone_matches_the_full_run(full_run, tmp_path):
    config, _ = full_run
    alone = config.model_copy(update={"output": str(tmp_path / "alone")})
    manifest = run_job(alone, frames="3,5", quiet=True)
    assert manifest["video"] is None and manifest["rendered"] == 2
    assert sorted(p.name for p in (alone.output_dir / "frames").iterdir()) == ["00003.png", "00005.png"]
    for i in (3, 5):
        a = read_png(alone.output_dir / "frames" / f"{i:05d}.png").astype(int)
        b = read_png(config.output_dir / "frames" / f"{i:05d}.png").astype(int)
        assert np.abs(a - b).max() <= 1


def test_batch_size_does_not_change_the_pixels(full_run):
    config, _ = full_run
    job = prepare_job(config)
    conds = job.path.conditionings(list(range(6)))
    pipe, negative, latent = job.loaded.pipe, job.renderer.negative, job.renderer.latent
    one = torch.cat([render_batch(pipe, conds[i:i + 1], negative, latent, job.settings).images for i in range(6)])
    eight = render_batch(pipe, torch.cat([conds, conds[:2]]), negative, latent, job.settings).images[:6]
    assert (one.int() - eight.int()).abs().max() <= 1


def test_prompt_embeds_give_the_same_image_as_the_prompt_text(full_run):
    config, _ = full_run
    job = prepare_job(config)
    pipe = job.loaded.pipe
    ours = render_batch(pipe, job.path.conditionings([0]), job.renderer.negative, job.renderer.latent,
                        job.settings).images
    theirs = pipe(prompt="a photo of a cat", negative_prompt="", latents=job.renderer.latent, height=64, width=64,
                  num_inference_steps=3, guidance_scale=config.guidance_scale, output_type="np").images
    # our uint8 rounding on the device equals diffusers' own numpy -> PIL rounding of its float output
    assert np.array_equal(ours.numpy(), (theirs * 255).round().astype(np.uint8))


def test_strongly_different_conditionings_give_different_frames(full_run):
    config, _ = full_run
    job = prepare_job(config)
    negative = job.renderer.negative
    conds = torch.stack([negative * 0, negative * 0 + 3.0])
    images = render_batch(job.loaded.pipe, conds, negative, job.renderer.latent, job.settings).images.float()
    assert (images[0] - images[1]).abs().mean() > 0.25
