"""The hires pass (`hires:`): every frame rendered at the base size, upscaled, and denoised again from `strength` by
diffusers' img2img with the frame's own conditioning and one second noise that every frame shares, as the first
pass shares one starting latent: the larger frames stay as continuous as the base walk.

The second pass starts from the base frame's pixels as the store keeps them (uint8), for both upscales: `lanczos`
resizes them and encodes them at the larger size; `latent` encodes them at the base size and upscales that latent.
The first pass's own latents are not kept: they would need a second kind of record in the frame store, and from the
stored pixels a fresh render and one that reuses its base frames give the same bits. So the base frames are kept in
the store (under keys of everything that decides them, the hires settings left out), and raising `strength` renders
only the second pass.
"""

import hashlib
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..config.sections import HiresSpec
from .batch import Mechanism, RenderSettings, batch_vae, decode_checked, latent_moments, pass_inputs, to_uint8
from .produce import render_identity
from .store import FrameStore, digest


class HiresPass(Mechanism):
    """A second pass at `spec.scale` times the size, from each frame's base render."""

    name = "hires"

    def __init__(self, spec: HiresSpec, seed: int):
        self.spec = spec
        self.noise_seed = (seed + 1) % 2**64  # not the first pass's seed: its noise would repeat in the larger one
        self.store, self.base_identity, self.fresh = None, None, False  # set by keep_base_frames

    def identity(self) -> dict:
        return {**self.spec.model_dump(), "noise_seed": self.noise_seed}

    def frame_size(self, height: int, width: int) -> tuple[int, int]:
        return self.spec.size(height, width)

    def denoise(self, pipe, first_pass, conds, negative, walking, settings, guidance_scale, float32_vae):
        keys = self._base_keys(conds, negative, walking, settings)
        base = self._stored(keys, (settings.height, settings.width, 3))
        if base is None:
            base, flags = _pixels(pipe, first_pass(), float32_vae)
            for key, image, flagged in zip(keys or (), base.cpu().numpy(), flags):
                self.store.put(key, image, flagged)
        latents = self._upscaled(pipe, base.to(pipe.device), float32_vae)
        return self._second_pass(pipe, latents, conds, negative, settings, guidance_scale)

    def _base_keys(self, conds, negative, walking, settings: RenderSettings) -> list[str] | None:
        """Each row's base frame's key: the job's render identity without the hires pass, the settings, and every row
        of the batch by content (a frame's pixels depend on its batch's size); None when no store keeps them."""
        if self.store is None:
            return None
        rows = _tensors_digest([conds, negative, *(walking[name] for name in sorted(walking))])
        common = {"render": self.base_identity, "settings": asdict(settings), "rows": rows}
        return [digest({**common, "row": j}) for j in range(conds.shape[0])]

    def _stored(self, keys: list[str] | None, shape: tuple[int, int, int]) -> torch.Tensor | None:
        """The batch's base frames [B', H, W, 3] uint8 when the store has every one of them (and the run is not
        fresh), else None."""
        if not keys or self.fresh or not all(self.store.has(key, shape) for key in keys):
            return None
        return torch.from_numpy(np.stack([self.store.read(key) for key in keys]))

    def _upscaled(self, pipe, base: torch.Tensor, float32_vae) -> torch.Tensor:
        """Base frames [B, H, W, 3] uint8 -> the second pass's starting latents [B, C, sH/8, sW/8]."""
        height, width = self.spec.size(*base.shape[1:3])
        if self.spec.upscale == "lanczos":
            resized = [np.asarray(Image.fromarray(image).resize((width, height), Image.LANCZOS))
                       for image in base.cpu().numpy()]
            return encode(pipe, torch.from_numpy(np.stack(resized)).to(pipe.device), float32_vae)
        latents = encode(pipe, base, float32_vae)
        return F.interpolate(latents.float(), size=(height // pipe.vae_scale_factor, width // pipe.vae_scale_factor),
                             mode="bilinear").to(latents.dtype)

    def _second_pass(self, pipe, latents, conds, negative, settings: RenderSettings,
                     guidance_scale: float | None) -> torch.Tensor:
        """img2img from latents [B, C, h, w] at `strength`, each row with its own conditioning, negative and guidance,
        and one noise for all."""
        import diffusers

        # StableDiffusion(XL)Pipeline's img2img sibling (diffusers' AutoPipeline would import every pipeline), made for
        # each batch: it then runs the pipeline's UNet as it is now (compiled after batch_size: auto's probe; its
        # forward patched by per_frame_guidance and the LoRA rows); with a scheduler of its own, as img2img sets a
        # begin index on it that must not reach the first pass
        img2img = getattr(diffusers, type(pipe).__name__.replace("Pipeline", "Img2ImgPipeline")).from_pipe(
            pipe, scheduler=type(pipe.scheduler).from_config(pipe.scheduler.config))
        img2img.set_progress_bar_config(disable=True)
        return img2img(
            **pass_inputs(pipe, conds, negative, self.noise_seed, self.schedule(settings),
                          settings.guidance_scale if guidance_scale is None else guidance_scale),
            image=latents, strength=self.spec.strength,
        ).images

    def schedule(self, settings: RenderSettings) -> int:
        """The second pass's num_inference_steps (it runs the last `strength` of them); batch_size: auto's probe takes
        the fewest that give it one step."""
        if not settings.probe:
            return self.spec.schedule(settings.num_inference_steps)
        steps = 1
        while self.spec.steps(steps) < 1:
            steps += 1
        return steps


def keep_base_frames(job, store: FrameStore, fresh: bool = False) -> None:
    """Keep a hires job's base frames in `store`, so that a run with other hires settings (or resumed) renders only
    the second pass; `fresh` renders them again. A job without hires is left as it is."""
    for mechanism in job.renderer.mechanisms:
        if isinstance(mechanism, HiresPass):
            identity = {k: v for k, v in render_identity(job).items() if k != HiresPass.name}
            mechanism.store, mechanism.base_identity, mechanism.fresh = store, identity, fresh


def _tensors_digest(tensors: list[torch.Tensor]) -> str:
    """sha256 of tensors' dtypes, shapes and bytes."""
    sha = hashlib.sha256()
    for tensor in tensors:
        sha.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        sha.update(tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()[:32]


def _pixels(pipe, latents: torch.Tensor, float32_vae) -> tuple[torch.Tensor, list[list[str]]]:
    """Denoised latents [B, C, h, w] -> base frames [B, H, W, 3] uint8, decoded and checked as render_batch decodes
    a batch's frames (before their safety check: the second pass starts from them), and each one's flags."""
    images, redecoded, broken = decode_checked(pipe, latents, float32_vae)
    images = pipe.image_processor.postprocess(images, output_type="pt", do_denormalize=[True] * len(images))
    flags = [[name for name, flagged in (("redecoded", r), ("broken", b)) if flagged]
             for r, b in zip(redecoded.tolist(), broken.tolist())]
    return to_uint8(images.permute(0, 2, 3, 1)), flags


def encode(pipe, images: torch.Tensor, float32_vae=None) -> torch.Tensor:
    """Images [B, H, W, 3] uint8 -> latents [B, C, H/8, W/8] in the UNet's dtype: the VAE's most likely latent,
    scaled as `decode` unscales it, by the VAE that decodes the batch (batch_vae)."""
    vae = batch_vae(pipe, float32_vae)
    # contiguous: frames read from the store and frames just decoded then take the same kernels, and bits
    pixels = images.permute(0, 3, 1, 2).contiguous().to(vae.dtype) / 127.5 - 1
    latents = vae.encode(pixels).latent_dist.mode()
    moments = latent_moments(vae, latents)
    if moments is not None:
        mean, std = moments
        latents = (latents - mean) * vae.config.scaling_factor / std
    else:
        latents = latents * vae.config.scaling_factor
    return latents.to(pipe.unet.dtype)
