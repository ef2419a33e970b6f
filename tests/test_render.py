"""Batching, the shared latent, padding and the out-of-memory back-off, checked with a fake pipeline; per-frame
guidance, the float32 VAE copy, and the GPU each torchrun rank renders on."""

import copy
from contextlib import contextmanager
from datetime import timedelta
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from diffusers.image_processor import VaeImageProcessor

import morph.render.batch
from morph.errors import MorphError
from morph.models.acceleration import compile_pipeline, is_compiled
from morph.models.pipeline import load_model, resolve_device
from morph.models.tiny import BUILT_IN, HIDDEN, _initialised, _unet
from morph.prompts.encode import prompt_encoder
from morph.prompts.latent import shared_latent
from morph.render.batch import Batch, BatchRenderer, HostCopy, Mechanism, RenderSettings, decode, per_frame_guidance, \
    render_batch, to_uint8
from morph.render.shard import SETTLE_TIMEOUT, Shard, this_process


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
        latents = value.expand(batch, 4, kwargs["height"] // 8, kwargs["width"] // 8).to(self.unet.dtype)
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
                        lora_rows=None, mechanisms=(), walking=None: seen.append((
                            conds.shape[0], settings.num_inference_steps, float32_vae, loras, negative,
                            guidance.tolist(), lora_rows.tolist())) or Batch(torch.zeros(2, 1, 1, 3), *[[False] * 2] * 3))
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


class Doubler(Mechanism):
    """Adds a row of twice each frame's embedding, passes the row count to the pipeline and adds 1/8 afterwards."""

    def __init__(self):
        self.seen = []

    def widen(self, conds, walking, probe):
        return torch.cat([conds, 2 * conds]), {**walking, "guidance": torch.cat([walking["guidance"]] * 2)}

    @contextmanager
    def during(self, pipe, conds, walking, settings):
        self.seen.append(("during", conds.shape[0], walking["guidance"].tolist()))
        yield {"rows": conds.shape[0]}
        self.seen.append(("left", conds.shape[0]))

    def denoise(self, pipe, first_pass, conds, negative, walking, settings, guidance_scale, float32_vae):
        latents = first_pass()
        self.seen.append(("after", latents.shape[0]))
        return latents + 0.125


def test_a_mechanism_widens_the_rows_passes_arguments_and_changes_the_latents_and_its_rows_are_dropped():
    pipe, mechanism = FakePipe(), Doubler()
    conds = torch.tensor([0.25, 0.5]).view(-1, 1, 1).expand(-1, 5, 6)
    renderer = BatchRenderer(pipe, lambda idx: conds[idx], torch.zeros(5, 6), shared_latent(pipe, 0, 16, 24),
                             SETTINGS, 2, inputs_for=lambda idx: {"guidance": torch.full((len(idx),), 7.5)},
                             mechanisms=(mechanism,))
    [(chunk, batch)] = list(renderer.batches([[0, 1]]))
    assert pipe.calls[0]["rows"] == 4 and pipe.calls[0]["prompt_embeds"].shape[0] == 4
    assert mechanism.seen == [("during", 4, [7.5] * 4), ("after", 4), ("left", 4)]
    # only the frames' own rows come back, each its mean embedding plus 1/8, decoded to 0..1
    assert batch.images.shape[0] == 2 and len(batch.nsfw) == 2
    expected = to_uint8(((torch.tensor([0.25, 0.5]) + 0.125) * 2 - 1 + 1).div(2).view(-1, 1, 1, 1).expand(-1, 16, 24, 3))
    assert torch.equal(batch.images, expected)


class Kept(Mechanism):
    """Stands in for the denoising loop with latents it keeps, and says its frames are twice as large."""

    def denoise(self, pipe, first_pass, conds, negative, walking, settings, guidance_scale, float32_vae):
        return torch.full((conds.shape[0], 4, 2, 3), 0.75)

    def frame_size(self, height, width):
        return 2 * height, 2 * width


def test_a_mechanism_may_stand_in_for_the_denoising_loop_and_change_the_frame_size():
    pipe = FakePipe()
    renderer = BatchRenderer(pipe, lambda idx: torch.zeros(len(idx), 5, 6), torch.zeros(5, 6),
                             shared_latent(pipe, 0, 16, 24), SETTINGS, 2, mechanisms=(Kept(),))
    [(_, batch)] = list(renderer.batches([[0, 1]]))
    assert pipe.calls == [] and torch.equal(batch.images, torch.full((2, 16, 24, 3), 191, dtype=torch.uint8))
    assert renderer.frame_size() == (2 * SETTINGS.height, 2 * SETTINGS.width)


class Unet(torch.nn.Module):
    config = SimpleNamespace(time_cond_proj_dim=None)  # runs classifier-free guidance's two halves

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


def test_the_host_copy_is_waited_for_on_its_own_gpu(monkeypatch):
    """The writer's thread waits for the copy; its current device is GPU 0, where the wait would make a CUDA context
    in every torchrun rank: it waits with the images' GPU current."""
    current, seen = [torch.device("cuda", 0)], {}

    class Images:
        device, shape, dtype = torch.device("cuda", 1), (2, 4, 4, 3), torch.uint8

    class Host:
        def copy_(self, source, non_blocking):
            pass

        def numpy(self):
            return "pixels"

    class Event:
        def record(self, stream=None):
            pass

        def synchronize(self):
            seen["synchronized on"] = current[-1]

    class DeviceContext:
        def __init__(self, device):
            self.device = device

        def __enter__(self):
            current.append(self.device)

        def __exit__(self, *exc):
            current.pop()

    monkeypatch.setattr(torch, "empty", lambda *args, **kwargs: Host())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: DeviceContext(current[-1]))
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "device", DeviceContext)
    assert HostCopy(Images()).wait() == "pixels"
    assert seen["synchronized on"] == torch.device("cuda", 1) and current == [torch.device("cuda", 0)]


def test_per_frame_guidance_embedding_goes_to_the_device_once_per_batch_and_is_required():
    """An LCM UNet takes each frame's guidance embedding as timestep_cond: made in the UNet's dtype once per batch,
    each of its calls is given that same tensor; a pipeline that passes no timestep_cond gets a clear error."""
    given = []

    class Lcm(torch.nn.Module):
        config = SimpleNamespace(time_cond_proj_dim=4)
        dtype = torch.float16

        def forward(self, x, timestep_cond=None):
            given.append(timestep_cond)
            return (x,)

    embeddings = lambda w, embedding_dim: w.view(-1, 1).expand(-1, embedding_dim).clone()  # a float32 tensor
    pipe = SimpleNamespace(unet=Lcm(), device=torch.device("cpu"), get_guidance_scale_embedding=embeddings)
    guidance, x = torch.tensor([2.0, 5.0, 9.0], dtype=torch.float64), torch.zeros(3, 4, 2, 2, dtype=torch.float16)
    own = torch.zeros(3, 4, dtype=torch.float16)  # what diffusers passes: one guidance's embedding, in latents' dtype
    with per_frame_guidance(pipe, guidance):
        for _ in range(3):
            pipe.unet(x, timestep_cond=own)
        with pytest.raises(MorphError, match="timestep_cond.*one guidance_scale"):
            pipe.unet(x)
    assert len(given) == 3 and given[0] is given[1] is given[2]
    assert given[0].dtype == torch.float16 and torch.equal(given[0], (guidance - 1).half().view(-1, 1).expand(-1, 4))


def test_walking_guidance_reweights_a_half_precision_unets_output_in_float32():
    """u + (g / G)(c - u) computed in float16 rounds at every operation; in float32 it rounds once, at the end."""
    class Halves(torch.nn.Module):
        config = SimpleNamespace(time_cond_proj_dim=None)
        dtype = torch.float16

        def forward(self, x):
            return (x,)  # the test's rows are the UNet's unconditional and conditional halves

    pipe = SimpleNamespace(unet=Halves(), device=torch.device("cpu"))
    guidance = torch.linspace(1.5, 9.0, 8, dtype=torch.float64)
    noise = torch.randn(16, 4, 8, 8, generator=torch.Generator().manual_seed(0)).half()
    with per_frame_guidance(pipe, guidance):
        out = pipe.unet(noise)[0]
    uncond, cond = noise.float().chunk(2)
    ratio = (guidance / guidance.max()).float().view(-1, 1, 1, 1)
    assert out.dtype == torch.float16 and torch.equal(out, torch.cat([uncond, uncond + ratio * (cond - uncond)]).half())


def lcm_pipeline():
    """The tiny SD-1.x pipeline with a guidance-distilled (LCM) UNet: it reads guidance_scale as an embedding
    (time_cond_proj_dim), and diffusers runs it without classifier-free guidance's two halves."""
    pipe = BUILT_IN["tiny"]()
    unet = _unet(HIDDEN, time_cond_proj_dim=16)
    _initialised(unet)
    with torch.no_grad():  # untrained, it barely reads the embedding: louder, so that each frame's guidance shows
        unet.time_embedding.cond_proj.weight *= 20
    lcm = type(pipe)(**{**pipe.components, "unet": unet}, requires_safety_checker=False)
    lcm.set_progress_bar_config(disable=True)
    return lcm


def test_per_frame_guidance_on_an_lcm_unet_gives_each_frame_its_own_guidance():
    pipe = lcm_pipeline()
    encoder = prompt_encoder(pipe)
    conds = torch.stack([encoder.text("a red circle"), encoder.text("a blue square")])
    latent, guidance = shared_latent(pipe, 0, 64, 64), torch.tensor([2.0, 8.0], dtype=torch.float64)
    together = render_batch(pipe, conds, encoder.negative(""), latent, RenderSettings(64, 64, 3, 8.0, 0),
                            guidance=guidance).images
    for i, g in enumerate(guidance.tolist()):
        alone = render_batch(pipe, conds[i:i + 1], encoder.negative(""), latent, RenderSettings(64, 64, 3, g, 0))
        assert (together[i].int() - alone.images[0].int()).abs().max() <= 2  # batch noise only
    at_eight = render_batch(pipe, conds[:1], encoder.negative(""), latent, RenderSettings(64, 64, 3, 8.0, 0)).images
    assert (together[0].int() - at_eight[0].int()).abs().max() > 10  # the guidance embedding matters


class HalfVae(FakeVae):
    """SDXL's own VAE in float16: it overflows there, so the pipeline decodes in a float32 copy (force_upcast)."""

    config = SimpleNamespace(scaling_factor=1.0, force_upcast=True)
    dtype = torch.float16


class RampVae(FakeVae):
    """A float32 VAE whose images are a ramp through -1..1: most of its values are not float16 numbers."""

    def decode(self, latents, return_dict):
        assert latents.dtype == torch.float32
        return (torch.linspace(-1, 1, latents.shape[0] * 3 * 16 * 24).view(-1, 3, 16, 24),)


def test_sdxl_in_float16_post_processes_its_float32_decode_in_float32():
    pipe = FakePipe(dtype=torch.float16)
    pipe.vae, pipe.tokenizer = HalfVae(), SimpleNamespace(model_max_length=4)
    pipe.text_encoder_2 = SimpleNamespace(config=SimpleNamespace(projection_dim=6))  # SDXL: a pooled row too
    batch = render_batch(pipe, torch.ones(2, 5, 6), torch.zeros(5, 6), torch.zeros(1, 4, 2, 3), SETTINGS,
                         float32_vae=RampVae)
    ramp = RampVae().decode(torch.zeros(2, 4, 2, 3), False)[0]
    assert torch.equal(batch.images, to_uint8(FakePipe.image_processor.postprocess(ramp, output_type="pt")
                                              .permute(0, 2, 3, 1)))


@pytest.mark.parametrize("model, compiled", [("tiny-sdxl", True), ("tiny", False)])
def test_the_float32_vae_copy_keeps_the_vaes_layout_and_is_compiled_where_it_decodes_every_batch(model, compiled):
    """SDXL in float16 decodes every batch in the copy: compiled with the pipeline, at the batch's one shape. SD 1.x
    re-decodes only broken frames there, a few at a time, each count another shape: eager."""
    pipe = BUILT_IN[model]().to(dtype=torch.float16)
    pipe.vae.to(memory_format=torch.channels_last)  # as acceleration.channels_last leaves it on CUDA
    renderer = BatchRenderer(pipe, lambda idx: None, torch.zeros(1), torch.zeros(1), SETTINGS, 2)
    copy = renderer._float32_vae()  # made by the first probe, before the pipeline is compiled
    conv = copy.decoder.conv_in.weight
    assert copy.dtype == torch.float32 and torch.equal(conv, pipe.vae.decoder.conv_in.weight.float())
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    compile_pipeline(pipe)
    assert renderer._float32_vae() is copy and is_compiled(copy.decoder) == compiled


def test_the_float32_vae_copy_is_built_without_storage_and_decodes_as_a_float32_vae(monkeypatch):
    """The copy's weights are the only float32 VAE made: the module they go into is built on meta, so no second,
    randomly initialised float32 VAE is allocated (on the GPU, beside the weights) and then thrown away."""
    pipe = BUILT_IN["tiny-sdxl"]().to(dtype=torch.float16)
    reference = copy.deepcopy(pipe.vae).float()  # what a float32 VAE decodes
    built, from_config = [], type(pipe.vae).from_config

    def recorded(cls, *args, **kwargs):
        module = from_config(*args, **kwargs)
        built.extend(t.device.type for t in [*module.parameters(), *module.buffers()])
        return module

    monkeypatch.setattr(type(pipe.vae), "from_config", classmethod(recorded))
    renderer = BatchRenderer(pipe, lambda idx: None, torch.zeros(1), torch.zeros(1), SETTINGS, 2)
    vae32 = renderer._float32_vae()
    assert built and set(built) == {"meta"}
    assert {t.device.type for t in vae32.state_dict().values()} == {"cpu"}
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(decode(vae32, latents), decode(reference, latents))


def test_torchrun_ranks_wait_for_each_other_for_hours_and_joining_touches_no_gpu(monkeypatch):
    """gloo's default 30 minutes abort a rank waiting in a gather for the others' last batches; and a device: cpu job
    must not start CUDA in every rank (the rank's GPU is the config's device: resolve_device)."""
    joined = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: joined.setdefault("gpu", device))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda **kwargs: joined.update(kwargs))
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    assert this_process() == Shard(1, 2) and resolve_device("cpu") == torch.device("cpu")
    assert joined == {"backend": "gloo", "timeout": SETTLE_TIMEOUT} and SETTLE_TIMEOUT >= timedelta(hours=24)


@pytest.mark.parametrize("name, local_rank, gpu", [("cuda", 1, 1), ("auto", 3, 3), ("cuda:0", 2, 2), ("cuda:4", 2, 6),
                                                   ("cuda:4", 3, 7)])
def test_under_torchrun_a_cuda_device_counts_from_the_ranks_own_gpu(monkeypatch, name, local_rank, gpu):
    """One config for every rank: cuda:0 on 4 ranks is GPUs 0-3, not GPU 0 four times; cuda:4 is GPUs 4-7."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert resolve_device("cuda:5") == torch.device("cuda", 5)  # one process: the GPU named
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert resolve_device(name) == torch.device("cuda", gpu)


@pytest.mark.parametrize("name, local_world, world", [("cuda:4", 8, 8), ("cuda", 16, 16), ("cuda:1", 8, 16),
                                                      ("cuda:6", 4, 4)])
def test_under_torchrun_more_ranks_than_gpus_left_is_refused_not_wrapped(monkeypatch, name, local_world, world):
    """cuda:4 with 8 ranks on 8 GPUs, or 16 ranks on 8, would put two ranks on one GPU: refused, naming the fix. The
    ranks on one machine count (LOCAL_WORLD_SIZE), not the job's: two machines of 8 ranks fit on 8 GPUs each."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_world))
    with pytest.raises(MorphError, match=r"LOCAL_WORLD_SIZE.*but torch sees 8; .*--nproc_per_node"):
        resolve_device(name)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert resolve_device("cuda") == torch.device("cuda", 0)  # 8 ranks from GPU 0 fit, over 2 machines too


def test_a_model_on_a_gpu_makes_that_gpu_the_current_device(monkeypatch):
    """Pinned host copies (HostCopy) and CUDA's context go to the current device: each rank's own, not GPU 0."""
    from diffusers import StableDiffusionPipeline

    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", calls.append)
    monkeypatch.setattr(StableDiffusionPipeline, "to", lambda self, device: calls.append(("to", device)) or self)
    load_model("tiny", torch.device("cuda", 3), torch.float32, None, False)
    assert calls == [torch.device("cuda", 3), ("to", torch.device("cuda", 3))]
