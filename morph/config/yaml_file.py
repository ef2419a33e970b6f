"""A job's YAML file read into a config: YAML 1.2's booleans, no key written twice, the paths it names found beside
it, command-line overrides applied, then checked (config.validate). No torch."""

import re
from pathlib import Path

import yaml

from .sections import SINGLE_FILES
from .jobs import JobConfig, validate
from .messages import key_path, short
from ..errors import MorphError

# a keyframe's keys that name a file: its picture to invert (image), an IP-Adapter's picture (reference)
KEYFRAME_FILES = ("image", "reference")


class Yaml12Loader(yaml.SafeLoader):
    """YAML as YAML 1.2 reads booleans: only true and false. YAML 1.1's yes, no, on and off stay text, so that
    `compile: yes` is refused with the fix instead of passing as true (and a prompt `no` stays the word). A key
    written twice in one mapping is refused (refuse_duplicate_keys)."""

    def construct_document(self, node):
        refuse_duplicate_keys(node)
        return super().construct_document(node)


Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool",
                                   re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def refuse_duplicate_keys(root: yaml.Node) -> None:
    """A key written twice in one mapping, at any depth, is refused with both places: YAML loaders keep the last
    without a word, so `frames: 10` then `frames: 20` would render 20 frames of a config that also says 10. Keys a
    merge (<<: *base) brings in may be overridden, as merging means. Each node is read once (an alias is a node
    already read), so an alias bomb costs no more than its text; the first mistake in reading order is named."""
    stack, seen = [(root, ())], set()
    while stack:
        node, loc = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            children = [(item, (*loc, i)) for i, item in enumerate(node.value)]
        elif isinstance(node, yaml.MappingNode):
            _refuse_a_key_twice(node, loc)
            children = [(value, (*loc, _name(key))) for key, value in node.value]
        else:
            continue
        stack.extend(reversed(children))


def _refuse_a_key_twice(mapping: yaml.MappingNode, loc: tuple) -> None:
    first = {}
    for key, _ in mapping.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue
        mark = key.start_mark
        if (key.tag, key.value) not in first:
            first[key.tag, key.value] = mark
            continue
        earlier = first[key.tag, key.value]
        where = f"twice, on lines {earlier.line + 1} and {mark.line + 1}" if earlier.line != mark.line else \
            f"twice on line {mark.line + 1} (columns {earlier.column + 1} and {mark.column + 1})"
        raise MorphError(f"{key_path((*loc, _name(key)))}: written {where}; keep one of them")


def _name(key: yaml.Node) -> str:
    """A key as a message names it: as written when it is a name, else quoted and cut short (one line)."""
    if not isinstance(key, yaml.ScalarNode):
        return "?"
    return key.value if re.fullmatch(r"[\w.-]{1,100}", key.value) else short(key.value)


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise MorphError(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}); "
                         "save the file as UTF-8") from None


def _beside(value, folder: Path, always: bool, by_suffix: bool = True):
    """A relative path written in a config, as the path of that file beside the config (in `folder`). Model, VAE
    and configs_from names can be hub ids too: those (`always` false) are taken from beside the config only when
    they name a file there or (`by_suffix`) a single file, or start with ./ or ../. An IP-Adapter's hub id may
    name a file inside it (owner/name/models/ip-adapter_sd15.safetensors), so its suffix says nothing."""
    if not isinstance(value, str) or not value or Path(value).expanduser().is_absolute():
        return value
    there = folder / value
    if always or there.exists() or (by_suffix and value.lower().endswith(SINGLE_FILES)) or \
            value.startswith(("./", "../")):
        return str(there.resolve())
    return value


def resolve_paths(raw, folder: Path):
    """The paths a config reads (model, vae, configs_from, embeddings, loras, controlnets, ip_adapter, keyframes'
    references, timing.audio) relative to the config file's folder, made absolute, so a job runs the same from any
    current folder and its manifest names them wherever it is read. `output`, where the job writes, stays relative to
    the current folder, like its default."""
    if not isinstance(raw, dict):
        return raw
    raw = dict(raw)
    for key in ("model", "vae", "configs_from"):
        if key in raw:
            raw[key] = _beside(raw[key], folder, always=False)
    if isinstance(raw.get("embeddings"), list):
        raw["embeddings"] = [_beside(e, folder, True) if isinstance(e, str) else
                             {**e, "path": _beside(e.get("path"), folder, True)} if isinstance(e, dict) else e
                             for e in raw["embeddings"]]
    if isinstance(raw.get("loras"), list):  # a LoRA can be a hub id too
        raw["loras"] = [{**e, "path": _beside(e.get("path"), folder, False)} if isinstance(e, dict) else e
                        for e in raw["loras"]]
    if isinstance(raw.get("controlnets"), list):  # a ControlNet can be a hub id too; its image is a file
        raw["controlnets"] = [{**e, "path": _beside(e.get("path"), folder, False),
                               **({"image": _beside(e["image"], folder, True)} if "image" in e else {})}
                              if isinstance(e, dict) else e for e in raw["controlnets"]]
    if isinstance(raw.get("ip_adapter"), dict):
        raw["ip_adapter"] = {**raw["ip_adapter"], **{key: _beside(value, folder, False, by_suffix=False)
                                                     for key, value in raw["ip_adapter"].items()
                                                     if key in ("path", "image_encoder")}}
    if isinstance(raw.get("prompts"), list):  # a keyframe's picture and its reference
        raw["prompts"] = [{**p, **{k: _beside(p[k], folder, True) for k in KEYFRAME_FILES if k in p}}
                          if isinstance(p, dict) else p for p in raw["prompts"]]
    if isinstance(raw.get("timing"), dict) and "audio" in raw["timing"]:
        raw["timing"] = {**raw["timing"], "audio": _beside(raw["timing"]["audio"], folder, True)}
    return raw


def read_yaml(text: str):
    """YAML text as Python values, as morph reads configs (YAML 1.2 booleans); a one-line MorphError otherwise."""
    try:
        return yaml.load(text, Loader=Yaml12Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise MorphError(f"YAML syntax error{where}: {problem}") from None
    except RecursionError:
        raise MorphError("the YAML nests too deeply to be a job config") from None


def load_config(path: str | Path, **overrides) -> JobConfig:
    """Read a YAML job file; relative paths in it are read from its folder (resolve_paths); `overrides` (e.g. from
    the command line, relative to the current folder) replace its keys before validation."""
    path = Path(path)
    try:
        text = _decode(path, path.read_bytes())
    except OSError as e:
        raise MorphError(f"cannot read config {path}: {e.strerror}") from None
    return parse_config(text, path, **overrides)


def parse_config(text: str, path: Path, check=None, **overrides) -> JobConfig:
    """A job config from YAML `text` as if read from the file `path` (which need not exist): its relative paths are
    read from path's folder, its name defaults to path's stem, and its errors start with the path. `check(raw)` sees
    the mapping as written, before its paths are resolved (which looks at the files they name) and before the schema
    looks at any file."""
    try:
        raw = read_yaml(text)
        if check is not None:
            check(raw)
    except MorphError as e:
        raise MorphError(f"{path}: {e}") from None
    raw = resolve_paths(raw, path.parent)
    if isinstance(raw, dict):
        raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        config = validate(raw, default_name=path.stem)
    except MorphError as e:
        raise MorphError(f"{path}: {e}") from None
    config._source = str(path)
    return config
