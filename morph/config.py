"""Load and validate a job's YAML config. No torch here: a bad config fails before any model loads."""

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from .errors import MorphError
from .expr import parse_number, parse_prompt_expression

INTERPOLATIONS = ("lerp", "slerp")
DTYPES = ("auto", "float32", "float16", "bfloat16")
TOLERANCES = ("exact", "same-device", "cross-device")  # golden presets, defined in golden.py
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass
class EditConfig:
    word: str  # the word of `base` whose token slots are edited
    prompts: list[str]  # what the slots walk through: words or expressions over `define`
    occurrence: int | None = None  # which occurrence of `word` (1-based) when it appears more than once
    slots: list[int] | None = None  # expert override: explicit slot indices (BOS = 0)


@dataclass
class GridAxis:
    steps: int  # number of cells along this axis
    start: str | float  # rows: the first prompt (expression); columns: the first coefficient
    end: str | float  # rows: the last prompt; columns: the last coefficient
    add: str | None = None  # columns only: the prompt added k times to each row's base


@dataclass
class GridConfig:
    rows: GridAxis
    columns: GridAxis


@dataclass
class GoldenConfig:
    tolerance: str | None = None  # preset name; None: chosen from the environments compared
    min_psnr: float | None = None  # per-key overrides of the preset's thresholds
    min_ssim: float | None = None
    max_abs_diff: int | None = None


@dataclass
class JobConfig:
    name: str  # names the output folder and the video
    model: str  # diffusers model id, local diffusers folder, "tiny" or "toy"
    prompts: list[str] = field(default_factory=list)  # keyframes in order (texts, or expressions over `define`)
    frames: int | list[int] = 100  # total frames, or steps per segment ([100, 300] -> 401 frames)
    interpolation: str = "slerp"  # lerp | slerp
    seed: int = 0  # seeds the one starting latent every frame shares
    height: int | None = None  # None: the model's default size
    width: int | None = None
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    negative_prompt: str = ""
    scheduler: str | None = None  # diffusers scheduler class name; None: the model's own
    batch_size: int | str = "auto"  # frames per UNet call, or auto (CUDA: what fits in memory; elsewhere 4)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: str = "auto"  # auto (float16 on CUDA, float32 elsewhere) | float32 | float16 | bfloat16
    fps: int = 20
    output: str | None = None  # None: outputs/<name>
    safety_checker: bool = False  # run the model's NSFW checker (it blacks out flagged frames)
    compile: bool = False  # torch.compile the UNet and VAE decoder (a slow first batch, faster after)
    define: dict[str, str] = field(default_factory=dict)  # names usable in prompt expressions
    base: str | None = None  # the sentence an `edit` job edits
    edit: EditConfig | None = None
    grid: GridConfig | None = None
    golden: GoldenConfig = field(default_factory=GoldenConfig)
    source: str | None = None  # the config file's path (set by load_config, not a YAML key)

    @property
    def kind(self) -> str:
        return "grid" if self.grid else "edit" if self.edit else "walk"

    @property
    def output_dir(self) -> Path:
        return Path(self.output) if self.output else Path("outputs") / self.name

    def prompt_sources(self) -> list[tuple[str, str]]:
        """Every prompt entry of the job as (its key, its text)."""
        if self.grid:
            return [("grid.rows.from", self.grid.rows.start), ("grid.rows.to", self.grid.rows.end),
                    ("grid.columns.add", self.grid.columns.add)]
        if self.edit:
            return [(f"edit.prompts[{i}]", p) for i, p in enumerate(self.edit.prompts)]
        return [(f"prompts[{i}]", p) for i, p in enumerate(self.prompts)]

    def prompt_terms(self, source: str, where: str) -> dict[str, float]:
        """One prompt entry as {prompt text: weight}.

        An entry is an expression when the job has define: (names stand for their texts) or is an
        edit (a bare name is the word itself); otherwise it is plain prompt text.
        """
        if self.edit is not None:
            return parse_prompt_expression(source, self.define, where, bare_names_are_text=True)
        if self.define:
            return parse_prompt_expression(source, self.define, where)
        return {source: 1.0}

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "source"}

    def pixel_keys(self) -> dict:
        """The keys that decide the pixels, beyond the environment (device, dtype) the manifest records."""
        skip = {"name", "output", "batch_size", "golden", "source", "fps", "device", "dtype", "compile"}
        return {k: v for k, v in self.to_dict().items() if k not in skip}

    def pixel_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.pixel_keys(), sort_keys=True).encode()).hexdigest()[:16]


def _bad(key: str, value, allowed: str) -> MorphError:
    return MorphError(f"{key}: {value!r} is not allowed; {allowed}")


def _int(raw: dict, key: str, default, minimum: int, allowed: str, at: str = ""):
    value = raw.get(key, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _bad(at + key, value, allowed)
    return value


def _float(raw: dict, key: str, default: float, minimum: float, at: str = "") -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise _bad(at + key, value, f"expected a number >= {minimum}")
    return float(value)


def _str(raw: dict, key: str, default, choices=None, at: str = ""):
    value = raw.get(key, default)
    if value is None and default is None:
        return None
    if not isinstance(value, str) or (choices and value not in choices):
        raise _bad(at + key, value, f"expected one of: {', '.join(choices)}" if choices else "expected a string")
    return value


def _no_unknown_keys(raw: dict, known, where: str) -> None:
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise MorphError(f"{where}unknown key {unknown[0]!r}; allowed keys: {', '.join(sorted(known))}")


def _size(raw: dict, key: str) -> int | None:
    value = _int(raw, key, None, 8, "expected a multiple of 8, at least 8")
    if value is not None and value % 8:
        raise _bad(key, value, "expected a multiple of 8 (the VAE works on 8x8 pixel blocks)")
    return value


def _string_list(raw: dict, key: str, minimum: int, what: str, at: str = "") -> list[str]:
    value = raw.get(key)
    if not isinstance(value, list) or len(value) < minimum or not all(isinstance(v, str) and v for v in value):
        raise _bad(at + key, value, f"expected a list of {minimum} or more {what}")
    return value


def _frames(raw: dict, n_keyframes: int) -> int | list[int]:
    value = raw.get("frames", 100)
    segments = n_keyframes - 1
    if isinstance(value, list):
        if len(value) != segments or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
            raise _bad("frames", value, f"a list gives the steps of each segment: {segments} whole number(s) >= 1 "
                                        f"for {n_keyframes} keyframes")
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < max(2, segments + 1):
        raise _bad("frames", value, f"expected a whole number >= {max(2, segments + 1)} "
                                    f"(every one of the {n_keyframes} keyframes lands on a frame)")
    return value


def _define(raw: dict) -> dict[str, str]:
    value = raw.get("define", {})
    if not isinstance(value, dict):
        raise _bad("define", value, "expected a mapping of names to prompt texts")
    for name, text in value.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise _bad("define", name, "names are letters, digits and _, not starting with a digit")
        if not isinstance(text, str) or not text:
            raise _bad(f"define.{name}", text, "expected a prompt text")
    return value


def _edit(raw: dict) -> EditConfig:
    value = raw["edit"]
    if not isinstance(value, dict):
        raise _bad("edit", value, "expected a mapping with word and prompts")
    _no_unknown_keys(value, [f.name for f in fields(EditConfig)], "edit: ")
    word = _str(value, "word", "", at="edit.")
    if not word:
        raise MorphError("edit.word: missing; name the word of base whose slots are edited")
    prompts = _string_list(value, "prompts", 2, "prompts (the values the word walks through)", at="edit.")
    occurrence = _int(value, "occurrence", None, 1, "expected a whole number >= 1", at="edit.")
    slots = value.get("slots")
    if slots is not None and (not isinstance(slots, list) or not slots
                              or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in slots)):
        raise _bad("edit.slots", slots, "expected a list of slot indices >= 1 (BOS is 0)")
    return EditConfig(word=word, prompts=prompts, occurrence=occurrence, slots=slots)


def _grid(raw: dict) -> GridConfig:
    value = raw["grid"]
    if not isinstance(value, dict) or set(value) != {"rows", "columns"}:
        raise _bad("grid", value, "expected a mapping with rows and columns")
    axes = {}
    for axis, keys in (("rows", {"from", "to", "steps"}), ("columns", {"add", "from", "to", "steps"})):
        spec = value[axis]
        if not isinstance(spec, dict):
            raise _bad(f"grid.{axis}", spec, f"expected a mapping with {', '.join(sorted(keys))}")
        _no_unknown_keys(spec, keys, f"grid.{axis}: ")
        missing = sorted(keys - set(spec))
        if missing:
            raise MorphError(f"grid.{axis}.{missing[0]}: missing; grid.{axis} needs {', '.join(sorted(keys))}")
        at = f"grid.{axis}."
        steps = _int(spec, "steps", None, 1, "expected a whole number >= 1", at=at)
        if axis == "rows":
            axes[axis] = GridAxis(steps=steps, start=_str(spec, "from", None, at=at), end=_str(spec, "to", None, at=at))
        else:
            start = parse_number(spec["from"], "grid.columns.from")
            end = parse_number(spec["to"], "grid.columns.to")
            axes[axis] = GridAxis(steps=steps, start=start, end=end, add=_str(spec, "add", None, at=at))
    return GridConfig(**axes)


def _golden(raw: dict) -> GoldenConfig:
    value = raw.get("golden", {})
    if not isinstance(value, dict):
        raise _bad("golden", value, "expected a mapping")
    _no_unknown_keys(value, [f.name for f in fields(GoldenConfig)], "golden: ")
    return GoldenConfig(
        tolerance=_str(value, "tolerance", None, TOLERANCES, at="golden."),
        min_psnr=_float(value, "min_psnr", 0.0, 0.0, at="golden.") if "min_psnr" in value else None,
        min_ssim=_float(value, "min_ssim", 0.0, -1.0, at="golden.") if "min_ssim" in value else None,
        max_abs_diff=_int(value, "max_abs_diff", None, 0, "expected a whole number 0..255", at="golden."),
    )


def validate(raw, default_name: str = "job") -> JobConfig:
    """Turn a parsed YAML mapping into a JobConfig, or raise MorphError naming the bad key."""
    if not isinstance(raw, dict):
        kind = "empty" if raw is None else f"a {type(raw).__name__}"
        raise MorphError(f"the config is {kind}, not a YAML mapping of keys such as model: and prompts:")
    _no_unknown_keys(raw, [f.name for f in fields(JobConfig) if f.name != "source"], "")
    model = _str(raw, "model", None)
    if not model:
        raise MorphError("model: missing; give a diffusers model id, a local diffusers folder, 'tiny' or 'toy'")
    name = _str(raw, "name", default_name)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise _bad("name", name, "use letters, digits, '.', '_' and '-' (it names files)")
    define = _define(raw)
    modes = [k for k in ("prompts", "edit", "grid") if k in raw]
    if len(modes) != 1:
        raise MorphError("a job has exactly one of prompts: (a walk), edit: (a one-word edit) or grid:; "
                         f"this config has {', '.join(modes) if modes else 'none'}")
    prompts, edit, grid, frames = [], None, None, raw.get("frames", 100)
    if "prompts" in raw:
        prompts = _string_list(raw, "prompts", 2, "prompts (the keyframes)")
        frames = _frames(raw, len(prompts))
    elif "edit" in raw:
        if not isinstance(raw.get("base"), str) or not raw["base"]:
            raise MorphError("base: missing; an edit job needs the sentence whose word it edits")
        edit = _edit(raw)
        frames = _frames(raw, len(edit.prompts))
    else:
        if "frames" in raw:
            raise MorphError("frames: not used by grid jobs; the grid's rows.steps x columns.steps sets the cells")
        grid = _grid(raw)
    if "base" in raw and edit is None:
        raise MorphError("base: only used together with edit:; remove it or add an edit: section")
    device = _str(raw, "device", "auto")
    if not _DEVICE.match(device):
        raise _bad("device", device, "expected auto, cpu, cuda, cuda:N or mps")
    config = JobConfig(
        name=name,
        model=model,
        prompts=prompts,
        frames=frames,
        interpolation=_str(raw, "interpolation", "slerp", INTERPOLATIONS),
        seed=_int(raw, "seed", 0, 0, "expected a whole number >= 0"),
        height=_size(raw, "height"),
        width=_size(raw, "width"),
        num_inference_steps=_int(raw, "num_inference_steps", 50, 1, "expected a whole number >= 1"),
        guidance_scale=_float(raw, "guidance_scale", 7.5, 0.0),
        negative_prompt=_str(raw, "negative_prompt", ""),
        scheduler=_str(raw, "scheduler", None),
        batch_size=_batch_size(raw),
        device=device,
        dtype=_str(raw, "dtype", "auto", DTYPES),
        fps=_int(raw, "fps", 20, 1, "expected a whole number of frames per second >= 1"),
        output=_str(raw, "output", None),
        safety_checker=_bool(raw, "safety_checker", False),
        compile=_bool(raw, "compile", False),
        define=define,
        base=raw.get("base"),
        edit=edit,
        grid=grid,
        golden=_golden(raw),
    )
    for where, source in config.prompt_sources():
        config.prompt_terms(source, where)
    return config


def _batch_size(raw: dict) -> int | str:
    if raw.get("batch_size", "auto") == "auto":
        return "auto"
    return _int(raw, "batch_size", "auto", 1, "expected a whole number >= 1 or auto")


def _bool(raw: dict, key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise _bad(key, value, "expected true or false")
    return value


def load_config(path: str | Path, **overrides) -> JobConfig:
    """Read a YAML job file; `overrides` (e.g. from the command line) replace its keys before validation."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise MorphError(f"cannot read config {path}: {e.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise MorphError(f"{path}: YAML syntax error{where}: {problem}") from None
    if isinstance(raw, dict):
        raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        config = validate(raw, default_name=path.stem)
    except MorphError as e:
        raise MorphError(f"{path}: {e}") from None
    config.source = str(path)
    return config


def parse_frame_spec(spec: str, count: int, where: str = "--frames") -> list[int]:
    """'0,17,100-120' -> sorted unique indices, each checked against `count` frames."""
    indices = set()
    for part in spec.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise MorphError(f"{where}: {spec!r} is not a frame list; write e.g. 0,17,100-120")
        first, last = int(match[1]), int(match[2] or match[1])
        if first > last or last >= count:
            raise MorphError(f"{where}: {part.strip()!r} is out of range; this job has frames 0-{count - 1}")
        indices.update(range(first, last + 1))
    return sorted(indices)
