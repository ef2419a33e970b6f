"""Attention interpolation (config `attention:`): each frame's attention layers also attend to the keys and values of
its segment's two keyframes, rendered beside the frames in the same UNet call (batch.Mechanism).

`widen` appends the keyframe rows the batch's frames need; `during` puts processors on the UNet's attention layers
that, for the first `until` fraction of the steps, give each frame row attention_math's inner or outer attention over
its keyframe rows' keys and values (self-attention: the keyframe renders' own hidden states at that step; outer
cross-attention: each keyframe's prompt, or negative in guidance's unconditional half), in both halves of
classifier-free guidance: interpolating the conditional half alone, guidance amplifies the halves' mismatch into
artefacts (on the toy, a frame at t = 0.1 moved by a mean 34/255 from plain slerp, against 0.8/255 with both halves).
Inner cross-attention is the layer's own: the key and value projections are linear, so attention to the keyframes'
keys and values mixed by t is attention to their tensors mixed by t, which is the frame's own prompt tensor under
`interpolation: lerp` (under slerp, the slerp the walk asked for; and `morph explain` has the frame's own rows to
move). Keyframe rows attend as the UNet's own processors would; after `until`, each frame attends to its own keys and
values only, which is plain attention.
"""

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..config.sections import AttentionSpec
from . import attention_math
from .batch import Mechanism, RenderSettings

# in the store key: 2, inner cross-attention to the frame's own tensor (1, before 2026-12-02: to the keyframes' keys
# and values mixed by t, whatever the walk's interpolation)
REVISION = 2
FIXED_KEYFRAME_ROWS = 3  # compile: a batch of consecutive frames within segments at least as long spans 3 keyframes


@dataclass
class _Rows:
    """What every processor of one batch reads: the frame rows come first in each half of the UNet's batch, then the
    keyframe rows (`rows` in all); `pairs` [frames, 2] the rows whose keys and values each frame attends to (its
    keyframes a and b; after `until`, its own row twice: plain attention), `t` [frames]."""

    frames: int
    rows: int
    pairs: torch.Tensor
    t: torch.Tensor

    def stop(self) -> None:
        """Plain attention from the next step on. In place: a compiled UNet reads the same tensor, so it compiles
        nothing new."""
        self.pairs.copy_(torch.arange(self.frames, device=self.pairs.device).view(-1, 1).expand(-1, 2))


def _heads(attn, x):
    """[R, N, H * d] -> [R, H, N, d] for the layer's H heads."""
    return x.view(x.shape[0], -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)


class InterpolatingProcessor:
    """An attention layer's processor: frame rows attend per the mode to their keyframe rows' keys and values, keyframe
    rows plainly; a layer this does not handle (a mask, spatial input) goes to the layer's own processor."""

    def __init__(self, own, spec: AttentionSpec):
        self.own, self.combine, self.fuse_self = own, getattr(attention_math, spec.mode), spec.fuse_self
        self.own_cross = spec.mode == "inner"  # see the module's docstring
        self.rows: _Rows | None = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        rows = self.rows
        plain = (rows is None or attention_mask is not None or hidden_states.dim() != 3
                 or attn.spatial_norm is not None or attn.group_norm is not None
                 or (self.own_cross and encoder_hidden_states is not None))
        if plain:
            return self.own(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        # every row through the projections in its own place: per-row LoRA strengths act on these layers
        q, k, v = (_heads(attn, f(x)) for f, x in ((attn.to_q, hidden_states), (attn.to_k, context),
                                                    (attn.to_v, context)))
        if attn.norm_q is not None:
            q, k = attn.norm_q(q), attn.norm_k(k)
        # each half of classifier-free guidance (one without it) is the frames, then the keyframes: the frames attend
        # to the keyframes of their own half, so that guidance's difference of the halves compares like with like
        halves = q.shape[0] // rows.rows
        q, k, v = (x.unflatten(0, (halves, rows.rows)) for x in (q, k, v))
        frames = slice(0, rows.frames)
        a, b = rows.pairs[:, 0], rows.pairs[:, 1]
        own = (k[:, frames], v[:, frames]) if self.fuse_self and encoder_hidden_states is None else None  # self
        framed = torch.stack([self.combine(q[h, frames], k[h, a], v[h, a], k[h, b], v[h, b], rows.t,
                                           own and (own[0][h], own[1][h])) for h in range(halves)])
        keyframes = slice(rows.frames, rows.rows)
        plain = attention_math.attend(q[:, keyframes].flatten(0, 1), k[:, keyframes].flatten(0, 1),
                                      v[:, keyframes].flatten(0, 1)).unflatten(0, (halves, -1))
        out = torch.cat([framed.to(q.dtype), plain], dim=1).flatten(0, 1)
        out = attn.to_out[1](attn.to_out[0](out.transpose(1, 2).flatten(2)))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


class AttentionInterpolation(Mechanism):
    """Frames attend to their segment's keyframes, rendered beside them (config `attention:`)."""

    name = "attention_interpolation"  # the manifest's "attention" names the processor classes

    def __init__(self, spec: AttentionSpec, path, fixed_shape: bool, keyframes_walking: dict | None = None):
        self.spec, self.path, self.fixed_shape = spec, path, fixed_shape
        self.keyframes_walking = keyframes_walking or {}
        self._processors = None  # made once per UNet, so that a compiled UNet sees the same objects every batch

    def identity(self) -> dict:
        """The settings, and what walks that a frame's own record holds only at its own t: a frame's self-attention
        reads its keyframes' renders, so their guidance and ControlNet strengths decide its pixels too (the whole
        walk's: changing one keyframe's renders every frame again)."""
        return {"revision": REVISION, **self.spec.model_dump(), **self.keyframes_walking}

    def widen(self, conds: torch.Tensor, walking: dict, probe: bool) -> tuple[torch.Tensor, dict]:
        """Appends the keyframe rows the frames need (segment s: keyframes s and s + 1), each with what walks along at
        its keyframe; `walking["attends"]` [B', 2]: the rows each row attends to (a keyframe row: itself)."""
        frames, last = conds.shape[0], self.path.keyframes.shape[0] - 1
        start, end = walking["segment"], (walking["segment"] + 1).clamp_max(last)
        keys = sorted(set(start.tolist()) | set(end.tolist()))
        # one shape for the compiled UNet, padded with the last keyframe again; the probe's copies of frame 0 carry
        # as many rows as a batch across a keyframe does (a walk with segments shorter than a batch may need more)
        if self.fixed_shape or probe:
            count = min(last + 1, FIXED_KEYFRAME_ROWS if len(keys) <= FIXED_KEYFRAME_ROWS else 2 * frames)
            keys += keys[-1:] * (count - len(keys))
        at = self.path.placed(keys, torch.zeros(len(keys), dtype=torch.float64))
        rows = range(len(keys))
        own = at.frame_inputs(rows)
        row_of = {k: frames + keys.index(k) for k in keys}
        pairs = torch.tensor([[row_of[int(s)], row_of[int(e)]] for s, e in zip(start, end)], dtype=torch.long)
        itself = torch.arange(frames, frames + len(keys)).view(-1, 1).expand(-1, 2)
        widened = {name: torch.cat([value, own[name].to(value)]) for name, value in walking.items()}
        widened["attends"] = torch.cat([pairs, itself])
        return torch.cat([conds, at.conditionings(rows).to(conds)]), widened

    @contextmanager
    def during(self, pipe, conds: torch.Tensor, walking: dict, settings: RenderSettings):
        attends = walking["attends"]
        frames = int((attends[:, 0] != torch.arange(len(attends))).sum())  # the rows that attend to others
        device = pipe.device
        rows = _Rows(frames, len(attends), attends[:frames].to(device, copy=True),
                     walking["t"][:frames].to(device, torch.float32))
        unet = getattr(pipe.unet, "_orig_mod", pipe.unet)  # a compiled UNet's own module
        own = unet.attn_processors
        if self._processors is None:
            self._processors = {name: InterpolatingProcessor(processor, self.spec) for name, processor in own.items()}
        for processor in self._processors.values():
            processor.rows = rows
        unet.set_attn_processor(dict(self._processors))  # diffusers empties the dict it is given
        until = self.spec.until

        def step_ended(pipeline, i, timestep, tensors):
            # the steps that start within the first `until` of the loop (0.5 of 25 steps: 13), float error aside; the
            # first step always does (until > 0)
            if i + 1 == max(1, math.ceil(round(until * pipeline.num_timesteps, 9))):
                rows.stop()
            return {}

        try:
            yield {"callback_on_step_end": step_ended} if until < 1 else {}
        finally:
            unet.set_attn_processor(own)
            for processor in self._processors.values():
                processor.rows = None


def attention_interpolation(config, path) -> AttentionInterpolation | None:
    """The mechanism of a walk with `attention:` set (None without)."""
    if not config.attention:
        return None
    # both keyframes' seeds, negatives and LoRA strengths are in each frame's record already
    varying, walking = config.varying(), {}
    if "guidance_scale" in varying:
        walking["keyframe_guidance_scales"] = [s["guidance_scale"] for s in config.keyframe_settings()]
    if "controlnets" in varying:
        walking["keyframe_controlnet_scales"] = config.keyframe_controlnet_scales()
    return AttentionInterpolation(config.attention, path, config.compile, walking)
