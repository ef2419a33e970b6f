"""The hires pass: frames at twice the size in the store, the video and the manifest; its base frames kept, so that
raising `strength` renders only the second pass (and another seed or negative prompt renders both); a batch equal to
lone renders, through the pipeline's UNet as it is after batch_size: auto's probe; on the toy model, a walk as smooth
as its base walk."""

import imageio_ffmpeg
import numpy as np
import torch

import morph.render.batch
from morph.config.jobs import validate
from morph.job import prepare_job, run_job
from morph.media.video import read_png
from morph.render.produce import _settings

WALK = {"model": "tiny", "prompts": ["a photo of a cat", "a drawing of a dog"], "frames": 2, "seed": 7,
        "height": 32, "width": 32, "num_inference_steps": 3, "batch_size": 2, "device": "cpu"}


def _frames(config) -> list[np.ndarray]:
    return [read_png(path) for path in sorted((config.output_dir / "frames").glob("*.png"))]


def test_hires_frames_are_twice_the_size_and_raising_strength_renders_only_the_second_pass(tmp_path, monkeypatch):
    first_passes = []  # the rows of every base render (the pipeline's denoising loop at the base size)
    denoise = morph.render.batch._denoise
    monkeypatch.setattr(morph.render.batch, "_denoise",
                        lambda pipe, conds, *args: first_passes.append(conds.shape[0]) or denoise(pipe, conds, *args))

    def walk(strength, output="walk", **changes):
        return validate({**WALK, "name": "walk", "output": str(tmp_path / output),
                         "hires": {"strength": strength, "upscale": "latent"}, **changes})

    low = walk(0.35)
    manifest = run_job(low, quiet=True)
    assert first_passes == [2] and manifest["rendered"] == 2
    assert [frame.shape for frame in _frames(low)] == [(64, 64, 3)] * 2
    assert (manifest["height"], manifest["width"]) == (64, 64) and manifest["hires"]["strength"] == 0.35
    assert next(imageio_ffmpeg.read_frames(str(low.output_dir / "walk.mp4")))["size"] == (64, 64)
    before = _frames(low)

    manifest = run_job(walk(0.7), quiet=True)  # the base frames are in the store: only the second pass renders
    assert first_passes == [2] and manifest["rendered"] == 2
    raised = _frames(low)
    assert all((a != b).any() for a, b in zip(before, raised))

    fresh = walk(0.7, "fresh")  # from base frames rendered now, the same bits as from stored ones
    run_job(fresh, quiet=True)
    assert first_passes == [2, 2]
    assert all(np.array_equal(a, b) for a, b in zip(raised, _frames(fresh)))

    # other base frames, rendered again, not reused: the job's seed (its render identity, with its negative prompt),
    # or one keyframe's negative prompt (walking along, as keyframes' seeds do: the rows' own negatives and latents)
    cat, dog = WALK["prompts"]
    for changes in ({"seed": 8}, {"prompts": [{"prompt": cat, "negative_prompt": "blurry"}, dog]}):
        first_passes.clear()
        run_job(walk(0.7, **changes), quiet=True)
        assert first_passes == [2], changes


class Swapped(torch.nn.Module):
    """Takes the pipeline's UNet's place as torch.compile's wrapper does after batch_size: auto's probe, counting
    the calls that reach it."""

    def __init__(self, unet):
        super().__init__()
        self.inner, self.calls = unet, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)


def test_a_batch_of_hires_frames_equals_each_frame_rendered_alone_through_the_unet_after_the_probe(tmp_path):
    """Each frame's second pass takes its own prompt, negative and guidance (walking here), as its first does, through
    the pipeline's UNet as it is after the probe (compiled there); the probe runs one step of each pass."""
    keyframes = [{"prompt": "a photo of a cat", "guidance_scale": 3.0, "negative_prompt": "blurry"},
                 {"prompt": "a drawing of a dog", "guidance_scale": 9.0, "negative_prompt": "dark"}]
    config = validate({**WALK, "prompts": keyframes, "frames": 3, "output": str(tmp_path / "walk"),
                       "hires": {"strength": 0.5, "upscale": "lanczos", "num_inference_steps": 4}})
    job = prepare_job(config.model_copy(update={"batch_size": 3}))
    pipe = job.loaded.pipe
    calls = []  # every call of the UNet itself
    pipe.unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    job.renderer.probe(1)
    assert len(calls) == 2  # one step of the first pass, one of the second (2 of a schedule of 2)
    pipe.unet = Swapped(pipe.unet)
    together = [image for _, image, _ in job.frames([0, 1, 2])]
    assert pipe.unet.calls == 3 + 2  # both passes through the UNet now in the pipeline: 3 steps, then 2 of 4
    alone = prepare_job(config.model_copy(update={"batch_size": 1}))
    for i, image in enumerate(together):
        [(_, lone, _)] = alone.frames([i])
        assert image.shape == (64, 64, 3)
        assert np.abs(image.astype(int) - lone.astype(int)).max() <= 2  # batch noise only
    assert (together[1] != together[0]).any() and (together[1] != together[2]).any()


def test_a_job_without_hires_keeps_its_config_hash_and_frame_size():
    config = validate({**WALK, "name": "walk"})
    hires = validate({**WALK, "name": "walk", "hires": {}})
    assert "hires" not in config.pixel_keys() and "hires" not in _settings(config)
    assert hires.pixel_keys()["hires"]["scale"] == 2.0 and _settings(hires)["hires"] == [2.0, "latent"]
    assert (config.frame_size(), hires.frame_size()) == ((32, 32), (64, 64))  # the disk estimate's, the platforms'
    assert validate({**WALK, "hires": {"scale": 1.5}}).hires.size(36, 32) == (56, 48)  # multiples of 8


def test_on_the_toy_the_hires_walk_has_no_new_storms(tmp_path):
    """The hires walk's smoothness (1 - Gini of its neighbour changes) is not below the base walk's by more than 0.05,
    over the same frames. (On the toy it comes out higher: the second pass adds change to the calmest steps.)"""
    walk = {"model": "toy", "prompts": ["a red circle", "a blue square"], "frames": 8, "num_inference_steps": 6,
            "guidance_scale": 5.0, "height": 32, "width": 32, "batch_size": 8, "device": "cpu"}
    base = run_job(validate({**walk, "name": "base", "output": str(tmp_path / "base")}), quiet=True)
    hires = run_job(validate({**walk, "name": "hires", "output": str(tmp_path / "hires"),
                              "hires": {"strength": 0.35}}), quiet=True)
    assert (hires["height"], base["height"]) == (64, 32) and hires["frame_count"] == base["frame_count"]
    smoothness = [run["analysis"]["summary"]["smoothness"] for run in (base, hires)]
    assert smoothness[1] >= smoothness[0] - 0.05, smoothness
