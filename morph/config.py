"""A job's YAML config as a declared schema (pydantic), loaded and checked before any model loads. No torch.

Three job kinds share the common keys: a walk (`prompts`), a one-word edit (`base` + `edit`) and a
grid (`grid`); which one a config is follows from which of those keys it has. Every key is
declared below with its type, range and meaning; `morph schema` prints the JSON Schema.
"""

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, ClassVar, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, PlainValidator, PrivateAttr, Tag, TypeAdapter,
                      ValidationError, model_validator)

from .errors import MorphError
from .expr import parse_number, parse_prompt_expression

TOLERANCES = ("exact", "same-device", "cross-device")  # golden presets, defined in golden.py
MAX_TEXT = 10_000  # characters in one prompt text; CLIP reads 77 tokens of it anyway


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
BatchSize = Annotated[int | Literal["auto"], PlainValidator(_batch_size, json_schema_input_type=int | Literal["auto"])]
Frames = Annotated[int | list[int], PlainValidator(_frames, json_schema_input_type=int | list[Annotated[int, Field(
    ge=1)]])]
Number = Annotated[float, PlainValidator(_number, json_schema_input_type=float | str)]
DefineName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class Section(BaseModel):
    """Unknown keys are errors; no type coercion (YAML's `yes` is not true, '10' is not 10); numbers are finite."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, populate_by_name=True)


class EditSpec(Section):
    word: Text  # the word of `base` whose token slots are edited
    prompts: list[Text] = Field(min_length=2)  # what the slots walk through: words or expressions over `define`
    occurrence: int | None = Field(None, ge=1)  # which occurrence of `word` (1-based) when it appears more than once
    slots: list[Annotated[int, Field(ge=1, le=1000)]] | None = Field(None, min_length=1)  # explicit slots (BOS = 0)


class GridRows(Section):
    start: Text = Field(alias="from")  # the first prompt (expression)
    end: Text = Field(alias="to")  # the last prompt
    steps: int = Field(ge=1, le=1000)  # cells along this axis


class GridColumns(Section):
    add: Text  # the prompt added k times to each row's base
    start: Number = Field(alias="from")  # the first k: a number or a fraction such as -3/7
    end: Number = Field(alias="to")  # the last k
    steps: int = Field(ge=1, le=1000)


class GridSpec(Section):
    rows: GridRows
    columns: GridColumns


class GoldenSpec(Section):
    tolerance: Literal[TOLERANCES] | None = None  # preset; None: chosen from the environments compared
    min_psnr: float | None = Field(None, ge=0)  # dB; per-key overrides of the preset's thresholds
    min_ssim: float | None = Field(None, ge=-1, le=1)
    max_abs_diff: int | None = Field(None, ge=0, le=255)


class Limits(Section):
    """Caps that catch typos (frames: 10000000000) before they cost hours; raise them on purpose here."""

    max_frames: int = Field(100_000, ge=1)  # frames of a walk, cells of a grid
    max_size: int = Field(4096, ge=8)  # pixels of height and of width


class JobConfig(Section):
    """The keys every job kind has."""

    name: str = Field("job", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=200)  # output folder and video
    model: Text  # diffusers model id, local diffusers folder, "tiny" or "toy"
    interpolation: Literal["lerp", "slerp"] = "slerp"
    seed: int = Field(0, ge=0, le=2**64 - 1)  # seeds the one starting latent every frame shares
    height: Size | None = None  # None: the model's default size
    width: Size | None = None
    num_inference_steps: int = Field(50, ge=1, le=1000)  # denoising steps per frame
    guidance_scale: float = Field(7.5, ge=0, le=100)  # classifier-free guidance
    negative_prompt: str = Field("", max_length=MAX_TEXT)
    scheduler: str | None = Field(None, pattern=r"^[A-Za-z][A-Za-z0-9_]*$")  # diffusers class name; None: model's
    batch_size: BatchSize = "auto"  # frames per UNet call; auto: CUDA what fits in memory, elsewhere 4
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d{1,3})?)$")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"  # auto: float16 on CUDA, float32 elsewhere
    fps: int = Field(20, ge=1, le=240)  # frames per second of the MP4
    output: str | None = Field(None, min_length=1)  # None: outputs/<name>
    safety_checker: bool = False  # run the model's NSFW checker (it blacks out flagged frames)
    compile: bool = False  # torch.compile the UNet and VAE decoder (a slow first batch, faster after)
    define: dict[DefineName, Text] = {}  # names usable in prompt expressions
    golden: GoldenSpec = GoldenSpec()
    limits: Limits = Limits()
    _source: str | None = PrivateAttr(None)  # the config file's path (set by load_config)

    kind: ClassVar[str] = "job"

    @property
    def source(self) -> str | None:
        return self._source

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

    def to_dict(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)

    def pixel_keys(self) -> dict:
        """The keys that decide the pixels, beyond the environment (device, dtype) the manifest records."""
        skip = {"name", "output", "batch_size", "golden", "fps", "device", "dtype", "compile", "limits"}
        return {k: v for k, v in self.to_dict().items() if k not in skip}

    def pixel_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.pixel_keys(), sort_keys=True).encode()).hexdigest()[:16]

    @model_validator(mode="after")
    def _check_across_keys(self):
        """What one key cannot say alone: frame caps, and every prompt expression parses."""
        for key in ("height", "width"):
            value = getattr(self, key)
            if value is not None and value > self.limits.max_size:
                raise _bad(key, value, f"expected at most {self.limits.max_size} pixels "
                                       "(raise limits.max_size to go beyond)")
        count = self.frame_count()
        if count > self.limits.max_frames:
            raise MorphError(f"{'frames' if self.kind != 'grid' else 'grid'}: {count} frames is more than "
                             f"limits.max_frames ({self.limits.max_frames}); raise limits.max_frames to render it")
        for where, source in self.prompt_sources():
            self.prompt_terms(source, where)
        return self


def segment_steps(frames: int | list[int], n_keyframes: int) -> list[int]:
    """Steps per segment: a list is taken as is; a total F shares F - 1 steps as evenly as possible."""
    if isinstance(frames, list):
        return list(frames)
    segments = n_keyframes - 1
    base, extra = divmod(frames - 1, segments)
    return [base + (1 if i < extra else 0) for i in range(segments)]


class _Keyframed(JobConfig):
    """Walks and edits: keyframes joined by segments of frames."""

    frames: Frames = 100  # total frames, or steps per segment ([100, 300] -> 401 frames)

    def keyframe_sources(self) -> list[str]:
        raise NotImplementedError

    def frame_count(self) -> int:
        return sum(segment_steps(self.frames, len(self.keyframe_sources()))) + 1

    @model_validator(mode="before")
    @classmethod
    def _check_frames(cls, raw):
        """frames against the number of keyframes, before the total is ever computed from it."""
        if not isinstance(raw, dict):
            return raw
        keyframes = raw.get("prompts") if "prompts" in raw else (raw.get("edit") or {}).get("prompts")
        if not isinstance(keyframes, list) or len(keyframes) < 2:
            return raw  # the field checks say what is wrong
        segments = len(keyframes) - 1
        value = raw.get("frames", 100)
        if isinstance(value, list) and len(value) != segments:
            raise _bad("frames", value, f"a list gives the steps of each segment: {segments} whole number(s) >= 1 "
                                        f"for {len(keyframes)} keyframes")
        if isinstance(value, int) and not isinstance(value, bool) and value < max(2, segments + 1):
            raise _bad("frames", value, f"expected a whole number >= {max(2, segments + 1)} "
                                        f"(every one of the {len(keyframes)} keyframes lands on a frame)")
        return raw


class WalkJob(_Keyframed):
    """A walk through two or more keyframe prompts."""

    prompts: list[Text] = Field(min_length=2)  # keyframes in order (texts, or expressions over `define`)
    kind: ClassVar[str] = "walk"

    def keyframe_sources(self) -> list[str]:
        return self.prompts

    def prompt_sources(self) -> list[tuple[str, str]]:
        return [(f"prompts[{i}]", p) for i, p in enumerate(self.prompts)]


class EditJob(_Keyframed):
    """A one-word edit: only the token slots of `edit.word` in `base` walk through `edit.prompts`."""

    base: Text  # the sentence whose word is edited
    edit: EditSpec
    kind: ClassVar[str] = "edit"

    def keyframe_sources(self) -> list[str]:
        return self.edit.prompts

    def prompt_sources(self) -> list[tuple[str, str]]:
        return [(f"edit.prompts[{i}]", p) for i, p in enumerate(self.edit.prompts)]

    def prompt_terms(self, source: str, where: str) -> dict[str, float]:
        """Edit values walk through words, so a bare name that is not defined is the word itself."""
        return parse_prompt_expression(source, self.define, where, bare_names_are_text=True)


class GridJob(JobConfig):
    """Rows walked between two prompts, columns adding k times a third."""

    grid: GridSpec
    kind: ClassVar[str] = "grid"

    def frame_count(self) -> int:
        return self.grid.rows.steps * self.grid.columns.steps

    def prompt_sources(self) -> list[tuple[str, str]]:
        return [("grid.rows.from", self.grid.rows.start), ("grid.rows.to", self.grid.rows.end),
                ("grid.columns.add", self.grid.columns.add)]


JOB_KINDS = {"prompts": WalkJob, "edit": EditJob, "grid": GridJob}


def _kind_of(raw) -> str | None:
    present = [key for key in JOB_KINDS if isinstance(raw, dict) and key in raw]
    return present[0] if len(present) == 1 else None


JOB_SCHEMA = TypeAdapter(Annotated[Union[tuple(Annotated[cls, Tag(key)] for key, cls in JOB_KINDS.items())],
                                   Discriminator(_kind_of)])


def json_schema() -> dict:
    """The JSON Schema of a job file, for editors and other tools."""
    schema = JOB_SCHEMA.json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "morph job", **schema}


# --- errors: pydantic's findings as morph's one line ------------------------------------------------

_EXPECTED = {
    "int_type": "expected a whole number", "int_from_float": "expected a whole number",
    "float_type": "expected a number", "finite_number": "expected a finite number",
    "bool_type": "expected true or false", "string_type": "expected a string (quote it)",
    "list_type": "expected a list", "dict_type": "expected a mapping", "model_type": "expected a mapping",
    "string_too_short": "expected a non-empty string",
}
_PATTERN_HINTS = {
    "name": "use letters, digits, '.', '_' and '-' (it names files)",
    "device": "expected auto, cpu, cuda, cuda:N or mps",
    "scheduler": "expected a diffusers scheduler class name such as DDIMScheduler",
    "define": "names are letters, digits and _, not starting with a digit",
}
_LIST_WHAT = {"prompts": "prompts (the keyframes)", "edit.prompts": "prompts (the values the word walks through)"}
_MISSING_HINTS = {
    "model": "give a diffusers model id, a local diffusers folder, 'tiny' or 'toy'",
    "base": "an edit job needs the sentence whose word it edits",
    "edit.word": "name the word of base whose slots are edited",
}


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 20]}...{text[-12:]} ({len(text)} characters)"


def _bad(key: str, value, allowed: str) -> MorphError:
    return MorphError(f"{key}: {_short(value)} is not allowed; {allowed}")


def _key(loc: tuple) -> str:
    """('golden', 'min_psnr') -> 'golden.min_psnr'; ('prompts', 1) -> 'prompts[1]'."""
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def _section_at(cls, loc: tuple):
    """The model class at a location of nested sections (for the list of allowed keys)."""
    for part in loc:
        field = next((f for name, f in cls.model_fields.items() if part in (name, f.alias)), None)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, Section)):
            return None
        cls = field.annotation
    return cls


def _allowed_keys(cls) -> str:
    return ", ".join(sorted(f.alias or name for name, f in cls.model_fields.items()))


def _one_line(error: dict, cls) -> MorphError:
    loc, kind, value, ctx = error["loc"][1:], error["type"], error.get("input"), error.get("ctx") or {}
    key = _key(loc)
    if kind == "extra_forbidden":
        section = _section_at(cls, loc[:-1])
        where = f"{_key(loc[:-1])}: " if loc[:-1] else ""
        allowed = f"; allowed keys: {_allowed_keys(section)}" if section else ""
        return MorphError(f"{where}unknown key {loc[-1]!r}{allowed}")
    if kind == "missing":
        return MorphError(f"{key}: missing; {_MISSING_HINTS.get(key, 'this key is required')}")
    number = "a whole number" if isinstance(value, int) else "a number"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        sign = {"greater_than_equal": ">=", "less_than_equal": "<=", "greater_than": ">", "less_than": "<"}[kind]
        bound = next(iter(ctx.values()))
        return _bad(key, value, f"expected {number} {sign} {bound}")
    if kind == "multiple_of":
        return _bad(key, value, f"expected a multiple of {ctx['multiple_of']} (the VAE works on 8x8 pixel blocks)")
    if kind == "literal_error":
        choices = re.findall(r"'(.*?)'", ctx["expected"])
        return _bad(key, value, f"expected one of: {', '.join(choices)}")
    if kind == "string_pattern_mismatch":
        return _bad(key, value, _PATTERN_HINTS.get(str(loc[0]), "see `morph schema`"))
    if kind == "too_short" and isinstance(value, list):
        what = _LIST_WHAT.get(key, "entries")
        return _bad(key, value, f"expected a list of {ctx['min_length']} or more {what}")
    if kind in ("list_type",) and key in _LIST_WHAT:
        return _bad(key, value, f"expected a list of 2 or more {_LIST_WHAT[key]}")
    if kind == "value_error":
        return _bad(key, value, str(ctx.get("error", error["msg"])))
    if kind == "string_too_long":
        return _bad(key, value, f"expected at most {ctx['max_length']} characters")
    return _bad(key, value, _EXPECTED.get(kind, error["msg"][0].lower() + error["msg"][1:]))


def validate(raw, default_name: str = "job") -> JobConfig:
    """Turn a parsed YAML mapping into a job config, or raise MorphError naming the bad key."""
    if not isinstance(raw, dict):
        kind = "empty" if raw is None else f"a {type(raw).__name__}"
        raise MorphError(f"the config is {kind}, not a YAML mapping of keys such as model: and prompts:")
    bad_keys = [k for k in raw if not isinstance(k, str)]
    if bad_keys:
        raise MorphError(f"{_short(bad_keys[0])}: keys are names such as model: and prompts:, not numbers or lists")
    modes = [k for k in JOB_KINDS if k in raw]
    if len(modes) != 1:
        raise MorphError("a job has exactly one of prompts: (a walk), edit: (a one-word edit) or grid:; "
                         f"this config has {', '.join(modes) if modes else 'none'}")
    if "base" in raw and "edit" not in raw:
        raise MorphError("base: only used together with edit:; remove it or add an edit: section")
    if "grid" in raw and "frames" in raw:
        raise MorphError("frames: not used by grid jobs; the grid's rows.steps x columns.steps sets the cells")
    raw = {"name": default_name, **raw}
    try:
        return JOB_SCHEMA.validate_python(raw)
    except ValidationError as e:
        raise _one_line(e.errors(include_url=False)[0], JOB_KINDS[modes[0]]) from None
    except RecursionError:
        raise MorphError("the config nests too deeply to be a job config") from None


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise MorphError(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}); "
                         "save the file as UTF-8") from None


def load_config(path: str | Path, **overrides) -> JobConfig:
    """Read a YAML job file; `overrides` (e.g. from the command line) replace its keys before validation."""
    path = Path(path)
    try:
        text = _decode(path, path.read_bytes())
    except OSError as e:
        raise MorphError(f"cannot read config {path}: {e.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise MorphError(f"{path}: YAML syntax error{where}: {problem}") from None
    except RecursionError:
        raise MorphError(f"{path}: the YAML nests too deeply to be a job config") from None
    if isinstance(raw, dict):
        raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        config = validate(raw, default_name=path.stem)
    except MorphError as e:
        raise MorphError(f"{path}: {e}") from None
    config._source = str(path)
    return config


def parse_frame_spec(spec: str, count: int, where: str = "--frames") -> list[int]:
    """'0,17,100-120' -> sorted unique indices, each checked against `count` frames."""
    if len(spec) > 10_000:
        raise MorphError(f"{where}: a frame list of {len(spec)} characters is too long; use ranges such as 0-399")
    indices = set()
    for part in spec.split(","):
        match = re.fullmatch(r"\s*(\d{1,9})\s*(?:-\s*(\d{1,9})\s*)?", part)
        if not match:
            raise MorphError(f"{where}: {_short(spec)} is not a frame list; write e.g. 0,17,100-120")
        first, last = int(match[1]), int(match[2] or match[1])
        if first > last or last >= count:
            raise MorphError(f"{where}: {part.strip()!r} is out of range; this job has frames 0-{count - 1}")
        indices.update(range(first, last + 1))
    return sorted(indices)
