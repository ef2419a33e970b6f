"""The keys every job kind has (JobConfig), their cross-key checks and the store's view of them. No torch.

jobs.py builds the three kinds on it: a walk, a one-word edit and a grid.
"""

import hashlib
import json
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, PrivateAttr, model_validator

from ..errors import MorphError
from .controlnets import ControlNetSpec
from .expr import parse_prompt_expression
from .messages import bad
from .sections import (MAX_TEXT, AnalysisSpec, Attention, BatchSize, DefineName, Embedding, GoldenSpec, HiresSpec,
                       Limits, LoraSpec, Scheduler, Section, Size, Text, lora_name)
from .webui_syntax import refuse_webui_syntax

# keys added after jobs existed: a job that leaves them unset keeps the store keys and hash it had before
ADDED_LATER = ("hires", "controlnets", "ip_adapter", "inversion", "attention")

# explain moves rows of a frame's own prompt tensor, which outer attention never reads (morph explain says it too)
OUTER_UNEXPLAINED = ("attention: outer blends the attentions to each keyframe's own prompt, so a frame's own word "
                     "rows reach no attention layer of the UNet and explain has none to move")


class JobConfig(Section):
    """The keys every job kind has."""

    name: str = Field("job", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=200)
    """Names the output folder and the video; default: the config file's name."""
    model: Text
    """A diffusers model id, local folder or single .safetensors file (SD 1.x, 2.x or XL, read from its files), or
    toy, tiny, tiny-sd2, tiny-sdxl."""
    configs_from: str | None = Field(None, min_length=1)
    """For a single-file checkpoint: a diffusers folder or hub id whose configs describe it (default: the hub model
    diffusers picks for its family)."""
    allow_pickle: bool = False
    """Allow .ckpt/.pt checkpoints and VAEs (pickle: loading one can run code); .safetensors needs nothing."""
    vae: str | None = Field(None, min_length=1)
    """A diffusers VAE folder, hub id (e.g. madebyollin/sdxl-vae-fp16-fix) or single file instead of the model's."""
    embeddings: list[Text | Embedding] = []
    """Textual-inversion .safetensors files, each a path or {path, token}: its token works in prompts."""
    loras: list[LoraSpec] = []
    """LoRA files, each {path, name, scale}; a keyframe mapping's loras: {name: scale} walks their strengths."""
    controlnets: list[ControlNetSpec] = []
    """ControlNets, each {path, name, image, scale, start, end, preprocess, low, high}: the image's composition held
    for the whole walk; a keyframe mapping's controlnets: {name: scale} walks their strengths."""
    interpolation: Literal["lerp", "slerp"] = "slerp"
    """lerp, or slerp per token row (direction along the great circle, length linear)."""
    seed: int = Field(0, ge=0, le=2**64 - 1)
    """Seeds the one starting latent every frame shares."""
    height: Size | None = None
    """Pixels, a multiple of 8; default: the model's own size."""
    width: Size | None = None
    """Pixels, a multiple of 8; default: the model's own size."""
    num_inference_steps: int = Field(50, ge=1, le=1000)
    """Denoising steps per frame."""
    guidance_scale: float = Field(7.5, ge=0, le=100)
    """Classifier-free guidance."""
    negative_prompt: str = Field("", max_length=MAX_TEXT)
    """Encoded once, used for every frame."""
    scheduler: Scheduler | None = None
    """A diffusers scheduler class name such as DDIMScheduler, or {name, option: value, ...} with options of its
    config (timestep_spacing: trailing for few-step models); default: the model's own."""
    batch_size: BatchSize = "auto"
    """Frames per UNet call, or auto: on CUDA the largest batch that fits, elsewhere 4."""
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d{1,3})?)$")
    """auto (CUDA, else the CPU), cpu, cuda or cuda:N; mps is refused (it has no float64)."""
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    """auto: float16 on CUDA, float32 elsewhere."""
    fps: int = Field(20, ge=1, le=240)
    """Frames per second of the MP4."""
    output: str | None = Field(None, min_length=1)
    """Output folder; default: outputs/<name>."""
    safety_checker: bool = False
    """Run the model's NSFW checker; it blacks out flagged frames, and morph lists them."""
    compile: bool = False
    """torch.compile the UNet and VAE decoder: a slow first batch, faster after."""
    define: dict[DefineName, Text] = Field({}, json_schema_extra={"additionalProperties": False})
    """Names for prompts, usable in expressions: {cat: "a photo of a cat"}."""
    golden: GoldenSpec = GoldenSpec()
    """Tolerance for `morph golden check`."""
    limits: Limits = Limits()
    """Caps on frames and sizes."""
    analysis: AnalysisSpec = AnalysisSpec()
    """The storm map written after every walk: storm.png, filmstrip.png and the manifest's analysis."""
    hires: HiresSpec | None = None
    """A second pass at a larger size: {scale: 2, strength: 0.35, num_inference_steps: null, upscale: latent}."""
    attention: Attention | None = None
    """Walks: attention interpolation between keyframes, inner or outer, or {mode, fuse_self, until}; see
    docs/storms.md. Default: off."""
    _source: str | None = PrivateAttr(None)  # the config file's path (set by config_file.load_config)

    kind: ClassVar[str] = "job"

    @property
    def source(self) -> str | None:
        return self._source

    def embedding_paths(self) -> list[str]:
        """The textual-inversion files, whether written as a path or as {path, token}."""
        return [e if isinstance(e, str) else e.path for e in self.embeddings]

    def lora_names(self) -> list[str]:
        """Each LoRA's name: its own, else its file's stem."""
        return [lora.name or lora_name(lora.path) for lora in self.loras]

    def lora_paths(self) -> list[str]:
        return [lora.path for lora in self.loras]

    def controlnet_names(self) -> list[str]:
        """Each ControlNet's name: its own, else its path's stem."""
        return [controlnet.name or lora_name(controlnet.path) for controlnet in self.controlnets]

    def scheduler_choice(self) -> tuple[str | None, dict]:
        """The scheduler's class name (None: the model's own) and the options of its config that the job sets."""
        return (self.scheduler.name, self.scheduler.options()) if self.scheduler else (None, {})

    @property
    def output_dir(self) -> Path:
        return Path(self.output) if self.output else Path("outputs") / self.name

    def frame_count(self) -> int:
        """How many frames (walks, edits) or cells (grids) the job has."""
        raise NotImplementedError

    def prompt_sources(self) -> list[tuple[str, str]]:
        """Every prompt entry of the job as (its key, its text)."""
        raise NotImplementedError

    def prompt_terms(self, source: str, where: str) -> dict[str, float]:
        """One prompt entry as {prompt text: weight}: an expression when the job has define:, else plain text."""
        if self.define:
            return parse_prompt_expression(source, self.define, where)
        return {source: 1.0}

    def negative_terms(self, text: str, where: str) -> dict[str, float]:
        """A negative prompt as {prompt text: weight}, read as a walk's prompts are: an expression when the job has
        define:, else plain text (an edit's too: its negative is a sentence, not a word it walks through). An empty one
        is {}: the model's empty negative."""
        return JobConfig.prompt_terms(self, text, where) if text else {}

    def negative_sources(self) -> list[tuple[str, str]]:
        """Every negative prompt written, as (its key, its text)."""
        return [("negative_prompt", self.negative_prompt)]

    def prompt_texts(self) -> list[tuple[str, str]]:
        """Every text the text encoders read, as (the key it came from, the text): prompts and negative prompts,
        through define:."""
        read = [(where, source, self.prompt_terms) for where, source in self.prompt_sources()] \
            + [(where, source, self.negative_terms) for where, source in self.negative_sources()]
        return [(where, text) for where, source, terms in read for text in terms(source, where)]

    def negatives(self) -> list[tuple[str, str, str, float]]:
        """Each negative prompt with the key it came from, and the guidance_scale it renders at with that one's key."""
        return [("negative_prompt", self.negative_prompt, "guidance_scale", self.guidance_scale)]

    def classifier_free_guidance(self) -> bool:
        """Whether the UNet runs on a doubled batch: some frame renders at a guidance_scale above 1."""
        return max(guidance for *_, guidance in self.negatives()) > 1

    def to_dict(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)

    def frame_size(self, side: int = 512) -> tuple[int, int]:
        """The frames' height and width, the hires pass's where there is one (an unset side: `side`)."""
        height, width = self.height or side, self.width or side
        return self.hires.size(height, width) if self.hires else (height, width)

    def pixel_keys(self) -> dict:
        """The keys that decide the pixels, beyond the environment (device, dtype) the manifest records."""
        # spacing decides which frames a video shows, not the pixels of a frame at a given t (goldens are uniform)
        skip = {"name", "output", "batch_size", "golden", "fps", "device", "dtype", "compile", "limits", "analysis",
                "spacing", "video"}
        skip |= {key for key in ADDED_LATER if not getattr(self, key, None)}  # a job without them keeps the hash it had
        return {k: v for k, v in self.to_dict().items() if k not in skip}

    def pixel_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.pixel_keys(), sort_keys=True).encode()).hexdigest()[:16]

    @model_validator(mode="after")
    def _check_across_keys(self):
        """What one key cannot say alone: frame caps, every prompt expression parses, no text holds another tool's
        syntax that the text encoder would read as words, and no negative prompt sits where guidance cannot read it."""
        for key in ("height", "width"):
            value = getattr(self, key)
            if value is not None and value > self.limits.max_size:
                raise bad(key, value, f"expected at most {self.limits.max_size} pixels "
                                       "(raise limits.max_size to go beyond)")
        count = self.frame_count()
        if count > self.limits.max_frames:
            if getattr(self, "timing", None):
                raise MorphError(f"timing: {self.timing.duration:g} s of music at fps {self.fps} is {count} frames, "
                                 f"more than limits.max_frames ({self.limits.max_frames}); set a shorter "
                                 "timing.duration, or raise limits.max_frames to render it")
            raise MorphError(f"{'frames' if self.kind != 'grid' else 'grid'}: {count} frames is more than "
                             f"limits.max_frames ({self.limits.max_frames}); raise limits.max_frames to render it")
        for where, text in self.prompt_texts():
            refuse_webui_syntax(text, where)
        for where, negative, guided_by, guidance in self.negatives():
            if negative and guidance <= 1:  # diffusers too reads a negative prompt only under guidance
                raise MorphError(f"{where}: at {guided_by} {guidance:g} there is no classifier-free guidance, so no "
                                 f"negative prompt reaches the UNet; remove it, or set {guided_by} above 1")
        if self.attention and self.kind != "walk":
            what = {"edit": "a one-word edit", "grid": "a grid"}[self.kind]
            raise MorphError(f"attention: only a walk (prompts:) interpolates attention between its keyframes, and "
                             f"{what} has no keyframe renders to attend to; remove it")
        for key in ("ip_adapter", "hires"):  # each sets the UNet's attention or runs a pass of its own through it
            if self.attention and getattr(self, key, None):
                raise MorphError(f"attention: does not combine with {key} yet; remove one of them")
        if self.attention and self.attention.mode == "outer" and self.analysis.explain:
            raise MorphError(f"analysis.explain: {OUTER_UNEXPLAINED}; use attention: inner, or remove analysis.explain")
        names = self.lora_names()
        for i, (name, lora) in enumerate(zip(names, self.loras)):
            if name in names[:i]:
                raise MorphError(f"loras[{i}]: a second LoRA named {name!r}; give each a name: of its own")
            self._check_strength(f"loras[{i}].scale", lora.scale, "max_lora_scale")
        return self

    @model_validator(mode="after")
    def _check_hires(self):
        """The second pass runs at least one step, and its frames stay within limits.max_size."""
        if self.hires is None:
            return self
        steps, key = self.hires.schedule(self.num_inference_steps), \
            "hires.num_inference_steps" if self.hires.num_inference_steps else "num_inference_steps"
        if self.hires.steps(steps) < 1:
            raise MorphError(f"hires.strength: {self.hires.strength:g} of {key} {steps} is no step of the second "
                             "pass; raise hires.strength or hires.num_inference_steps")
        for key in ("height", "width"):
            value = getattr(self, key)
            scaled = value and self.hires.size(value, value)[0]
            if value and scaled > self.limits.max_size:
                raise MorphError(f"hires.scale: {self.hires.scale:g} makes {key} {value} into {scaled} pixels, more "
                                 f"than limits.max_size ({self.limits.max_size}); lower it, or raise limits.max_size")
        return self

    @model_validator(mode="after")
    def _check_controlnets(self):
        names = self.controlnet_names()
        for i, (name, controlnet) in enumerate(zip(names, self.controlnets)):
            if name in names[:i]:
                raise MorphError(f"controlnets[{i}]: a second ControlNet named {name!r}; give each a name: of its own")
            controlnet.check(f"controlnets[{i}]")
            self._check_strength(f"controlnets[{i}].scale", controlnet.scale, "max_controlnet_scale")
        return self

    def _check_strength(self, key: str, scale: float, limit: str) -> None:
        """A LoRA's or a ControlNet's strength within the limit `limit` (limits.max_lora_scale, ...), either sign."""
        cap = getattr(self.limits, limit)
        if abs(scale) > cap:
            raise bad(key, scale, f"expected a strength from {-cap:g} to {cap:g} (raise limits.{limit} to go beyond)")
