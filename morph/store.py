"""The frame store: every finished frame kept under a key made of everything that decides its pixels.

Like git's object store: a key is the hash of canonical JSON (the model and its weights, the
scheduler and its config, steps, guidance, size, seed, dtype, device type, the negative prompt,
the frame's own conditioning, and the size of the batch it was rendered in, which moves pixels by
up to 1/255), a write goes to a temporary name and is renamed, and a reader trusts only a PNG that
decodes whole. A frame whose key is in the store is never rendered again; a changed setting
changes the keys of exactly the frames it affects, so a stale frame can never be mixed in.
The store lives in `<output>/.store/`.
"""

import hashlib
import json
import os
import socket
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import MorphError
from .files import write_atomic
from .video import read_png, write_png

STORE = ".store"
PLAN = "job.json"  # the current job's frame keys, for `morph status`
LOCK = ".lock"


def digest(value) -> str:
    """The key of a JSON-able value: sha256 of its canonical JSON."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def folder_digest(folder: Path) -> str:
    """A local model folder's weights and configs, by content (so a retrained folder is a new model)."""
    sha = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".json", ".txt")):
        sha.update(str(path.relative_to(folder)).encode())
        _hash_file(sha, path)
    return sha.hexdigest()[:32]


def content_digest(location: str, otherwise):
    """A local folder's or file's weights by content (folder_digest, file_digest); `otherwise` for what is not on
    disk (a hub id: its revision or name)."""
    path = Path(location)
    return folder_digest(path) if path.is_dir() else file_digest(path) if path.is_file() else otherwise


def file_digest(path: Path) -> str:
    """One file's bytes (a single-file checkpoint, a VAE, a textual-inversion embedding), by content."""
    sha = hashlib.sha256()
    _hash_file(sha, path)
    return sha.hexdigest()[:32]


def _hash_file(sha, path: Path) -> None:
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            sha.update(chunk)


def frame_identity(config, record: dict) -> dict:
    """What a frame's conditioning is made of: the prompts at both ends of its segment (as weighted texts),
    where it sits between them, and how it is interpolated."""
    terms = [config.prompt_terms(source, where) for where, source in config.prompt_sources()]
    if config.kind == "grid":
        return {"rows": terms[:2], "t": record["t"], "add": terms[2], "k": record["k"],
                "interpolation": config.interpolation}
    segment = record["segment"]
    identity = {"from": terms[segment], "to": terms[min(segment + 1, len(terms) - 1)], "t": record["t"],
                "interpolation": config.interpolation}
    for walking in ("seeds", "negative_prompts", "guidance_scale"):  # set by keyframes, walked with the prompts
        if walking in record:
            identity[walking] = record[walking]
    if config.kind == "edit":
        identity["edit"] = {"base": config.base, "word": config.edit.word, "occurrence": config.edit.occurrence,
                            "slots": config.edit.slots}
    return identity


class FrameStore:
    """PNG frames by key in `<output>/.store/`."""

    def __init__(self, output: Path):
        self.folder = output / STORE

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.png"

    def has(self, key: str, shape: tuple[int, int, int]) -> bool:
        """Whether a whole, readable frame of `shape` is stored under `key` (a truncated one is not)."""
        path = self.path(key)
        if not path.is_file():
            return False
        try:
            with Image.open(path) as image:
                size = (image.height, image.width, 3)
                image.verify()  # every chunk's CRC and the end marker: a truncated or corrupt file raises here
                return size == shape
        except (OSError, SyntaxError, ValueError):
            return False

    def put(self, key: str, image: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_png(self.path(key), image)

    def read(self, key: str) -> np.ndarray:
        return read_png(self.path(key))

    def link(self, key: str, target: Path) -> None:
        """Make `target` the stored frame: a hard link (no copy) where the filesystem allows, else a copy."""

        def place(partial: Path) -> None:
            try:
                os.link(self.path(key), partial)
            except OSError:
                partial.write_bytes(self.path(key).read_bytes())

        write_atomic(target, place)

    def save_plan(self, plan: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self.folder / PLAN, lambda path: path.write_text(json.dumps(plan)))

    def plan(self) -> dict | None:
        path = self.folder / PLAN
        return json.loads(path.read_text()) if path.is_file() else None


def status(output: Path) -> dict:
    """How many frames of the last job started in `output` are done and missing, and how many stored are stale."""
    store = FrameStore(output)
    plan = store.plan()
    if plan is None:
        raise MorphError(f"{output}: no morph job has been started here (no {STORE}/{PLAN})")
    shape = tuple(plan["shape"])
    done = [i for i, key in enumerate(plan["keys"]) if store.has(key, shape)]
    stored = {p.stem for p in store.folder.glob("*.png") if not p.name.startswith(".")}
    return {"name": plan["name"], "frames": len(plan["keys"]), "done": len(done),
            "missing": len(plan["keys"]) - len(done), "stale": len(stored - set(plan["keys"]))}


class OutputLock:
    """One live run per output folder: a lock file with the holder's pid; a dead holder's lock is taken over."""

    def __init__(self, output: Path):
        self.path = output / LOCK
        self.held = False

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder = self._holder()
                if holder is not None:
                    raise MorphError(f"output: {self.path.parent} is being written by another morph run (pid "
                                     f"{holder['pid']} on {holder['host']}); wait for it, or choose another --out")
                self.path.unlink(missing_ok=True)  # a stale lock: its run is gone
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise MorphError(f"output: could not take the lock {self.path}; remove it if no morph run is using the folder")

    def _holder(self) -> dict | None:
        """The live run that holds the lock, or None when the lock is stale."""
        try:
            holder = json.loads(self.path.read_text())
            pid, host = int(holder["pid"]), holder["host"]
        except (OSError, ValueError, KeyError, TypeError):
            return None  # unreadable or half-written: its run died while taking it
        if host != socket.gethostname():
            return holder  # another machine on a shared filesystem: its pid cannot be checked from here
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, another user's
        return holder

    def __exit__(self, *exc):
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
