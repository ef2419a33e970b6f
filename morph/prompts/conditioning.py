"""From a checked config and a loaded model to the path of conditionings: the keyframe tensors of a walk or a
one-word edit, a grid's three prompts, what walks along with the prompts, and where music places the frames."""

import torch

from ..config.jobs import JobConfig
from .easing import eased
from .encode import PromptEncoder
from ..errors import MorphError
from .path import GridPath, WalkPath, linspace
from .references import walk_references
from .latent import shared_latent


def keyframe_tensors(config: JobConfig, encoder: PromptEncoder) -> torch.Tensor:
    """Keyframe tensors [K, L, D] of a walk or a one-word edit, each encoded with its own LoRA strengths (where
    LoRAs change the text encoders)."""
    if config.kind == "edit":
        edit = config.edit
        return torch.stack([
            encoder.edit(config.base, edit.word, config.prompt_terms(p, f"edit.prompts[{i}]"), edit.occurrence,
                         edit.slots)
            for i, p in enumerate(edit.prompts)])
    return _encoded(encoder, config.keyframe_lora_scales(),
                    [lambda w=where, s=source: encoder.terms(config.prompt_terms(s, w))
                     for where, source in config.prompt_sources()])


def build_path(config: JobConfig, encoder: PromptEncoder, timing=None) -> WalkPath | GridPath:
    """The path of a job's frames: a grid's cells, or a walk's (or edit's) frames between its keyframe tensors,
    placed by the music when `timing` (audio.timed_schedule) is given and spacing is uniform."""
    if config.kind == "grid":
        rows, columns = config.grid.rows, config.grid.columns
        start, end, add = (encoder.terms(config.prompt_terms(source, where))
                           for where, source in config.prompt_sources())
        return GridPath(start, end, add, linspace(0, 1, rows.steps), linspace(columns.start, columns.end, columns.steps),
                        config.interpolation, names=(rows.start, rows.end, columns.add))
    keyframes = keyframe_tensors(config, encoder)
    path = WalkPath(keyframes, config.steps(), config.interpolation)
    if any(name != "linear" for name in config.segment_eases()):  # each segment's frames moved along its easing
        path = path.placed(path.segment, eased(path.segment, path.t, config.segment_eases()))
        path.eases = config.segment_eases()
    # music places the frames now; with spacing: even it warps the even spacing later (job.music)
    return path.placed(*timing[:2]) if timing and config.spacing.mode != "even" else path


def walk_along(path: WalkPath, config: JobConfig, encoder: PromptEncoder, pipe, height: int, width: int) -> None:
    """Where keyframes set their own seed, negative_prompt or guidance_scale, those walk with the prompts: the
    path's `along` (the seeds' noise, the negatives, the guidance) and its frames' `labels`. LoRA and ControlNet
    strengths always go along (every frame records its own), LoRAs with labels where keyframes set their own; an
    IP-Adapter's reference embeddings and strength go along where the job has one."""
    settings, varying, along, labels = config.keyframe_settings(), config.varying(), {}, {}
    if "seed" in varying:
        along["latent"] = torch.cat([shared_latent(pipe, s["seed"], height, width) for s in settings])
        labels["seeds"] = [s["seed"] for s in settings]
    scales = config.keyframe_lora_scales()
    if "negative_prompt" in varying:
        terms = [config.negative_terms(negative, where) for where, negative, _, _ in config.negatives()]
        along["negative"] = _encoded(encoder, scales, [lambda t=t: negative_tensor(encoder, t) for t in terms])
        labels["negative_prompts"] = terms
    elif encoder.loras is not None and any(own != encoder.loras.defaults.tolist() for own in scales):
        # a text-encoder LoRA changes the negative too: each keyframe's at its strengths, as its prompt
        terms = config.negative_terms(config.negative_prompt, "negative_prompt")
        along["negative"] = _encoded(encoder, scales, [lambda: negative_tensor(encoder, terms)] * len(scales))
    if "guidance_scale" in varying:
        along["guidance"] = torch.tensor([s["guidance_scale"] for s in settings], dtype=torch.float64)
    if config.loras:
        along["loras"] = torch.tensor(scales, dtype=torch.float64)
        path.lora_names = config.lora_names()
        if "loras" in varying:
            labels["loras"] = [dict(zip(path.lora_names, own)) for own in scales]
    if config.controlnets:  # always: every frame records its own strengths, which key its pixels
        along["controlnets"] = torch.tensor(config.keyframe_controlnet_scales(), dtype=torch.float64)
        path.controlnet_names = config.controlnet_names()
    references, named = walk_references(config, pipe)  # an IP-Adapter's reference images, where the job has one
    path.along, path.labels = {**along, **references}, {**labels, **named}


def negative_tensor(encoder: PromptEncoder, terms: dict[str, float]) -> torch.Tensor:
    """A negative prompt's tensor [L, D] from its weighted texts (config.negative_terms); none ({}) is the model's
    empty negative (all zeros where the pipeline makes it so)."""
    return encoder.terms(terms) if terms else encoder.negative("")


def _encoded(encoder: PromptEncoder, scales: list[list[float]], encodings) -> torch.Tensor:
    """[K, L, D]: encodings[k]() run with the text encoders' LoRAs at keyframe k's strengths scales[k]."""
    tensors = []
    for own, encode in zip(scales, encodings):
        with encoder.lora_scales(own):
            tensors.append(encode())
    return torch.stack(tensors)


def refuse_non_finite(config: JobConfig, path, negative: torch.Tensor) -> None:
    """A NaN or inf in a conditioning would render black or garbage frames: stop before rendering any."""
    named = list(zip((where for where, _ in config.prompt_sources()), path.sources())) + [("negative_prompt", negative)]
    for where, tensor in named:
        if not torch.isfinite(tensor).all():
            raise MorphError(f"{where}: its encoded tensor holds NaN or inf ({tensor.dtype} overflowed); "
                             "use smaller weights, or dtype: float32")
