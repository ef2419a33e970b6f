"""The page's form and the YAML beside it, each made from the other. The YAML is the job: the form shows the keys it
has fields for, and writing the form back changes only the fields that differ from what the YAML already says, and
only the lines of those top-level keys, so keys without a field (analysis, timing, loras, a keyframe's ease, ...),
comments and the YAML's own spelling of untouched keys stay as they were."""

import yaml
from pydantic import TypeAdapter, ValidationError

from ..config.sections import Spacing, lora_name
from ..config.yaml_file import Yaml12Loader, read_yaml
from ..errors import MorphError
from .configs import dump

FIELDS = ("name", "model", "frames", "width", "height", "num_inference_steps", "interpolation", "spacing")
# image: a picture DDIM-inverted into the keyframe's start; reference: an IP-Adapter's picture (both under inputs/)
KEYFRAME_COLUMNS = ("prompt", "seed", "negative_prompt", "guidance_scale", "image", "reference")
# what the table's header shows for a column, where not its key: Gradio's page looks a bare "image" up among its own
# translations (a group of them), and logs a warning in the browser each time it shows it
HEADERS = {"image": "image file", "reference": "reference file"}
NEW_JOB = {"name": "walk", "model": "toy", "prompts": ["a red circle", "a green triangle"], "frames": 48,
           "num_inference_steps": 25, "guidance_scale": 5.0, "seed": 3}


def parse(text: str) -> dict:
    """The YAML text as a mapping (YAML 1.2 booleans, as morph reads configs); a one-line error otherwise."""
    raw = read_yaml(text) if text.strip() else {}
    if not isinstance(raw, dict):
        raise MorphError("the YAML is not a mapping of keys such as model: and prompts:")
    return raw


def rewritten(text: str, raw: dict) -> str:
    """The YAML `text` changed to say `raw`: each top-level key whose value changed is written anew where it stands,
    a key `raw` lacks is removed, a new one added at the end; every other line (comments, blank lines, how untouched
    keys are spelled) stays as written. Where that cannot say `raw` (anchors, a flow mapping), all of it anew."""
    before = parse(text)
    node = yaml.compose(text, Loader=Yaml12Loader) if before else None
    pairs = node.value if isinstance(node, yaml.MappingNode) else []
    spans = [(key.value, _line_start(text, key.start_mark.index), _line_end(text, _end(value))) for key, value in pairs]
    if any(value.start_mark.index < key.start_mark.index for key, value in pairs) or any(
            end <= start for _, start, end in spans):  # an alias: its value's text is another key's, not its own
        return dump(raw)
    out, at = [], 0
    for key, start, end in spans:
        out.append(text[at:start])
        if key in raw and raw[key] == before.get(key):
            out.append(text[start:end])
        elif key in raw:
            out.append(dump({key: raw[key]}))
        at = end
    out.append(text[at:])
    written = {key for key, _, _ in spans}
    added = {key: value for key, value in raw.items() if key not in written}
    result = "".join(out)
    result += ("\n" if result and not result.endswith("\n") else "") + (dump(added) if added else "")
    try:
        return result if spans and parse(result) == raw else dump(raw)
    except MorphError:  # the pieces did not join into YAML (a flow mapping's keys share a line)
        return dump(raw)


def _end(node) -> int:
    """Where a value's own text ends: a block collection's end mark lies past the comments after it, its last item's
    does not."""
    while isinstance(node, yaml.CollectionNode) and not node.flow_style and node.value:
        node = node.value[-1][1] if isinstance(node, yaml.MappingNode) else node.value[-1]
    return node.end_mark.index


def _line_start(text: str, index: int) -> int:
    return text.rfind("\n", 0, index) + 1


def _line_end(text: str, index: int) -> int:
    """The start of the line after the one `index` is on (`index` itself when it starts a line)."""
    if index == 0 or text[index - 1] == "\n":
        return index
    end = text.find("\n", index)
    return len(text) if end < 0 else end + 1


def lora_columns(raw: dict) -> list[str]:
    """A keyframe column for each LoRA the job loads: 'lora:<name>', its strength at that keyframe."""
    names = []
    for entry in raw.get("loras") or []:
        if isinstance(entry, dict) and (entry.get("name") or entry.get("path")):
            names.append(str(entry.get("name") or lora_name(str(entry["path"]))))
    return [f"lora:{name}" for name in names]


def headers(raw: dict) -> list[str]:
    """The keyframe table's header: each column's name, then one for each LoRA the job loads."""
    return [HEADERS.get(key, key) for key in KEYFRAME_COLUMNS] + lora_columns(raw)


def form_of(raw: dict, count: int | None = None) -> dict:
    """The form's values for a config mapping: its fields, and the keyframes as rows of text cells ('' = the top
    level's value). `count`: the walk's frame count where the studio accepts the config (with music timing, only
    it knows the count); else a `frames` list's steps per segment and the first frame."""
    values = {key: raw.get(key) for key in FIELDS}
    if count is not None and (isinstance(values["frames"], list) or raw.get("timing")):
        values["frames"] = count
    elif isinstance(values["frames"], list):
        values["frames"] = sum(n for n in values["frames"] if isinstance(n, int)) + 1
    values["spacing"] = _spacing_mode(raw.get("spacing"))
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


def _spacing_mode(spacing) -> str | None:
    """The spacing mode the schema reads `spacing` as (a mapping with even's options and no mode is even); None
    where it refuses it (the message under the YAML says why)."""
    try:
        return TypeAdapter(Spacing).validate_python(spacing if spacing is not None else {}).mode
    except (ValidationError, MorphError):
        return None


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


def with_form(raw: dict, values: dict, count: int | None = None) -> dict:
    """`raw` with the form's `values` written in where they differ from what `raw` shows (`count`: as form_of's)."""
    shown, raw = form_of(raw, count), dict(raw)
    columns = lora_columns(raw)
    for key in FIELDS:
        value = values.get(key)
        if value == shown[key] or (key == "spacing" and value == "uniform" and "spacing" not in raw):
            continue
        if key == "spacing" and isinstance(raw.get("spacing"), dict) and value != "uniform":
            raw["spacing"] = {**raw["spacing"], "mode": value}  # even's options stay; uniform has none
        elif value is None or value == "":
            raw.pop(key, None)
        else:
            raw[key] = int(value) if isinstance(value, float) and value.is_integer() else value
    rows = [list(row) for row in values.get("keyframes") or []]
    if rows != shown["keyframes"] and (any(_prompt(row) for row in rows) or "prompts" in raw):
        entries = raw.get("prompts") if isinstance(raw.get("prompts"), list) else []
        # each row keeps what the table has no column for (ease, ...) of the keyframe it edits
        keyframes = [_keyframe(row, None if i is None else shown["keyframes"][i],
                               entries[i] if i is not None and i < len(entries) else None, columns)
                     for row, i in zip(rows, _edited(rows, shown["keyframes"]))]
        raw["prompts"] = [entry for entry in keyframes if entry is not None]
    return raw


def _edited(rows: list[list], shown: list[list]) -> list[int | None]:
    """The keyframe each row edits: row i is keyframe i while the table keeps its length; once rows were added or
    deleted, positions moved, so a row edits the keyframe with its prompt where one row and one keyframe alone have
    it, and any other row is new (None: it has only what its cells say)."""
    if len(rows) == len(shown):
        return list(range(len(rows)))
    now, before = [_prompt(row) for row in rows], [_prompt(row) for row in shown]
    return [before.index(text) if text and now.count(text) == 1 and before.count(text) == 1 else None
            for text in now]


def _prompt(row: list) -> str:
    return str(row[0]).strip() if row and row[0] is not None else ""


def _keyframe(row: list, shown: list | None, entry, columns: list[str]):
    """A keyframe row as the config writes it: its entry as written while the row shows it unchanged, else that
    entry with the cells that changed written in (keys without a column stay), as the prompt alone when it sets
    nothing else; None for a row without a prompt (a keyframe removed)."""
    if not _prompt(row):
        return None
    if row == shown:
        return entry
    entry = dict(entry) if isinstance(entry, dict) else {} if entry is None else {"prompt": entry}
    changed = {key: cell for key, cell, before in zip([*KEYFRAME_COLUMNS, *columns], row, shown or [""] * len(row))
               if cell != before}
    for key, cell in changed.items():
        if not key.startswith("lora:"):
            _set(entry, key, _prompt(row) if key == "prompt" else _value(cell))
    if "image" in changed and "image" not in entry:
        entry.pop("fit", None)  # how the image meets the frame: it goes with the image
    strengths = {key.removeprefix("lora:"): _value(cell) for key, cell in changed.items() if key.startswith("lora:")}
    if strengths:
        loras = dict(entry["loras"]) if isinstance(entry.get("loras"), dict) else {}
        for name, value in strengths.items():
            _set(loras, name, value)
        _set(entry, "loras", loras or None)
    return entry["prompt"] if list(entry) == ["prompt"] else entry


def _set(mapping: dict, key: str, value) -> None:
    """mapping[key] = value; None removes the key (an empty cell: the top level's value)."""
    if value is None:
        mapping.pop(key, None)
    else:
        mapping[key] = value
