"""Batching, the shared latent, padding and the out-of-memory back-off, checked with a fake pipeline."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from diffusers.image_processor import VaeImageProcessor

import morph.render.batch
from morph.errors import MorphError
from morph.prompts.latent import shared_latent
from morph.render.batch import BatchRenderer, HostCopy, RenderSettings, per_frame_guidance, render_batch, \
    to_uint8


class FakeVae:
    """Decodes latents [B, 4, h, w] to images [B, 3, 8h, 8w] in -1..1 whose pixels are the latents' mean."""

    config = SimpleNamespace(scaling_factor=1.0)
    dtype = torch.float32

    def decode(self, latents, return_dict):
        value = latents.float().mean(dim=1, keepdim=True).repeat_interleave(8, 2).repeat_interleave(8, 3)
        return (value.expand(-1, 3, -1, -1) * 2 - 1,)


class FakePipe:
    """Stands in for StableDiffusionPipeline: records each call; the latents are the batch's mean embedding.

    With `max_batch`, a call with more frames raises torch's out-of-memory error, as CUDA would.
    """

    vae_scale_factor = 8
    image_processor = VaeImageProcessor()

    def __init__(self, dtype=torch.float32, max_batch=None):
        self.unet = SimpleNamespace(config=SimpleNamespace(in_channels=4), dtype=dtype)
        self.vae = FakeVae()
        self.device = torch.device("cpu")
        self.max_batch = max_batch
        self.calls = []

    def __call__(self, **kwargs):
        batch = kwargs["prompt_embeds"].shape[0]
        if self.max_batch is not None and batch > self.max_batch:
            raise torch.OutOfMemoryError(f"CUDA out of memory (fake, batch {batch})")
        self.calls.append(kwargs)
        assert kwargs["output_type"] == "latent"
        value = kwargs["prompt_embeds"].float().mean(dim=(1, 2)).view(-1, 1, 1, 1)
        latents = value.expand(batch, 4, kwargs["height"] // 8, kwargs["width"] // 8)
        return SimpleNamespace(images=latents, nsfw_content_detected=None)

    def run_safety_checker(self, images, device, dtype):
        return images, None


SETTINGS = RenderSettings(height=16, width=24, num_inference_steps=2, guidance_scale=7.5, seed=3)


def _render(pipe, n_frames, batch_size, fixed_shape=False):
    conds = torch.arange(n_frames, dtype=torch.float32).view(-1, 1, 1).expand(-1, 5, 6) / n_frames
    latent = shared_latent(pipe, SETTINGS.seed, SETTINGS.height, SETTINGS.width)
    renderer = BatchRenderer(pipe, lambda idx: conds[idx], torch.zeros(5, 6), latent, SETTINGS, batch_size,
                             fixed_shape=fixed_shape)
    groups = [list(range(start, min(start + batch_size, n_frames))) for start in range(0, n_frames, batch_size)]
    frames = [(i, image, flag) for chunk, batch in renderer.batches(groups)
              for i, image, flag in zip(chunk, HostCopy(batch.images).wait(), batch.nsfw)]
    return frames, latent, renderer


def test_frames_come_in_batches_and_in_order():
    pipe = FakePipe()
    frames, _, _ = _render(pipe, n_frames=10, batch_size=4)
    assert [c["prompt_embeds"].shape[0] for c in pipe.calls] == [4, 4, 2]
    assert [i for i, _, _ in frames] == list(range(10))
    assert [round(float(image[0, 0, 0]) / 255 * 10) for _, image, _ in frames] == list(range(10))
    assert frames[0][1].dtype == np.uint8 and frames[0][1].shape == (16, 24, 3)


def test_fixed_shape_pads_the_last_batch_and_drops_the_padding():
    pipe = FakePipe()
    frames, _, _ = _render(pipe, n_frames=10, batch_size=4, fixed_shape=True)
    assert [c["prompt_embeds"].shape[0] for c in pipe.calls] == [4, 4, 4]
    last = pipe.calls[-1]["prompt_embeds"]
    assert torch.equal(last[2], last[3]) and torch.equal(last[1], last[3])  # frame 9 repeated
    assert [i for i, _, _ in frames] == list(range(10))


def test_every_frame_gets_the_same_starting_latent_and_seed():
    pipe = FakePipe()
    _, latent, _ = _render(pipe, n_frames=7, batch_size=3)
    assert latent.shape == (1, 4, 2, 3)
    for call in pipe.calls:
        assert all(torch.equal(frame_latent, latent[0]) for frame_latent in call["latents"])
        assert len(call["generator"]) == call["latents"].shape[0]
        assert {g.initial_seed() for g in call["generator"]} == {SETTINGS.seed}
        assert call["negative_prompt_embeds"].shape == call["prompt_embeds"].shape
        assert call["num_inference_steps"] == 2 and call["guidance_scale"] == 7.5
        assert call["output_type"] == "latent"


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


def test_out_of_memory_halves_the_batch_once_and_gives_the_frames_of_the_smaller_batch():
    small = FakePipe()
    expected, _, _ = _render(small, n_frames=9, batch_size=2)
    pipe = FakePipe(max_batch=3)
    with pytest.warns(UserWarning, match="out of GPU memory in a batch of 8 frames; continuing with batch_size 4") \
            as warned:
        frames, _, renderer = _render(pipe, n_frames=9, batch_size=8)
    assert len(warned) == 1  # said once, although it backed off twice
    assert renderer.batch_size == 2 and len(renderer.backoffs) == 2
    assert [c["prompt_embeds"].shape[0] for c in pipe.calls] == [2, 2, 2, 2, 1]
    assert [i for i, _, _ in frames] == list(range(9))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(frames, expected, strict=True))


def test_out_of_memory_at_batch_1_is_one_clear_line():
    with pytest.raises(MorphError, match="out of GPU memory rendering a single 24 x 16 frame"), \
            pytest.warns(UserWarning, match="continuing with batch_size 1"):
        _render(FakePipe(max_batch=0), n_frames=2, batch_size=2)


def test_to_uint8_rounds_and_clips():
    image = torch.tensor([[[0.0, 0.5, 1.2]]])
    assert to_uint8(image).tolist() == [[[0, 128, 255]]]
    assert to_uint8(torch.tensor([0.5], dtype=torch.float16)).tolist() == [128]


def test_a_half_precision_decode_that_fails_in_a_float32_vae_is_not_decoded_again(monkeypatch):
    """A float32 VAE has nothing better to offer: the frame is broken, not re-decoded."""
    monkeypatch.setattr(morph.render.batch, "decode", lambda vae, latents: torch.full((latents.shape[0], 3, 16, 24), -1.0))
    made = []
    batch = render_batch(FakePipe(), torch.ones(2, 5, 6), torch.zeros(5, 6), torch.zeros(1, 4, 2, 3), SETTINGS,
                         float32_vae=lambda: made.append(1))
    assert batch.broken == [True, True] and batch.redecoded == [False, False] and made == []


def test_the_probe_renders_one_step_decoded_as_real_batches_are_with_what_walks_along(monkeypatch):
    seen = []
    monkeypatch.setattr(morph.render.batch, "render_batch",
                        lambda pipe, conds, negative, latent, settings, float32_vae=None, guidance=None, loras=None,
                        lora_rows=None: seen.append((conds.shape[0], settings.num_inference_steps, float32_vae,
                                                     loras, negative, guidance.tolist(), lora_rows.tolist())))
    pipe, loras = FakePipe(), object()
    walking = {"negative": torch.ones(2, 5, 6), "guidance": torch.tensor([4.0, 4.0]),
               "loras": torch.tensor([[0.25], [0.25]])}
    renderer = BatchRenderer(pipe, lambda idx: torch.zeros(len(idx), 5, 6), torch.zeros(5, 6),
                             shared_latent(pipe, 0, 16, 24), SETTINGS, 1, loras=loras,
                             inputs_for=lambda idx: walking if idx == [0, 0] else {})
    renderer.probe(2)
    # SDXL's real batches decode in a float32 VAE, and LoRA layers take memory (a walking strength's most): so must
    # the probe, or it measures too little
    assert seen == [(2, 1, renderer._float32_vae, loras, walking["negative"], [4.0, 4.0], [[0.25], [0.25]])]
    assert renderer.settings == SETTINGS


class Unet(torch.nn.Module):
    def forward(self, x):
        return (x * 2,)


def test_walking_guidance_leaves_a_compiled_unet_as_it_found_it():
    unet = torch.compile(Unet(), backend="eager")
    own = vars(unet)["forward"]
    pipe = SimpleNamespace(unet=unet, device=torch.device("cpu"))
    unet.dtype = torch.float32
    x = torch.ones(4, 1, 1, 1)
    with per_frame_guidance(pipe, torch.tensor([2.0, 4.0])) as scale:
        assert scale == 4.0 and unet(x)[0][2:].tolist() == [[[[2.0]]], [[[2.0]]]]  # u + (g / G)(c - u) with c = u
    assert vars(unet)["forward"] is own
    assert unet(x)[0].sum().item() == 8.0  # the next batch still runs


def test_a_copy_from_another_gpu_waits_on_that_gpus_stream(monkeypatch):
    """On cuda:1 the copy and its event belong to cuda:1's stream, not the current device's."""
    calls = {}

    class Images:
        device, shape, dtype = torch.device("cuda", 1), (2, 4, 4, 3), torch.uint8

    class Host:
        def copy_(self, source, non_blocking):
            calls["copy"] = (source, non_blocking, calls.get("stream_entered"))

    class Event:
        def record(self, stream=None):
            calls["record"] = stream

    class Stream:
        pass

    stream = Stream()

    class StreamContext:
        def __init__(self, given):
            calls["context"] = given

        def __enter__(self):
            calls["stream_entered"] = calls["context"]

        def __exit__(self, *exc):
            calls.pop("stream_entered")

    monkeypatch.setattr(torch, "empty", lambda *args, **kwargs: Host())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: calls.setdefault("device", device) and stream)
    monkeypatch.setattr(torch.cuda, "stream", StreamContext)
    monkeypatch.setattr(torch.cuda, "Event", Event)
    HostCopy(Images())
    assert calls["device"] == torch.device("cuda", 1)
    assert calls["copy"][2] is stream and calls["record"] is stream
