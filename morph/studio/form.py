"""The page's form and the YAML beside it, each made from the other. The YAML is the job: the form shows the keys it
has fields for, and writing the form back changes only the fields that differ from what the YAML already says, so
keys without a field (analysis, timing, loras, ...) and the YAML's own spelling of untouched keys stay as they were."""

from ..config.sections import lora_name
from ..config.yaml_file import read_yaml
from ..errors import MorphError

FIELDS = ("name", "model", "frames", "width", "height", "num_inference_steps", "interpolation", "spacing")
KEYFRAME_COLUMNS = ("prompt", "seed", "negative_prompt", "guidance_scale")
NEW_JOB = {"name": "walk", "model": "toy", "prompts": ["a red circle", "a green triangle"], "frames": 48,
           "num_inference_steps": 25, "guidance_scale": 5.0, "seed": 3}


def parse(text: str) -> dict:
    """The YAML text as a mapping (YAML 1.2 booleans, as morph reads configs); a one-line error otherwise."""
    raw = read_yaml(text) if text.strip() else {}
    if not isinstance(raw, dict):
        raise MorphError("the YAML is not a mapping of keys such as model: and prompts:")
    return raw


def lora_columns(raw: dict) -> list[str]:
    """A keyframe column for each LoRA the job loads: 'lora:<name>', its strength at that keyframe."""
    names = []
    for entry in raw.get("loras") or []:
        if isinstance(entry, dict) and (entry.get("name") or entry.get("path")):
            names.append(str(entry.get("name") or lora_name(str(entry["path"]))))
    return [f"lora:{name}" for name in names]


def form_of(raw: dict) -> dict:
    """The form's values for a config mapping: its fields, and the keyframes as rows of text cells ('' = the top
    level's value)."""
    values = {key: raw.get(key) for key in FIELDS}
    if isinstance(values["frames"], list):  # frames per segment: the form shows the total
        values["frames"] = sum(n for n in values["frames"] if isinstance(n, int))
    spacing = raw.get("spacing")
    values["spacing"] = spacing.get("mode", "uniform") if isinstance(spacing, dict) else spacing or "uniform"
    values["interpolation"] = values["interpolation"] or "slerp"
    columns = lora_columns(raw)
    rows = []
    for entry in raw.get("prompts") or []:
        entry = entry if isinstance(entry, dict) else {"prompt": entry}
        loras = entry.get("loras") if isinstance(entry.get("loras"), dict) else {}
        rows.append([_cell(entry.get(key)) for key in KEYFRAME_COLUMNS] +
                    [_cell(loras.get(column.removeprefix("lora:"))) for column in columns])
    values["keyframes"] = rows
    return values


def _cell(value) -> str:
    return "" if value is None else str(value)


def _value(text):
    """A table cell as YAML reads it: 3 is a number, 'a cat' text, '' nothing."""
    text = str(text).strip() if text is not None else ""
    if not text:
        return None
    try:
        value = read_yaml(text)
    except MorphError:
        return text
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else text


def with_form(raw: dict, values: dict) -> dict:
    """`raw` with the form's `values` written in where they differ from what `raw` shows."""
    shown, raw = form_of(raw), dict(raw)
    for key in FIELDS:
        value = values.get(key)
        if value == shown[key] or (key == "spacing" and value == "uniform" and "spacing" not in raw):
            continue
        if key == "spacing" and isinstance(raw.get("spacing"), dict):
            raw["spacing"] = {**raw["spacing"], "mode": value}
        elif value is None or value == "":
            raw.pop(key, None)
        else:
            raw[key] = int(value) if isinstance(value, float) and value.is_integer() else value
    rows = [list(row) for row in values.get("keyframes") or [] if row and str(row[0]).strip()]
    if rows != [list(row) for row in shown["keyframes"]] and (rows or "prompts" in raw):
        raw["prompts"] = [_keyframe(row, lora_columns(raw)) for row in rows]
    return raw


def _keyframe(row: list, columns: list[str]):
    """A keyframe row as the config writes it: the prompt alone, or a mapping when it sets anything else."""
    entry = {key: _value(cell) for key, cell in zip(KEYFRAME_COLUMNS, row)}
    entry["prompt"] = str(row[0]).strip()
    loras = {column.removeprefix("lora:"): _value(cell) for column, cell in zip(columns, row[len(KEYFRAME_COLUMNS):])}
    entry["loras"] = {name: value for name, value in loras.items() if value is not None} or None
    entry = {key: value for key, value in entry.items() if value is not None}
    return entry["prompt"] if len(entry) == 1 else entry
