"""Which Stable Diffusion family a loaded pipeline is, read from its weights' configs, and what differs per family.

- sd1: one CLIP ViT-L text encoder (quick GELU); conditioning [L, D] = its last hidden state.
- sd2: one OpenCLIP text encoder (GELU); the same pipeline class; often v-prediction at 768 px.
- sdxl: two text encoders; conditioning = both penultimate hidden states side by side [L, D1 + D2], plus the
  second encoder's pooled projection [P] and the size conditioning.

morph carries an SDXL conditioning as ONE tensor [L + 1, D]: the token rows, then the pooled vector as a last
row (zero-padded to D). Walks, slerp (per row: the pooled vector is slerped too), arithmetic, edits and the
frame store then work unchanged; the rows are split again only at the pipeline call.
"""

import torch


def _xl(pipe) -> bool:
    return getattr(pipe, "text_encoder_2", None) is not None


def family_of(pipe) -> str:
    """sd1, sd2 or sdxl, from the pipeline's components."""
    if _xl(pipe):
        return "sdxl"
    return "sd2" if pipe.text_encoder.config.hidden_act == "gelu" else "sd1"


def token_slots(pipe) -> int:
    """L: token slots per prompt."""
    return pipe.tokenizer.model_max_length


def pooled_dim(pipe) -> int | None:
    """P: channels of the pooled vector an SDXL conditioning carries in its last row (None: no pooled row)."""
    return pipe.text_encoder_2.config.projection_dim if _xl(pipe) else None


def conditioning_shape(pipe) -> dict:
    """The shape of one prompt's conditioning, for the manifest: token rows [L, D] and the pooled vector."""
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if _xl(pipe) else [])
    return {"tokens": [token_slots(pipe), sum(e.config.hidden_size for e in encoders)], "pooled": pooled_dim(pipe)}


def pipeline_inputs(pipe, conds: torch.Tensor, negative: torch.Tensor) -> dict:
    """The pipeline's keyword arguments for conditionings [B, L(+1), D] and negatives [B, L(+1), D]."""
    pooled = pooled_dim(pipe)
    if pooled is None:
        return {"prompt_embeds": conds, "negative_prompt_embeds": negative}
    slots = token_slots(pipe)
    return {"prompt_embeds": conds[:, :slots], "pooled_prompt_embeds": conds[:, slots, :pooled],
            "negative_prompt_embeds": negative[:, :slots], "negative_pooled_prompt_embeds": negative[:, slots, :pooled]}


def vae_decodes_in_float32(pipe) -> bool:
    """SDXL's own VAE overflows in float16, and its pipeline decodes in float32 (force_upcast); a VAE made for
    float16 (such as the fp16-fix one, named with vae:) says so in its config and decodes in float16."""
    return _xl(pipe) and pipe.vae.dtype == torch.float16 and pipe.vae.config.force_upcast


def prediction_type(pipe) -> str:
    return pipe.scheduler.config.get("prediction_type", "epsilon")
