"""Before the output folder is made or any model loads: the files a config names (model, vae, embeddings,
configs_from) exist and hold what their key says. A safetensors file is told apart by its tensor names, read from
its header alone. No diffusers, no weights read."""

import json
import struct
from pathlib import Path

from ..config.sections import SINGLE_FILES
from ..errors import MorphError

MAX_HEADER = 100_000_000  # bytes: safetensors' own cap on the JSON header


def is_single_file(path: str) -> bool:
    return path.lower().endswith(SINGLE_FILES)


def looks_like_folder(name: str) -> bool:
    """Hub ids are 'owner/name'; anything else with a path shape is meant as a local folder."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name or Path(name).exists()


def tensor_names(what: str, path: str) -> list[str]:
    """The tensor names in a .safetensors file's header; a file that has none readable is one line naming `what`."""
    return list(tensor_shapes(what, path))


def tensor_shapes(what: str, path: str) -> dict[str, list[int]]:
    """{tensor name: shape} from a .safetensors file's header alone; unreadable: one line naming `what`."""
    try:
        with open(path, "rb") as f:
            size = struct.unpack("<Q", f.read(8))[0]
            if not 2 <= size <= MAX_HEADER:
                raise ValueError
            header = json.loads(f.read(size))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            if Path(path).stat().st_size < 8 + size + end:
                raise MorphError(f"{what}: {path!r} is cut short ({Path(path).stat().st_size} bytes of "
                                 f"{8 + size + end}); download or copy it again")
    except (OSError, struct.error, ValueError, TypeError, KeyError, AttributeError):
        raise MorphError(f"{what}: {path!r} is not a safetensors file (its header cannot be read)") from None
    try:
        return {k: list(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    except (KeyError, TypeError):
        raise MorphError(f"{what}: {path!r} is not a safetensors file (its header lists no shapes)") from None


def kind_of(names: list[str]) -> str:
    """What a safetensors file holds, from its tensor names: checkpoint, vae, lora, embedding or unknown."""
    if any(n.startswith("model.diffusion_model.") for n in names):
        return "checkpoint"
    if any("lora" in n.lower() for n in names):
        return "lora"
    if set(names) <= {"emb_params", "clip_l", "clip_g", "string_to_param", "*"} or len(names) == 1:
        return "embedding"
    if any(n.startswith(("encoder.", "decoder.", "first_stage_model.")) for n in names):
        return "vae"
    return "unknown"


KINDS = {"checkpoint": "a Stable Diffusion checkpoint", "vae": "a VAE", "lora": "a LoRA",
         "embedding": "a textual-inversion embedding", "unknown": "no Stable Diffusion weights morph knows"}


def check_single_file(what: str, path: str, allow_pickle: bool, wanted: tuple[str, ...]) -> None:
    """A single-file checkpoint exists, is safetensors unless pickle was allowed (a pickle can run code), and holds
    one of the `wanted` kinds."""
    if not Path(path).is_file():
        raise MorphError(f"{what}: {path!r} is not a file")
    if not path.lower().endswith(".safetensors"):
        if not allow_pickle:
            raise MorphError(f"{what}: {path!r} is a pickle checkpoint, and loading one can run code; convert it to "
                             ".safetensors, or set allow_pickle: true if you trust where it came from")
        return  # what a pickle holds cannot be seen without running it
    kind = kind_of(tensor_names(what, path))
    if kind not in wanted:
        raise MorphError(f"{what}: {path!r} holds {KINDS[kind]}, not {KINDS[wanted[0]]}"
                         + (f"; give it as {dict(lora='loras', embedding='embeddings', vae='vae')[kind]}: instead"
                            if kind in ("lora", "embedding", "vae") and what == "model" else ""))


def check_model_files(model: str, vae: str | None, embeddings: list[str], configs_from: str | None,
                      allow_pickle: bool) -> None:
    """The files the config names, checked in the order a reader meets them; each mistake one line naming its key."""
    if is_single_file(model):
        check_single_file("model", model, allow_pickle, ("checkpoint",))
    if vae:
        if is_single_file(vae):
            check_single_file("vae", vae, allow_pickle, ("vae", "checkpoint"))
        elif looks_like_folder(vae) and not Path(vae).is_dir():
            raise MorphError(f"vae: {vae!r} is not a folder; give a diffusers VAE folder, a hub id such as "
                             "madebyollin/sdxl-vae-fp16-fix, or a .safetensors file")
    if configs_from:
        if not is_single_file(model) and not (vae and is_single_file(vae)):
            raise MorphError("configs_from: describes a single-file model or vae, and this config loads neither "
                             "from a single file; remove it")
        if looks_like_folder(configs_from) and not Path(configs_from).is_dir():
            raise MorphError(f"configs_from: {configs_from!r} is not a folder; give a diffusers folder or hub id of "
                             "the same family")
    for path in embeddings:
        if not path.endswith(".safetensors"):
            raise MorphError(f"embeddings: {path!r} is not a .safetensors file; morph loads no pickle files")
        if not Path(path).is_file():
            raise MorphError(f"embeddings: {path!r} is not a file")
        kind = kind_of(tensor_names("embeddings", path))
        if kind != "embedding":
            raise MorphError(f"embeddings: {path!r} holds {KINDS[kind]}, not {KINDS['embedding']}")
