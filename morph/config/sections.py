"""The sections of a job config and the value types they use: each a declared pydantic schema. No torch.

common_keys.py and jobs.py build the job kinds from them; keyframes.py holds a walk's keyframe entries.
"""

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, model_serializer, model_validator

from .messages import SCHEDULER_HINT
from ..errors import MorphError
from .expr import parse_number
from .presets import PRESET_NAMES, VideoOptions

TOLERANCES = ("exact", "same-device", "cross-device")  # golden presets, defined in golden.py
MAX_TEXT = 10_000  # characters in one prompt text; CLIP reads 77 tokens of it anyway
SINGLE_FILES = (".safetensors", ".ckpt", ".pt", ".bin", ".pth")  # weights a config may name as one file
MAX_MUSIC_S = 3600  # seconds of music a walk is timed to: an hour of video is already 72,000 frames at 20 fps


def _batch_size(value):
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 4096):
        return value
    raise ValueError("expected a whole number 1..4096 or auto")


def _frames(value):
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                                 for v in value):
        return value
    raise ValueError("expected a whole number of frames, or a list of steps per segment (whole numbers >= 1)")


def _number(value):
    """A grid coefficient: a number, or a string such as -3/7 in the expression grammar."""
    try:
        return parse_number(value, "value")
    except MorphError as e:
        raise ValueError(str(e).removeprefix("value: ")) from None


Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
Size = Annotated[int, Field(ge=8, multiple_of=8)]  # pixels; the VAE works on 8 x 8 blocks
BatchSize = Annotated[int | Literal["auto"], PlainValidator(
    _batch_size, json_schema_input_type=Annotated[int, Field(ge=1, le=4096)] | Literal["auto"])]
Frames = Annotated[int | list[int], PlainValidator(_frames, json_schema_input_type=int | list[Annotated[int, Field(
    ge=1)]])]
Number = Annotated[float, PlainValidator(_number, json_schema_input_type=float | str)]
DefineName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class Section(BaseModel):
    """Unknown keys are errors; no type coercion (YAML's `yes` is not true, '10' is not 10); numbers are finite."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, populate_by_name=True,
                              use_attribute_docstrings=True)  # the docstring under a field describes it


class EditSpec(Section):
    word: Text
    """The word of `base` whose token slots are edited."""
    prompts: list[Text] = Field(min_length=2)
    """What the word's slots walk through: words, or expressions over `define`."""
    occurrence: int | None = Field(None, ge=1)
    """Which occurrence of `word` (1-based), when it appears more than once."""
    slots: list[Annotated[int, Field(ge=1, le=1000)]] | None = Field(None, min_length=1)
    """Slot indices given by hand (BOS = 0), instead of finding the word's slots."""


class GridRows(Section):
    start: Text = Field(alias="from")
    """The first row's prompt (text or expression)."""
    end: Text = Field(alias="to")
    """The last row's prompt."""
    steps: int = Field(ge=1, le=1000)
    """Rows: cells along this axis."""


class GridColumns(Section):
    add: Text
    """The prompt added k times to each row's prompt tensor."""
    start: Number = Field(alias="from")
    """The first column's k: a number, or a fraction such as -3/7."""
    end: Number = Field(alias="to")
    """The last column's k."""
    steps: int = Field(ge=1, le=1000)
    """Columns: cells along this axis."""


class GridSpec(Section):
    rows: GridRows
    """Rows walk from one prompt to another."""
    columns: GridColumns
    """Columns add k times a third prompt."""


Ease = Literal["linear", "smoothstep", "cosine", "ease-in", "ease-out"]  # morph/easing.py draws each
SCHEDULER_NAME = r"^[A-Za-z][A-Za-z0-9_]*$"
SchedulerName = Annotated[str, Field(pattern=SCHEDULER_NAME)]
SchedulerOption = str | int | float | bool | list[str | int | float] | None


class SchedulerSpec(BaseModel):
    """A scheduler with options of its config: {name: DDIMScheduler, timestep_spacing: trailing}."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)
    name: SchedulerName
    """A diffusers scheduler class name; every other key is an option of its config, checked against the class."""
    __pydantic_extra__: dict[str, SchedulerOption]

    def options(self) -> dict:
        return dict(self.__pydantic_extra__ or {})

    @model_serializer(mode="wrap")
    def _a_name_alone_is_text(self, handler):
        """`scheduler: DDIMScheduler` dumps as it was written (so its config hash, and goldens, stay as they were)."""
        dumped = handler(self)
        return dumped["name"] if set(dumped) == {"name"} else dumped


def _scheduler(value):
    """`scheduler: DDIMScheduler` is short for `scheduler: {name: DDIMScheduler}`."""
    if isinstance(value, str):
        if not re.fullmatch(SCHEDULER_NAME, value):  # said of `scheduler:`, the key the user wrote
            raise ValueError(SCHEDULER_HINT)
        return {"name": value}
    return value


Scheduler = Annotated[SchedulerSpec, BeforeValidator(_scheduler, json_schema_input_type=SchedulerName | SchedulerSpec)]


class Embedding(Section):
    path: Text
    """A textual-inversion .safetensors file."""
    token: str | None = Field(None, pattern=r"^\S+$")
    """The token prompts use for it; default: the file's own, or <file name>."""


LoraName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,100}$")]


class IpAdapterSpec(Section):
    path: Text
    """An IP-Adapter .safetensors file (image_proj and ip_adapter keys, as diffusers' load_ip_adapter reads), a
    folder holding one, or a hub id whose files are in the Hugging Face cache (owner/name/sub/file.safetensors picks
    one of several)."""
    image_encoder: str | None = Field(None, min_length=1)
    """The CLIP image encoder's folder or cached hub id (owner/name/subfolder); default: the image_encoder/ folder
    beside the adapter file, where diffusers' load_ip_adapter looks."""
    scale: float = Field(1.0, ge=0, le=10)
    """How strongly each reference steers the picture, for every keyframe with a reference that sets none: 0 is the
    model without the adapter."""


def lora_name(path: str) -> str:
    """A LoRA's default name: its file's (or folder's, or hub id's) stem, with what a name cannot hold as _."""
    stem = Path(path.rstrip("/")).name.removesuffix(".safetensors")
    return re.sub(r"[^A-Za-z0-9_-]", "_", stem)[:100] or "lora"


class LoraSpec(Section):
    path: Text
    """A LoRA .safetensors file (diffusers/PEFT or kohya/A1111 keys), a folder holding one, or a hub id whose
    pytorch_lora_weights.safetensors is in the Hugging Face cache."""
    name: LoraName | None = None
    """How keyframes name it (letters, digits, _ and -); default: the file's stem."""
    scale: float = 1.0
    """Its strength for every keyframe that sets none: 0 is the model without it, 1 as trained."""


class GoldenSpec(Section):
    tolerance: Literal[TOLERANCES] | None = None
    """Preset for `morph golden check`; unset: same-device or cross-device by the environments compared."""
    min_psnr: float | None = Field(None, ge=0)
    """Override of the preset's lowest PSNR, in dB."""
    min_ssim: float | None = Field(None, ge=-1, le=1)
    """Override of the preset's lowest SSIM."""
    max_abs_diff: int | None = Field(None, ge=0, le=255)
    """Override of the preset's largest per-pixel difference (0..255)."""


class AnalysisSpec(Section):
    metric: Literal["ssim", "pixel", "lpips"] = "ssim"
    """How the change between neighbouring frames is measured: 1 - SSIM, mean pixel difference, or LPIPS."""
    storm_factor: float = Field(3.0, ge=1, le=1000)
    """A step is stormy when its change exceeds this many times the median change."""
    explain: bool = False
    """After the storm map, attribute the biggest step of each of the 3 worst storm zones to the prompt's words (as
    `morph explain` does): group renders through the frame store, shares in the manifest and report.html."""


class SpacingSpec(Section):
    mode: Literal["uniform", "even"] = "uniform"
    """uniform: equal steps of t; even: frames placed so that neighbours differ by about the same amount. Default:
    even when max_extra_renders or budget is given (they mean something only there), else uniform."""
    max_extra_renders: int | None = Field(None, ge=0)
    """even: most renders beyond the frame count spent on refining the spacing; default: half the frame count."""
    budget: Literal["segment", "walk"] = "segment"
    """even: segment keeps each segment's frame count; walk gives frames to the segments that change most."""

    def extra_renders(self, frames: int) -> int:
        return frames // 2 if self.max_extra_renders is None else self.max_extra_renders

    @model_validator(mode="after")
    def _only_even_takes_options(self):
        # their defaults pass: a manifest's config, every key written out, reads back
        options = sorted(k for k in {"max_extra_renders", "budget"} & self.model_fields_set
                         if getattr(self, k) != type(self).model_fields[k].default)
        if options and self.mode == "uniform":
            raise MorphError(f"spacing.{options[0]}: only spacing: even uses it; set mode: even, or remove it")
        return self


def _spacing(value):
    """`spacing: even` is short for `spacing: {mode: even}`; a mapping with even's options and no mode means even."""
    if isinstance(value, str):
        return {"mode": value}
    if isinstance(value, dict) and "mode" not in value and {"max_extra_renders", "budget"} & set(value):
        return {"mode": "even", **value}
    return value


Spacing = Annotated[SpacingSpec, BeforeValidator(_spacing, json_schema_input_type=Literal["uniform", "even"]
                                                  | SpacingSpec)]


class AttentionSpec(Section):
    """Attention interpolation (AID, He et al. 2024): each frame's attention layers also attend to its segment's two
    keyframes, rendered beside it in the same UNet call."""

    mode: Literal["inner", "outer"]
    """inner: self-attention over the keyframes' keys and values interpolated by t, cross-attention to the frame's own
    prompt tensor (the keyframes' mixed by t, as interpolation says); outer: the attentions to the two keyframes
    blended by t."""
    fuse_self: bool = False
    """Keep the frame's own self-attention keys and values beside the keyframes'."""
    until: float = Field(1.0, gt=0, le=1)
    """The fraction of denoising steps, from the first, that interpolate attention; plain attention after."""


def _attention(value):
    """`attention: inner` is short for `attention: {mode: inner}`."""
    if isinstance(value, str):
        return {"mode": value}
    if isinstance(value, dict):
        return value
    raise ValueError("expected inner, outer or a mapping {mode, fuse_self, until}; leave attention out to render "
                     "without it")


Attention = Annotated[AttentionSpec, BeforeValidator(_attention, json_schema_input_type=Literal["inner", "outer"]
                                                      | AttentionSpec)]


class VideoSpec(Section):
    """The files made from the frames: the master MP4 always, and one file per platform preset."""

    preset: Literal[PRESET_NAMES] | None = None
    """One platform file besides the master: x, instagram, tiktok, youtube, youtube-shorts, gif, webm."""
    presets: list[Literal[PRESET_NAMES]] = []
    """Several: [tiktok, gif, webm] (master is always written)."""
    fit: Literal["none", "pad", "crop"] = "none"
    """none keeps the render's aspect; pad or crop reach the platform's (9:16 on vertical-first platforms)."""
    pad: str = Field("black", pattern=r"^(blur|black|white|#[0-9a-fA-F]{6})$")
    """What fit: pad fills with: blur (a blurred copy of the frame), black, white or #RRGGBB."""
    loop: Literal["none", "pingpong"] = "none"
    """pingpong: forward, then back from the same frames (no frame twice at a turn)."""
    hold_ends: float = Field(0.0, ge=0, le=60)
    """Seconds the first and last frames are held."""
    reverse: bool = False
    """Show the walk from its last frame to its first."""

    def platforms(self) -> list[str]:
        """The platform files to make, in order, each once (not the master, which streams while rendering)."""
        names = ([self.preset] if self.preset else []) + self.presets
        return [n for i, n in enumerate(names) if n != "master" and n not in names[:i]]

    def options(self) -> VideoOptions:
        return VideoOptions(self.fit, self.pad, self.loop, self.hold_ends, self.reverse)

    @model_validator(mode="after")
    def _check(self):
        if self.preset and self.presets:
            raise MorphError("video: give preset (one) or presets (a list), not both")
        if self.options() != VideoOptions() and not self.platforms():
            raise MorphError("video: fit, pad, loop, hold_ends and reverse shape the platform files, and the "
                             "master is the walk itself; add a preset such as tiktok or gif")
        return self


class TimingSpec(Section):
    audio: Text
    """The music: a .wav, .mp3 or anything ffmpeg reads."""
    start: float = Field(0.0, ge=0)
    """Where in the music the video starts, in seconds."""
    duration: float | None = Field(None, gt=0, le=MAX_MUSIC_S)
    """Seconds of video (and music): the frame count is duration x fps; default: the track's length after start."""

    @model_validator(mode="after")
    def _track_length(self):
        """The music exists (refused here, before anything loads); no duration: the rest of the track after start."""
        if not Path(self.audio).is_file():
            raise MorphError(f"timing.audio: {self.audio!r} is not a file")
        if self.duration is None:
            from ..media.audio import track  # ffmpeg reads the track's header

            length = track(self.audio)[0] - self.start
            if length <= 0:
                raise MorphError(f"timing.start: {self.start:g} s is past the end of {self.audio!r} "
                                 f"({length + self.start:.2f} s long)")
            if length > MAX_MUSIC_S:
                raise MorphError(f"timing.audio: {self.audio!r} runs {length:.0f} s after timing.start, and morph "
                                 f"times at most {MAX_MUSIC_S} s of music; set timing.duration to the seconds to render")
            self.duration = length
        return self


class HiresSpec(Section):
    """A second pass: every frame rendered at the base size, upscaled, and denoised again from `strength`."""

    scale: float = Field(2.0, ge=1, le=4)
    """How much larger the frames become (each side rounded to a multiple of 8)."""
    strength: float = Field(0.35, gt=0, le=1)
    """How far the upscaled frame is noised again before the second pass (diffusers' img2img strength): 1 starts
    over from noise."""
    num_inference_steps: int | None = Field(None, ge=1, le=1000)
    """The second pass's schedule; it runs the last `strength` of these steps. Default: the job's."""
    upscale: Literal["latent", "lanczos"] = "latent"
    """latent: the stored base frame is encoded again by the VAE, and its latent upscaled (bilinear); lanczos: its
    pixels are upscaled, then encoded."""

    def size(self, height: int, width: int) -> tuple[int, int]:
        """The frames' height and width for a base height x width: each side times scale, to a multiple of 8."""
        return 8 * round(height * self.scale / 8), 8 * round(width * self.scale / 8)

    def schedule(self, job_steps: int) -> int:
        """The second pass's num_inference_steps: its own, or the job's."""
        return self.num_inference_steps or job_steps

    def steps(self, schedule: int) -> int:
        """How many steps of a `schedule` of num_inference_steps the second pass runs, as diffusers' img2img counts."""
        return int(schedule * self.strength)


class Limits(Section):
    """Caps that catch typos (frames: 10000000000) before they cost hours; raise them here on purpose."""

    max_frames: int = Field(100_000, ge=1)
    """Most frames of a walk or an edit, or cells of a grid."""
    max_size: int = Field(4096, ge=8)
    """Most pixels of height and of width."""
    max_lora_scale: float = Field(10.0, gt=0)
    """Largest strength of a LoRA, either sign; beyond it a LoRA only burns the picture, so it is usually a typo."""
    max_controlnet_scale: float = Field(10.0, gt=0)
    """Largest strength of a ControlNet, either sign; as a LoRA's, one beyond it only burns the picture."""
    max_image_pixels: int = Field(50_000_000, ge=1)
    """Most pixels (width x height) of a keyframe's image, read from its header before it is decoded."""
