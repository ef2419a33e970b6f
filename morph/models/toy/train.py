"""Reproduce the toy model's weights from scratch: ``python -m morph.models.toy.train [--out DIR]``.

Recipe (about 30 minutes on 2 CPU cores with the defaults):
1. Train an AutoencoderKL (4 blocks, x8 latent scale) to reconstruct toy scenes.
2. Pre-encode a fixed set of scenes to latents and set the VAE's scaling factor from their spread.
3. Train a CLIP text encoder and a cross-attention UNet together on SD's noise schedule:
   epsilon prediction, 10 % empty captions (for classifier-free guidance), min-SNR weighting, EMA.
4. Save a standard diffusers folder (safetensors; UNet and VAE in float16 to stay small).

Everything is seeded: the same seed and thread count give the same weights on the same machine.
"""

import argparse
import copy
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from ..tiny import build_tokenizer
from .scenes import sample_scenes

DEFAULT_OUT = Path(__file__).parent / "weights"
SCHEDULE = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}


def build_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(16, 32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, sample_size=64,
    )


def build_text_encoder(vocab_size: int) -> CLIPTextModel:
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1, projection_dim=64,
    ))


def build_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(64, 96),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=32,
    )


def _log(message: str, started: float) -> None:
    print(f"[{time.perf_counter() - started:7.1f} s] {message}", flush=True)


def train_vae(vae, steps: int, batch: int, generator: torch.Generator, started: float) -> None:
    optimizer = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    lr = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps, pct_start=0.05)
    for step in range(steps):
        images, _ = sample_scenes(batch, generator)
        posterior = vae.encode(images).latent_dist
        latents = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        reconstruction = vae.decode(latents).sample
        loss = F.mse_loss(reconstruction, images) + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lr.step()
        if step % 200 == 0 or step == steps - 1:
            _log(f"vae step {step}/{steps} loss {loss.item():.5f}", started)


@torch.no_grad()
def encode_dataset(vae, count: int, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
    """Latent means [count, 4, 8, 8] and captions of `count` fresh scenes."""
    latents, captions = [], []
    for start in range(0, count, 256):
        images, batch_captions = sample_scenes(min(256, count - start), generator)
        latents.append(vae.encode(images).latent_dist.mean)
        captions += batch_captions
    return torch.cat(latents), captions


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1 - decay)


def train_denoiser(unet, text_encoder, tokenizer, latents, captions, steps: int, batch: int,
                   generator: torch.Generator, started: float):
    """Train UNet and text encoder jointly; return their EMA copies."""
    noise_scheduler = DDPMScheduler(**SCHEDULE)
    snr = noise_scheduler.alphas_cumprod / (1 - noise_scheduler.alphas_cumprod)
    weights = snr.clamp(max=5.0) / snr  # min-SNR-5 weighting for epsilon prediction
    ids = tokenizer(captions, padding="max_length", max_length=77, return_tensors="pt").input_ids
    empty = tokenizer([""], padding="max_length", max_length=77, return_tensors="pt").input_ids
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2)
    lr = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    ema_unet, ema_text = copy.deepcopy(unet), copy.deepcopy(text_encoder)
    for step in range(steps):
        pick = torch.randint(len(latents), (batch,), generator=generator)
        x0 = latents[pick]
        tokens = ids[pick].clone()
        tokens[torch.rand(batch, generator=generator) < 0.1] = empty[0]
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, SCHEDULE["num_train_timesteps"], (batch,), generator=generator)
        noisy = noise_scheduler.add_noise(x0, noise, t)
        prediction = unet(noisy, t, encoder_hidden_states=text_encoder(tokens)[0]).sample
        loss = (weights[t] * ((prediction - noise) ** 2).mean(dim=(1, 2, 3))).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        lr.step()
        decay = min(0.999, (1 + step) / (10 + step))
        _ema_update(ema_unet, unet, decay)
        _ema_update(ema_text, text_encoder, decay)
        if step % 200 == 0 or step == steps - 1:
            _log(f"unet step {step}/{steps} loss {loss.item():.5f}", started)
    return ema_unet, ema_text


def train(out: Path, vae_steps: int = 1500, unet_steps: int = 4500, batch: int = 64, seed: int = 0,
          dataset: int = 20000, vae_batch: int = 16) -> StableDiffusionPipeline:
    """Train every part and save the diffusers folder to `out`; return the pipeline (float32)."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    tokenizer = build_tokenizer()

    # 1. The autoencoder
    vae = build_vae()
    train_vae(vae, vae_steps, vae_batch, generator, started)
    vae.eval().requires_grad_(False)

    # 2. A fixed set of scenes as latents; the scaling factor gives them unit spread, as 0.18215 does for SD
    latents, captions = encode_dataset(vae, dataset, generator)
    scaling = float(1 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    _log(f"encoded {len(captions)} scenes; latent scaling factor {scaling:.4f}", started)

    # 3. Text encoder and UNet, jointly
    unet, text_encoder = build_unet(), build_text_encoder(len(tokenizer))
    unet, text_encoder = train_denoiser(unet, text_encoder, tokenizer, latents * scaling, captions, unet_steps,
                                        batch, generator, started)

    # 4. Save: UNet and VAE in float16 (size), the text encoder in float32
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder.eval(), tokenizer=tokenizer, unet=unet.eval(),
        scheduler=DDIMScheduler(**SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    out.mkdir(parents=True, exist_ok=True)
    pipe.unet.half()
    pipe.vae.half()
    pipe.save_pretrained(out, safe_serialization=True)
    pipe.unet.float()
    pipe.vae.float()
    _log(f"saved to {out}", started)
    return pipe


def main() -> None:
    parser = argparse.ArgumentParser(description="Train the toy model from scratch.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the diffusers folder")
    parser.add_argument("--vae-steps", type=int, default=1500)
    parser.add_argument("--unet-steps", type=int, default=4500)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dataset", type=int, default=20000, help="scenes pre-encoded for the UNet")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train(args.out, args.vae_steps, args.unet_steps, args.batch, args.seed, args.dataset)


if __name__ == "__main__":
    main()
