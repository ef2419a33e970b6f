"""The configs the studio takes: YAML text read as the file configs/<name>.yaml under the root would be (so that
Save writes a file `morph run` renders to the same frames), every file it reads confined to the root, and its output
confined to <root>/outputs, the only folder the studio serves files from."""

import os
import re
from pathlib import Path

import yaml

from ..config.jobs import JobConfig
from ..config.messages import short
from ..config.yaml_file import KEYFRAME_FILES, parse_config, resolve_paths
from ..errors import MorphError
from ..models.tiny import BUILT_IN
from .access import CACHED_FILE, cached_hub_id, inside

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # fullmatch
BUILT_IN_MODELS = ("toy", *BUILT_IN)
OUTPUTS = "outputs"
CONFIGS = "configs"
INPUTS = "inputs"  # the pictures uploaded for keyframes (inputs.py)


def outside(what: str, value: str, root: Path) -> MorphError:
    value = value if value.isprintable() else short(value)  # as written, on one line
    return MorphError(f"{what}: {value} is outside {root}, the only folder the studio reads from; put it under {root} "
                      f"(a config's paths are read from {root / CONFIGS}: ../models/x is {root / 'models' / 'x'})")


def confined(what: str, value: str, root: Path) -> None:
    """Refuse `value` (a path, hub id or built-in model, as the config writes it) if it reads from outside `root`: a
    path climbing out or elsewhere (decided on the text alone, so that what lies outside is never looked at), a link
    under the root leading out, a hub id the local cache lacks. Every refusal names the value as written: it tells
    nothing of what the filesystem holds outside the root."""
    if value.startswith("~"):  # resolve_paths keeps ~/x as written; the loaders would read it outside the root
        raise outside(what, value, root)
    written = Path(os.path.normpath(root / CONFIGS / value))  # read from configs/, as resolve_paths reads it
    if not written.is_relative_to(os.path.normpath(root)):
        raise outside(what, value, root)
    try:
        if not (root / CONFIGS / value).resolve().is_relative_to(root.resolve()):  # a link under the root, out
            raise outside(what, value, root)
        if what not in CACHED_FILE:  # embeddings, audio: always read as files under configs/
            return
        kept = resolve_paths({"model": value}, root / CONFIGS)["model"]  # as written: a name neither a path nor here
        if kept == value and not Path(value).is_absolute() and value not in BUILT_IN_MODELS:
            if not HUB_ID.fullmatch(value) or ".." in Path(value).parts:
                raise outside(what, value, root)  # neither a hub id nor a built-in: the loader would read it from "."
            cached_hub_id(what, value, root)
    except (OSError, RuntimeError):  # no permission, a loop of links: refused as outside, whatever lies there
        raise outside(what, value, root) from None


def read_paths(raw: dict) -> list[tuple[str, str]]:
    """Every (key, value) of a config mapping that names a file, folder or hub id it reads."""
    found = [(key, raw.get(key)) for key in ("model", "vae", "configs_from")]
    for key in ("embeddings", "loras"):
        entries = raw.get(key) if isinstance(raw.get(key), list) else []
        found += [(key, e.get("path") if isinstance(e, dict) else e) for e in entries]
    controlnets = raw.get("controlnets") if isinstance(raw.get("controlnets"), list) else []
    for i, entry in enumerate(e for e in controlnets if isinstance(e, dict)):  # a hub id or a path; its image a file
        found += [("controlnets", entry.get("path")), (f"controlnets[{i}].image", entry.get("image"))]
    adapter = raw.get("ip_adapter")
    found += [(f"ip_adapter.{key}", adapter.get(key)) for key in ("path", "image_encoder")] \
        if isinstance(adapter, dict) else []
    timing = raw.get("timing")
    found += [("timing.audio", timing.get("audio"))] if isinstance(timing, dict) else []
    keyframes = raw.get("prompts") if isinstance(raw.get("prompts"), list) else []
    found += [(f"prompts[{i}].{key}", keyframe.get(key)) for i, keyframe in enumerate(keyframes)
              if isinstance(keyframe, dict) for key in KEYFRAME_FILES]
    return [(key, value) for key, value in found if isinstance(value, str) and value]


def confine(raw, root: Path) -> None:
    """Refuse a config mapping that reads from outside `root` or writes outside <root>/outputs, before the schema
    looks at any of its files (so that the studio never tells whether a file outside its root exists)."""
    if not isinstance(raw, dict):
        return
    for key, value in read_paths(raw):
        confined(key, value, root)
    output = raw.get("output")
    outputs = root.resolve() / OUTPUTS  # as written: a link there (or below) leading elsewhere is outside
    if isinstance(output, str) and output:
        if not inside(root / output, outputs):  # not expanded: the job writes ~/x as the root's "~" folder
            raise MorphError(f"output: {output} is outside {outputs}, the only folder the studio writes to; "
                             f"name a folder under it, relative to {root} (e.g. {OUTPUTS}/{raw.get('name', 'walk')})")


def studio_config(text: str, root: Path) -> JobConfig:
    """The job `text` (YAML) describes, checked as `morph run` checks configs/<name>.yaml under `root`, every path it
    reads inside `root` and its output inside <root>/outputs (default: <root>/outputs/<name>)."""
    source = root / CONFIGS / "studio.yaml"
    try:
        config = parse_config(text, source, check=lambda raw: confine(raw, root))
    except MorphError as e:  # the page shows the message beside the YAML: no file name to lead it
        raise MorphError(str(e).removeprefix(f"{source}: ")) from None
    output = root / (config.output or f"{OUTPUTS}/{config.name}")
    if not inside(output, root.resolve() / OUTPUTS):  # the default's outputs/ too may be a link out of the root
        raise MorphError(f"output: {output.relative_to(root)} leads out of {root / OUTPUTS} through a link, and the "
                         "studio writes only there; make it a folder of its own")
    config = config.model_copy(update={"output": str(output.resolve())})
    config._source = str(root / CONFIGS / f"{config.name}.yaml")
    return config


class WouldReplace(MorphError):
    """Saving would replace a config file that says something else; the page asks before it does."""


def save_config(text: str, root: Path, replace: bool = False) -> Path:
    """Write `text` as <root>/configs/<name>.yaml once it passes studio_config; the path written. A file there that
    holds other text is replaced only when `replace` is true (else WouldReplace): it may hold the user's comments."""
    config = studio_config(text, root)
    path = root / CONFIGS / f"{config.name}.yaml"
    text = text if text.endswith("\n") else text + "\n"
    if not inside(path, root.resolve() / CONFIGS):
        raise MorphError(f"{path.relative_to(root)} leads out of {root / CONFIGS} through a link, and the studio saves "
                         "configs only there; make it a file of its own")
    if not replace and path.is_file() and path.read_bytes() != text.encode():  # bytes: it may be in no encoding
        raise WouldReplace(f"{path.relative_to(root)} exists and says something else; click Save again to replace "
                           "it (comments and all), or give this job another name:")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode())
    return path


def model_choices(root: Path) -> list[str]:
    """Models the page offers: the built-ins, diffusers folders and single checkpoint files under `root` (relative
    to configs/, as a saved config names them), and hub models already in the local cache. Neither outputs/ nor
    hidden folders are walked: frame stores hold thousands of files and no model."""
    found = []
    for folder, subfolders, files in os.walk(root):
        here = Path(folder)
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and not (here == root and d == OUTPUTS))
        if "model_index.json" in files:
            found.append(here)
        found += [here / f for f in sorted(files) if f.endswith((".safetensors", ".ckpt")) and _is_checkpoint(here / f)]
    return [*BUILT_IN_MODELS, *(Path("..", p.relative_to(root)).as_posix() for p in found), *_cached_hub_models()]


def _is_checkpoint(path: Path) -> bool:
    from ..models.model_files import kind_of, tensor_names

    try:
        return path.suffix == ".ckpt" or kind_of(tensor_names("model", str(path))) == "checkpoint"
    except (MorphError, OSError):
        return False


def _cached_hub_models() -> list[str]:
    try:
        from huggingface_hub import scan_cache_dir

        return sorted(repo.repo_id for repo in scan_cache_dir().repos if repo.repo_type == "model")
    except Exception:  # no cache yet, or one the library cannot read: offer the rest
        return []


def dump(raw) -> str:
    """YAML text of a config's raw mapping, keys in the order given."""
    return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, width=120)
