"""Batching and the shared latent, checked with a fake pipeline that records what it is given."""

from types import SimpleNamespace

import numpy as np
import torch

from morph.render import RenderSettings, render_frames, shared_latent, to_uint8


class FakePipe:
    """Stands in for StableDiffusionPipeline: records each call, returns the batch's mean embedding as pixels."""

    vae_scale_factor = 8

    def __init__(self, dtype=torch.float32):
        self.unet = SimpleNamespace(config=SimpleNamespace(in_channels=4), dtype=dtype)
        self.device = torch.device("cpu")
        self.calls = []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        batch = kwargs["prompt_embeds"].shape[0]
        value = kwargs["prompt_embeds"].float().mean(dim=(1, 2)).view(-1, 1, 1, 1)
        images = value.expand(batch, kwargs["height"], kwargs["width"], 3).numpy()
        return SimpleNamespace(images=images, nsfw_content_detected=None)


SETTINGS = RenderSettings(height=16, width=24, num_inference_steps=2, guidance_scale=7.5, seed=3)


def _render(pipe, n_frames, batch_size):
    conds = torch.arange(n_frames, dtype=torch.float32).view(-1, 1, 1).expand(-1, 5, 6) / n_frames
    latent = shared_latent(pipe, SETTINGS.seed, SETTINGS.height, SETTINGS.width)
    negative = torch.zeros(5, 6)
    frames = list(render_frames(pipe, lambda idx: conds[idx], list(range(n_frames)), negative, latent, SETTINGS,
                                batch_size))
    return frames, latent


def test_frames_come_in_batches_and_in_order():
    pipe = FakePipe()
    frames, _ = _render(pipe, n_frames=10, batch_size=4)
    assert [c["prompt_embeds"].shape[0] for c in pipe.calls] == [4, 4, 2]
    assert [i for i, _, _ in frames] == list(range(10))
    assert [round(float(image[0, 0, 0]) * 10) for _, image, _ in frames] == list(range(10))


def test_every_frame_gets_the_same_starting_latent_and_seed():
    pipe = FakePipe()
    _, latent = _render(pipe, n_frames=7, batch_size=3)
    assert latent.shape == (1, 4, 2, 3)
    for call in pipe.calls:
        assert all(torch.equal(frame_latent, latent[0]) for frame_latent in call["latents"])
        assert len(call["generator"]) == call["latents"].shape[0]
        assert {g.initial_seed() for g in call["generator"]} == {SETTINGS.seed}
        assert call["negative_prompt_embeds"].shape == call["prompt_embeds"].shape
        assert call["num_inference_steps"] == 2 and call["guidance_scale"] == 7.5
        assert call["output_type"] == "np"


def test_shared_latent_depends_only_on_the_seed():
    pipe = FakePipe()
    assert torch.equal(shared_latent(pipe, 5, 64, 64), shared_latent(pipe, 5, 64, 64))
    assert not torch.equal(shared_latent(pipe, 5, 64, 64), shared_latent(pipe, 6, 64, 64))
    assert shared_latent(pipe, 5, 64, 64).dtype == torch.float32


def test_inputs_are_cast_to_the_pipeline_dtype():
    pipe = FakePipe(dtype=torch.float16)
    _render(pipe, n_frames=2, batch_size=2)
    call = pipe.calls[0]
    for key in ("prompt_embeds", "negative_prompt_embeds", "latents"):
        assert call[key].dtype == torch.float16, key


def test_to_uint8_rounds_and_clips():
    image = np.array([[[0.0, 0.5, 1.2]]], dtype=np.float32)
    assert to_uint8(image).tolist() == [[[0, 128, 255]]]
