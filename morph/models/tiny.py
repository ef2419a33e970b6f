"""The built-in tiny models: SD-1.x-, SD-2.x- and SDXL-shaped pipelines built in code, for tests and quick demos.

It has every part of Stable Diffusion 1.x (CLIP tokenizer padding to 77 slots, CLIP text
encoder, cross-attention UNet, AutoencoderKL with the x8 latent scale, DDIM on SD's noise
schedule) at a tiny size. Weights are drawn from our own seeded generator, not the libraries'
initialisers, so they are the same on every machine and library version. It is untrained: its
pictures are coloured noise that reacts only weakly to the prompt.

tiny-sd2 has SD 2.x's differences: an OpenCLIP-style text encoder (GELU), linear attention
projections and v-prediction. tiny-sdxl has SDXL's: two text encoders whose penultimate hidden
states are concatenated (32 + 48 channels), the second one's pooled projection, and the UNet's
size conditioning (add_time_ids).
"""

import math
from collections import Counter

import torch
from diffusers import (AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline,
                       UNet2DConditionModel)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

SEED = 0
HIDDEN = 32
MAX_LENGTH = 77
# Whole-word tokens; any other word is split into one token per character, so tests have
# multi-token words to find ("kitty" is 5 tokens).
WORDS = (
    "a an and of the in on with photo drawing painting picture cat kitten tabby dog puppy "
    "red green blue yellow purple orange white black circle square triangle small large "
    "kyoto tokyo city street"
).split()


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def build_tokenizer() -> CLIPTokenizer:
    """A CLIP BPE tokenizer with a byte alphabet and whole-word merges for WORDS."""
    alphabet = list(bytes_to_unicode().values())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for symbol in alphabet + [c + "</w>" for c in alphabet]:
        vocab[symbol] = len(vocab)
    # Learn merges the way BPE training does (most frequent pair first) so that encoding
    # replays them in rank order and every word of WORDS ends as one token.
    words = [list(w[:-1]) + [w[-1] + "</w>"] for w in WORDS]
    merges = []
    while any(len(w) > 1 for w in words):
        counts = Counter(pair for w in words for pair in zip(w, w[1:]))
        pair = max(counts, key=lambda p: (counts[p], p))
        merges.append(pair)
        vocab.setdefault(pair[0] + pair[1], len(vocab))
        words = [_merge_pair(w, pair) for w in words]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_LENGTH)


def _merge_pair(pieces: list[str], pair: tuple[str, str]) -> list[str]:
    out, i = [], 0
    while i < len(pieces):
        if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == pair:
            out.append(pieces[i] + pieces[i + 1])
            i += 2
        else:
            out.append(pieces[i])
            i += 1
    return out


def _seeded_init(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Overwrite every parameter from `generator`: uniform +-1/sqrt(fan_in) weights, unit norms, zero biases."""
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            if p.dim() == 1:
                p.copy_(torch.ones_like(p) if name.endswith("weight") and "norm" in name else torch.zeros_like(p))
            else:
                bound = 1.0 / math.sqrt(p[0].numel())
                p.copy_((torch.rand(p.shape, generator=generator) * 2 - 1) * bound)


def _text_config(tokenizer, hidden: int, act: str = "quick_gelu") -> CLIPTextConfig:
    return CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                          num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=MAX_LENGTH,
                          bos_token_id=0, eos_token_id=1, pad_token_id=1, projection_dim=hidden, hidden_act=act)


def _vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=4,
        block_out_channels=(8, 8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, sample_size=64,
    )


def _scheduler(prediction_type: str = "epsilon") -> DDIMScheduler:
    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type)


def _unet(cross_attention_dim: int, **family) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim, attention_head_dim=8, norm_num_groups=8, **family,
    )


def _initialised(*modules) -> None:
    generator = torch.Generator("cpu").manual_seed(SEED)
    for module in modules:
        _seeded_init(module, generator)
        module.eval()


def build_pipeline() -> StableDiffusionPipeline:
    """The tiny SD-1.x pipeline, float32 on the CPU, identical on every call."""
    tokenizer = build_tokenizer()
    text_encoder, unet, vae = CLIPTextModel(_text_config(tokenizer, HIDDEN)), _unet(HIDDEN), _vae()
    _initialised(text_encoder, unet, vae)
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def build_sd2_pipeline() -> StableDiffusionPipeline:
    """The tiny SD-2.x pipeline: GELU text encoder, linear attention projections, v-prediction."""
    tokenizer = build_tokenizer()
    text_encoder = CLIPTextModel(_text_config(tokenizer, HIDDEN, act="gelu"))
    unet, vae = _unet(HIDDEN, use_linear_projection=True), _vae()
    _initialised(text_encoder, unet, vae)
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=_scheduler("v_prediction"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


XL_HIDDEN_2 = 48  # the second text encoder's channels and its pooled projection
XL_TIME_DIM = 8  # channels of each of the six size-conditioning numbers


def build_sdxl_pipeline() -> StableDiffusionXLPipeline:
    """The tiny SDXL pipeline: two text encoders (32 + 48 channels), a pooled projection, size conditioning."""
    tokenizer, tokenizer_2 = build_tokenizer(), build_tokenizer()
    text_encoder = CLIPTextModel(_text_config(tokenizer, HIDDEN))
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer_2, XL_HIDDEN_2, act="gelu"))
    unet = _unet(HIDDEN + XL_HIDDEN_2, use_linear_projection=True, addition_embed_type="text_time",
                 addition_time_embed_dim=XL_TIME_DIM, projection_class_embeddings_input_dim=XL_HIDDEN_2 + 6 * XL_TIME_DIM)
    vae = _vae()
    _initialised(text_encoder, text_encoder_2, unet, vae)
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer_2, unet=unet, scheduler=_scheduler(), force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )


BUILT_IN = {"tiny": build_pipeline, "tiny-sd2": build_sd2_pipeline, "tiny-sdxl": build_sdxl_pipeline}
