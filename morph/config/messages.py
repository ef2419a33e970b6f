"""pydantic's findings about a config, said as morph's one line: `key.path: value is not allowed; expected ...`."""

import re
from typing import get_args

from ..errors import MorphError, did_you_mean

_EXPECTED = {
    "int_type": "expected a whole number", "int_from_float": "expected a whole number",
    "float_type": "expected a number", "finite_number": "expected a finite number",
    "bool_type": "expected true or false", "string_type": "expected a string (quote it)",
    "list_type": "expected a list", "dict_type": "expected a mapping", "model_type": "expected a mapping",
    "string_too_short": "expected a non-empty string",
}
SCHEDULER_HINT = "expected a diffusers scheduler class name such as DDIMScheduler"
_PATTERN_HINTS = {
    "name": "use letters, digits, '.', '_' and '-' (it names files)",
    "device": "expected auto, cpu, cuda, cuda:N or mps",
    "scheduler.name": SCHEDULER_HINT,
    "loras.name": "use letters, digits, '_' and '-', at most 100 (keyframes' loras: name it)",
    "loras.[key]": "a LoRA's name: letters, digits, '_' and '-', as loras: names it",
    "define": "names are letters, digits and _, not starting with a digit",
    "pad": "expected blur, black, white or #RRGGBB (six hex digits, e.g. #1a2b3c)",
}
_UNITS = {"hold_ends": " (seconds)", "duration": " (seconds)", "start": " (seconds)"}
_LIST_WHAT = {"prompts": "prompts (the keyframes)", "edit.prompts": "prompts (the values the word walks through)"}
_MISSING_HINTS = {
    "model": "give a diffusers model id, a local diffusers folder, 'tiny' or 'toy'",
    "base": "an edit job needs the sentence whose word it edits",
    "edit.word": "name the word of base whose slots are edited",
}


def short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 20]}...{text[-12:]} ({len(text)} characters)"


def bad(key: str, value, allowed: str) -> MorphError:
    return MorphError(f"{key}: {short(value)} is not allowed; {allowed}")


def key_path(loc: tuple) -> str:
    """('golden', 'min_psnr') -> 'golden.min_psnr'; ('prompts', 1) -> 'prompts[1]'."""
    key = ""
    for part in loc:
        if part == "[key]":  # pydantic's mark for "the key of a mapping", already named by the part before
            continue
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def _model_in(annotation):
    """The section class an annotation holds: itself, or inside list[...], X | None, Annotated[...]."""
    if hasattr(annotation, "model_fields"):
        return annotation
    return next((m for m in map(_model_in, get_args(annotation)) if m is not None), None)


def _section_at(cls, loc: tuple):
    """The model class at a location of nested sections (for the list of allowed keys)."""
    for part in loc:
        if isinstance(part, int):  # an entry of a list of sections
            continue
        field = next((f for name, f in cls.model_fields.items() if part in (name, f.alias)), None)
        cls = _model_in(field.annotation) if field is not None else None
        if cls is None:
            return None
    return cls


def _suggest(key: str, section) -> str:
    """What to write instead of an unknown key: the close ones, or every key of a small section."""
    if section is None:
        return ""
    keys = sorted(f.alias or name for name, f in section.model_fields.items())
    meant = did_you_mean(key, keys, n=3)
    if meant:
        return f"; {meant.strip()}"
    listed = ", ".join(keys)
    return f"; allowed keys: {listed}" if len(listed) <= 200 else "; `morph schema` lists the allowed keys"


def _number_word(cls, loc: tuple, value) -> str:
    """"a whole number" for an int field, "a number" for a float one (which takes 0.5 whatever the user wrote)."""
    section = _section_at(cls, loc[:-1])
    field = section.model_fields.get(str(loc[-1])) if section is not None else None
    annotation = field.annotation if field is not None else type(value)
    types = get_args(annotation) or (annotation,)  # int | None, Annotated[int, ...] or int itself
    return "a whole number" if int in types and float not in types else "a number"


def one_line(error: dict, cls) -> MorphError:
    loc, kind, value, ctx = error["loc"][1:], error["type"], error.get("input"), error.get("ctx") or {}
    key = key_path(loc)
    if kind == "extra_forbidden":
        section = _section_at(cls, loc[:-1])
        where = f"{key_path(loc[:-1])}: " if loc[:-1] else ""
        return MorphError(f"{where}unknown key {loc[-1]!r}{_suggest(str(loc[-1]), section)}")
    if kind == "missing":
        return MorphError(f"{key}: missing; {_MISSING_HINTS.get(key, 'this key is required')}")
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        sign = {"greater_than_equal": ">=", "less_than_equal": "<=", "greater_than": ">", "less_than": "<"}[kind]
        bound = next(iter(ctx.values()))
        number = _number_word(cls, loc, value)
        shown = f"{bound:g}" if isinstance(bound, float) else str(bound)
        return bad(key, value, f"expected {number} {sign} {shown}{_UNITS.get(str(loc[-1]), '')}")
    if kind == "multiple_of":
        return bad(key, value, f"expected a multiple of {ctx['multiple_of']} (the VAE works on 8x8 pixel blocks)")
    if kind == "literal_error":
        choices = re.findall(r"'(.*?)'", ctx["expected"])
        return bad(key, value, f"expected one of: {', '.join(choices)}")
    if kind == "string_pattern_mismatch":
        where = (re.sub(r"\[\d+\]", "", key), ".".join(map(str, loc[-3::2])), str(loc[-1]), str(loc[0]))
        hints = (_PATTERN_HINTS.get(k) for k in where)
        return bad(key, value, next((h for h in hints if h), "see `morph schema`"))
    if kind == "too_short" and isinstance(value, list):
        what = _LIST_WHAT.get(key, "entries")
        return bad(key, value, f"expected a list of {ctx['min_length']} or more {what}")
    if kind in ("list_type",) and key in _LIST_WHAT:
        return bad(key, value, f"expected a list of 2 or more {_LIST_WHAT[key]}")
    if kind == "value_error":
        return bad(key, value, str(ctx.get("error", error["msg"])))
    if kind == "string_too_long":
        return bad(key, value, f"expected at most {ctx['max_length']} characters")
    return bad(key, value, _EXPECTED.get(kind, error["msg"][0].lower() + error["msg"][1:]))


