"""What the studio may reach: who may reach it (loopback only, unless a password guards another address; checked
before Gradio loads), which hub models it reads (those the local cache holds, never a folder of the current one)
and where it writes (below <root>/outputs, no link followed out of it)."""

import ipaddress
import os
from pathlib import Path

from ..errors import MorphError
from ..models.controlnet_files import CONFIG as CONTROLNET_CONFIG
from ..models.lora_files import HUB_FILE

LOOPBACK_NAMES = ("localhost",)
# the file a cached hub repo holds for what each key loads from it: a pipeline, a VAE, a LoRA, a ControlNet
CACHED_FILE = {"model": "model_index.json", "configs_from": "model_index.json", "vae": "config.json",
               "loras": HUB_FILE, "controlnets": CONTROLNET_CONFIG}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_auth(auth: str | None) -> tuple[str, str] | None:
    """--auth USER:PASSWORD as (user, password)."""
    if auth is None:
        return None
    user, colon, password = auth.partition(":")
    if not colon or not user or not password:
        raise MorphError("--auth: give USER:PASSWORD, both non-empty (e.g. --auth me:a-long-secret)")
    return user, password


def check_access(host: str, auth: str | None, root: str) -> tuple[Path, tuple[str, str] | None]:
    """The root folder and the credentials the studio serves with; refused: another host without --auth, a root
    that is not a folder."""
    credentials = parse_auth(auth)
    if not is_loopback(host) and credentials is None:
        raise MorphError(f"--host {host}: the studio renders and writes files for whoever reaches it; listening "
                         "beyond this machine needs --auth USER:PASSWORD")
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise MorphError(f"--root: {root} is not a folder; give the folder the studio reads configs and models "
                         "from and writes outputs to")
    return folder.resolve(), credentials


def cached_hub_id(what: str, value: str, root: Path) -> None:
    """Refuse the hub id `value` (for the key `what`) unless the local Hugging Face cache holds it. The loaders read
    a name the current folder holds as that folder, wherever the studio was started: such a name is refused too, in
    the same words, so that a refusal never tells what lies outside the root."""
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = isinstance(try_to_load_from_cache(value, CACHED_FILE[what]), str)
    except ValueError:  # a name the hub's own rules refuse
        cached = False
    if not cached or Path(value).exists():
        raise MorphError(f"{what}: {value} is neither a file under {root} nor a hub model in the local Hugging Face "
                         "cache, the only places the studio reads from; name a file or folder under the root as a "
                         "config in configs/ would (../models/x), or download the model first (hf download)")


def settle_in(root: Path) -> None:
    """Make the studio's process read only what the root and the local cache hold: its current folder becomes the
    root (the libraries look hub ids and configs up as folders of the current one first), and the Hugging Face
    hub is offline (a hub id is what the cache holds; nothing is downloaded)."""
    import huggingface_hub.constants

    os.chdir(root)
    os.environ["HF_HUB_OFFLINE"] = "1"  # for what imports huggingface_hub later, and the worker's subprocesses
    huggingface_hub.constants.HF_HUB_OFFLINE = True  # read at its import, which Gradio has done already


def inside(folder: Path, outputs: Path) -> bool:
    """Whether the studio may write into `folder`: below `outputs` as written (the root's outputs/, not where a link
    there leads), with no link on the way down that takes it elsewhere. A loop of links, or a folder it may not
    look into, is not inside: every caller refuses it in its own one line."""
    try:
        resolved = folder.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a loop of links (Path.resolve before Python 3.13)
        return False
    return resolved.is_relative_to(outputs) and resolved != outputs
