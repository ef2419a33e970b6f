"""Frames from conditionings: one shared starting latent, batches through the diffusers pipeline."""

import warnings
from collections import deque
from contextlib import ExitStack, contextmanager, nullcontext
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import torch

from ..errors import MorphError
from ..models.acceleration import compile_decoder, is_compiled
from ..models.family import pipeline_inputs, vae_decodes_in_float32


@dataclass(frozen=True)
class RenderSettings:
    height: int
    width: int
    num_inference_steps: int
    guidance_scale: float
    seed: int
    probe: bool = False  # batch_size: auto's probe: every pass runs the fewest steps it can (one, of the first)


def on_device(pipe, tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` in the pipeline's device and dtype; done once per job for the tensors every batch shares."""
    return tensor.to(pipe.device, pipe.unet.dtype)


FLAGS = ("nsfw", "redecoded", "broken")  # what can happen to a frame: Batch's lists, the store's records


@dataclass
class Batch:
    """What one pipeline call gave: images [B, H, W, 3] uint8 on the device, and per frame what happened."""

    images: torch.Tensor
    nsfw: list[bool]  # blacked out by the model's safety checker
    redecoded: list[bool]  # the first decode was NaN/inf or all black; decoded again in float32
    broken: list[bool]  # still NaN/inf or all black after that: the latents themselves are bad

    def flags(self, j: int) -> list[str]:
        """What happened to frame j, by name: "nsfw", "redecoded", "broken"."""
        return [name for name in FLAGS if getattr(self, name)[j]]

    def first(self, n: int) -> "Batch":
        """The batch's first n frames (without a fixed shape's padding, or the rows mechanisms added)."""
        return Batch(self.images[:n], self.nsfw[:n], self.redecoded[:n], self.broken[:n])


def latent_moments(vae, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The VAE's latents_mean and latents_std [1, C, 1, 1] in `like`'s device and dtype (some SDXL VAEs have them; a
    pipeline's latents are then (z - mean) * scaling_factor / std), or None for a VAE without them."""
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if mean is None or std is None:
        return None
    shape = (1, -1, 1, 1)
    return torch.tensor(mean).view(shape).to(like), torch.tensor(std).view(shape).to(like)


def decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """Latents [B, C, h, w] -> images [B, 3, H, W] in -1..1, as the stock pipeline decodes them (a VAE with
    latents_mean/std, as some SDXL ones have, is denormalized with them)."""
    latents = latents.to(vae.dtype)
    moments = latent_moments(vae, latents)
    if moments is not None:
        mean, std = moments
        latents = latents * std / vae.config.scaling_factor + mean
    else:
        latents = latents / vae.config.scaling_factor
    return vae.decode(latents, return_dict=False)[0]


def broken_frames(images: torch.Tensor) -> torch.Tensor:
    """Which images [B, 3, H, W] (-1..1) hold a NaN or inf, or are black throughout: bool [B]."""
    flat = images.flatten(1)
    return ~torch.isfinite(flat).all(dim=1) | (flat <= -1).all(dim=1)


@contextmanager
def per_frame_guidance(pipe, guidance: torch.Tensor | None):
    """The guidance_scale to call the pipeline with, for per-frame guidance [B] (None: the settings' own).

    diffusers takes one guidance_scale G per call and computes u + G (c - u) from the UNet's
    unconditional and conditional halves. For frames whose guidance differs, the UNet's conditional
    half is replaced by u + (g / G)(c - u), so the pipeline's step gives u + g (c - u) for each
    frame. A guidance-distilled UNet (LCM: `time_cond_proj_dim` set) runs no such halves: it reads
    the guidance as an embedding, which then takes each frame's g. Equal guidance takes the stock
    path untouched.
    """
    if guidance is None or bool((guidance == guidance[0]).all()):
        yield None if guidance is None else float(guidance[0])
        return
    scale, forward = float(guidance.max()), pipe.unet.forward
    if pipe.unet.config.time_cond_proj_dim is not None:
        # the embedding diffusers makes of guidance_scale - 1, one row per frame: on the device once per batch, in
        # the dtype diffusers gives its own (the latents', which are the UNet's), so each UNet call just passes it
        embedded = on_device(pipe, pipe.get_guidance_scale_embedding(
            (guidance.double() - 1).float(), embedding_dim=pipe.unet.config.time_cond_proj_dim))

        def guided(*args, **kwargs):
            if kwargs.get("timestep_cond") is None:
                raise MorphError(f"per-frame guidance: {type(pipe).__name__} calls its guidance-distilled UNet "
                                 "(time_cond_proj_dim) without a guidance embedding (timestep_cond), so frames cannot "
                                 "each take their own; give every frame one guidance_scale")
            return forward(*args, **{**kwargs, "timestep_cond": embedded.to(kwargs["timestep_cond"])})
    else:
        ratio = (guidance / scale).to(pipe.device, torch.float32).view(-1, 1, 1, 1)

        def guided(*args, **kwargs):
            out = forward(*args, **kwargs)
            noise = out[0] if isinstance(out, tuple) else out.sample
            # in float32, so that a half-precision UNet's output is rounded once, not at each operation
            uncond, cond = noise.float().chunk(2)
            noise = torch.cat([uncond, uncond + ratio * (cond - uncond)]).to(noise.dtype)
            return (noise,) + tuple(out[1:]) if isinstance(out, tuple) else type(out)(sample=noise)

    with replaced_forward(pipe.unet, guided):
        yield scale


@contextmanager
def replaced_forward(module: torch.nn.Module, forward: Callable):
    """`module` called through `forward` inside the context, and as it was after it."""
    # a compiled UNet (torch.compile's OptimizedModule) keeps its own forward on the instance: put back what was there
    own = vars(module).get("forward")
    module.forward = forward
    try:
        yield
    finally:
        if own is None:
            del module.forward  # back to the class's own
        else:
            module.forward = own


class Mechanism:
    """A UNet-side capability with one hook into the batch renderer (attention interpolation, ControlNet, IP-Adapter,
    a hires pass): one module subclasses it and overrides what it needs; every default does nothing.

    Per-frame values it needs walk with the prompts (the path's `along`, read per batch by `inputs_for` into
    `walking`), so a frame's pixels depend only on its own row and the rows `widen` adds for it.
    """

    name = "mechanism"  # its key in the frame store's key and in the manifest

    def identity(self) -> dict:
        """What of it decides pixels, beyond the per-frame inputs (weights' digests, settings): joins the store key and
        the manifest. A job without the mechanism has no mechanism to ask, and keeps its keys."""
        return {}

    def measured(self) -> dict:
        """What it measured while preparing (never in a store key: a measurement may differ between ranks and runs):
        joins its identity in the manifest only."""
        return {}

    def widen(self, conds: torch.Tensor, walking: dict, probe: bool) -> tuple[torch.Tensor, dict]:
        """Rows appended after the batch's frames (keyframes its frames attend to): conds [B', L, D] and `walking`
        with each per-row entry [B', ...] (shared ones, absent from it, apply to every row). Their images are
        dropped. `probe`: batch_size: auto's probe, whose copies of frame 0 should carry the rows a real batch of
        their size carries."""
        return conds, walking

    def during(self, pipe, conds: torch.Tensor, walking: dict, settings: RenderSettings):
        """A context manager around the denoising loop of rows conds [B', L, D]; it yields the pipeline's extra
        keyword arguments ({} for none)."""
        return nullcontext({})

    def denoise(self, pipe, first_pass: Callable[[], torch.Tensor], conds: torch.Tensor, negative: torch.Tensor,
                walking: dict, settings: RenderSettings, guidance_scale: float | None,
                float32_vae: Callable[[], object] | None) -> torch.Tensor:
        """The denoised latents [B', C, h, w] of rows conds [B', L, D] with `negative` ([L, D] or [B', L, D]), inside
        `during`'s context: `first_pass()` runs the pipeline's denoising loop; a mechanism may stand in for it with
        latents it keeps, or run a pass of its own on what it gives (a hires pass does both), called as the first
        pass is: with `guidance_scale` (per_frame_guidance's; None: the settings') and decoding with decode_checked's
        `float32_vae`."""
        return first_pass()

    def frame_size(self, height: int, width: int) -> tuple[int, int]:
        """The height and width of the frames it leaves, for a batch rendered at height x width."""
        return height, width


def pass_inputs(pipe, conds: torch.Tensor, negative: torch.Tensor, seed: int, num_inference_steps: int,
                guidance_scale: float) -> dict:
    """The keyword arguments of a denoising pass (the pipeline's, or a second pass's img2img) over conditionings
    [B, L, D] with `negative` ([L, D] or [B, L, D]), its latents left undecoded."""
    batch = conds.shape[0]
    negative = on_device(pipe, negative)
    return dict(
        **pipeline_inputs(pipe, on_device(pipe, conds), negative if negative.dim() == 3 else
                          negative.expand(batch, -1, -1)),
        # One generator per frame, all on the same seed: schedulers that add noise while sampling
        # give every frame the same noise, whatever batch the frame falls in.
        generator=[torch.Generator("cpu").manual_seed(seed) for _ in range(batch)],
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        output_type="latent",  # decoded by decode_checked, so that a bad decode can be redone in float32
    )


def _denoise(pipe, conds, negative, latent, settings: RenderSettings, guidance_scale: float | None,
             extra: dict | None = None):
    """The pipeline's denoising loop for conditionings [B, L, D]: latents [B, C, h, w], not yet decoded. `extra`: more
    of the pipeline's keyword arguments (from mechanisms)."""
    return pipe(
        **pass_inputs(pipe, conds, negative, settings.seed, settings.num_inference_steps,
                      settings.guidance_scale if guidance_scale is None else guidance_scale),
        latents=on_device(pipe, latent).expand(conds.shape[0], -1, -1, -1),
        height=settings.height,
        width=settings.width,
        **(extra or {}),
    ).images


def batch_vae(pipe, float32_vae: Callable[[], object] | None):
    """The VAE that encodes and decodes every batch: `float32_vae()` where the family's VAE overflows in float16
    (SDXL's), else the pipeline's own."""
    upcast = float32_vae is not None and vae_decodes_in_float32(pipe) and pipe.vae.dtype != torch.float32
    return float32_vae() if upcast else pipe.vae


def decode_checked(pipe, latents: torch.Tensor, float32_vae: Callable[[], object] | None = None) \
        -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Latents [B, C, h, w] -> images [B, 3, H, W] in -1..1, which were decoded again in float32 [B] and which are
    still broken (NaN/inf or all black) [B]. A half-precision VAE can overflow to NaN or black: such frames are decoded
    again by `float32_vae()` (built only when needed)."""
    vae = batch_vae(pipe, float32_vae)
    images = decode(vae, latents)  # SDXL's in float32, and post-processed in float32, as diffusers does
    bad = broken_frames(images)
    redecoded = torch.zeros_like(bad)
    if bad.any() and float32_vae is not None and vae.dtype != torch.float32:  # decoded in half precision: try float32
        redecoded = bad.clone()
        images[bad] = decode(float32_vae(), latents[bad].float()).to(images.dtype)
        bad = broken_frames(images)
    return images, redecoded, bad


@torch.no_grad()
def render_batch(pipe, conds: torch.Tensor, negative: torch.Tensor, latent: torch.Tensor,
                 settings: RenderSettings, float32_vae: Callable[[], object] | None = None,
                 guidance: torch.Tensor | None = None, loras=None, lora_rows: torch.Tensor | None = None,
                 mechanisms: tuple[Mechanism, ...] = (), walking: dict | None = None) -> Batch:
    """Render conditionings [B, L, D] through the stock pipeline, then decode, check and convert the images.

    `negative` is [L, D] for every frame or [B, L, D]; `latent` [1, C, h, w] or [B, C, h, w];
    `guidance` [B] per frame (None: the settings'); `lora_rows` [B, n] the strength of each of the
    pipeline's LoRAs (`loras`, lora.LoraStrengths) per frame (None: their defaults); `mechanisms` act on the rows,
    reading what walks along for them from `walking` (BatchRenderer's inputs_for). A half-precision
    VAE can overflow to NaN or black: such frames are decoded again by `float32_vae()` (built only
    when needed).
    """
    batch = conds.shape[0]
    walking = walking or {}
    with per_frame_guidance(pipe, guidance) as scale, loras.rows(lora_rows) if loras else nullcontext(), \
            ExitStack() as stack:
        extra = {}
        for mechanism in mechanisms:
            extra.update(stack.enter_context(mechanism.during(pipe, conds, walking, settings)))
        denoise = partial(_denoise, pipe, conds, negative, latent, settings, scale, extra)
        for mechanism in mechanisms:
            denoise = partial(mechanism.denoise, pipe, denoise, conds, negative, walking, settings, scale, float32_vae)
        latents = denoise()
    images, redecoded, bad = decode_checked(pipe, latents, float32_vae)
    nsfw = None
    if hasattr(pipe, "run_safety_checker"):  # SDXL pipelines have none
        images, nsfw = pipe.run_safety_checker(images, pipe.device, images.dtype)
    nsfw = [bool(f) for f in nsfw] if nsfw is not None else [False] * batch
    images = pipe.image_processor.postprocess(images, output_type="pt", do_denormalize=[not f for f in nsfw])
    return Batch(to_uint8(images.permute(0, 2, 3, 1)), nsfw, redecoded.tolist(), bad.tolist())


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """[..., 3] float in 0..1 -> uint8, rounded in float32 exactly as diffusers' numpy_to_pil does."""
    return (image.float().clamp(0.0, 1.0) * 255).round().to(torch.uint8)


class BatchRenderer:
    """Renders frames `batch_size` at a time; a CUDA out-of-memory error halves the batch that failed and retries.

    With `fixed_shape` (torch.compile), a short last batch is padded to the full batch size by
    repeating its last frame, so the compiled graphs see one shape (after an out-of-memory back-off,
    one more: the smaller batch is compiled once).
    """

    def __init__(self, pipe, conditionings_for: Callable[[list[int]], torch.Tensor], negative: torch.Tensor,
                 latent: torch.Tensor, settings: RenderSettings, batch_size: int, fixed_shape: bool = False,
                 inputs_for: Callable[[list[int]], dict] = lambda indices: {}, loras=None,
                 mechanisms: tuple[Mechanism, ...] = ()):
        self.pipe, self.conditionings_for, self.settings = pipe, conditionings_for, settings
        self.inputs_for = inputs_for  # per frame, what walks along (negative, latent, guidance, loras; see path.py)
        self.loras = loras  # the pipeline's lora.LoraStrengths, if it has LoRAs
        self.mechanisms = mechanisms  # UNet-side capabilities acting on each batch's rows (see Mechanism)
        self.negative, self.latent = on_device(pipe, negative), on_device(pipe, latent)
        self.batch_size, self.fixed_shape = batch_size, fixed_shape
        self.backoffs: list[str] = []  # what the out-of-memory back-off did, for the manifest
        self._vae32 = None

    def batches(self, groups: list[list[int]]) -> Iterator[tuple[list[int], Batch]]:
        """Yield (frame indices, their Batch) for each group of frames, in order; an out-of-memory error
        halves the batch size and splits the group that failed."""
        pending = deque(groups)
        while pending:
            chunk = pending.popleft()
            if len(chunk) > self.batch_size:
                pending.extendleft(reversed([chunk[i:i + self.batch_size]
                                             for i in range(0, len(chunk), self.batch_size)]))
                continue
            try:
                batch = self._render(chunk)
            except torch.OutOfMemoryError:
                batch = None  # leave the except block first, so the failed batch's tensors can be freed
            if batch is None:
                self._back_off(self.rendered_size(len(chunk)))
                pending.appendleft(chunk)
                continue
            yield chunk, batch

    def frame_size(self) -> tuple[int, int]:
        """The height and width of the frames it renders: the settings', as its mechanisms leave them."""
        size = self.settings.height, self.settings.width
        for mechanism in self.mechanisms:
            size = mechanism.frame_size(*size)
        return size

    def rendered_size(self, frames: int) -> int:
        """How many frames a batch of `frames` goes through the UNet as: padded to batch_size with fixed_shape."""
        return self.batch_size if self.fixed_shape else frames

    def probe(self, frames: int) -> Batch:
        """Render `frames` copies of frame 0 in one batch with a single denoising step, with what walks along and
        decoded as real batches are (batch_size: auto measures the memory this takes)."""
        settings, self.settings = self.settings, replace(self.settings, num_inference_steps=1, probe=True)
        try:
            return self._render_frames([0] * frames)
        finally:
            self.settings = settings

    def _render(self, chunk: list[int]) -> Batch:
        padding = self.rendered_size(len(chunk)) - len(chunk)
        return self._render_frames(chunk + [chunk[-1]] * padding).first(len(chunk))

    def _render_frames(self, indices: list[int]) -> Batch:
        conds, walking = self.conditionings_for(indices), self.inputs_for(indices)
        for mechanism in self.mechanisms:
            conds, walking = mechanism.widen(conds, walking, self.settings.probe)
        return render_batch(self.pipe, conds, walking.get("negative", self.negative), walking.get("latent", self.latent),
                            self.settings, self._float32_vae, walking.get("guidance"), self.loras,
                            walking.get("loras"), self.mechanisms, walking).first(len(indices))

    def _float32_vae(self):
        """A float32 copy of the pipeline's VAE in its memory layout (channels_last on CUDA), made the first time it is
        needed; when it decodes every batch (SDXL in float16), compiled as the pipeline's decoder is."""
        vae = self.pipe.vae
        if self._vae32 is None:
            # a compiled decoder keeps its weights under _orig_mod.; assigned, each weight keeps its layout
            weights = {k.replace("_orig_mod.", ""): v.float() for k, v in vae.state_dict().items()}
            with torch.device("meta"):  # no storage: the weights assigned are its only float32 copy on the GPU
                self._vae32 = type(vae).from_config(vae.config).eval()
            self._vae32.load_state_dict(weights, assign=True)
        if vae_decodes_in_float32(self.pipe) and is_compiled(vae.decoder) and not is_compiled(self._vae32.decoder):
            # every batch at its one shape; a re-decode of a few broken frames (another shape each time) stays eager
            compile_decoder(self._vae32)
        return self._vae32

    def _back_off(self, failed: int) -> None:
        """After a batch of `failed` frames ran out of memory: half that size from now on."""
        if failed == 1:
            height, width = self.frame_size()
            raise MorphError(f"out of GPU memory rendering a single {width} x {height} frame; use a smaller "
                             "height/width, dtype float16, or a GPU with more memory")
        if self.pipe.device.type == "cuda":
            torch.cuda.empty_cache()
        smaller = failed // 2
        message = f"out of GPU memory in a batch of {failed} frames; continuing with batch_size {smaller}"
        if not self.backoffs:  # say it once; the manifest keeps every step
            warnings.warn(message + " (set batch_size lower to skip the retry)", stacklevel=2)
        self.backoffs.append(message)
        self.batch_size = smaller


class HostCopy:
    """A device -> host copy of a uint8 batch, started at once and waited for by whoever needs the pixels."""

    def __init__(self, images: torch.Tensor):
        self._device = images.device
        if images.device.type == "cuda":
            self._host = torch.empty(images.shape, dtype=images.dtype, pin_memory=True)
            # the copy runs on the stream of the images' own GPU (cuda:1 need not be the current device): the
            # event that says it is done goes on that stream too
            stream = torch.cuda.current_stream(images.device)
            with torch.cuda.stream(stream):
                self._host.copy_(images, non_blocking=True)
            self._done = torch.cuda.Event()
            self._done.record(stream)
        else:
            self._host, self._done = images.cpu(), None

    def wait(self) -> np.ndarray:
        """The pixels [B, H, W, 3] uint8, once the copy has finished."""
        if self._done is not None:
            # waited for on the writer's thread, whose current device is GPU 0: there, CUDA would make every rank a
            # context on GPU 0
            with torch.cuda.device(self._device):
                self._done.synchronize()
        return self._host.numpy()
