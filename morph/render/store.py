"""The frame store: every finished frame kept under a key made of everything that decides its pixels.

Like git's object store: a key is the hash of canonical JSON (the model and its weights, the
scheduler and its config, steps, guidance, size, seed, dtype, device type, the negative prompt,
the frame's own conditioning, and the size of the batch it was rendered in, which moves pixels by
up to 1/255; on CUDA also the GPU's name and the library versions, whose kernels move pixels too),
a write goes to a temporary name and is renamed. Beside each PNG a record keeps the sha256 of its
bytes and its flags (NSFW, re-decoded, broken), so a frame counts only while its bytes are the
ones written: a truncated file, or one a user edited, is rendered again. A frame whose key is in
the store is never rendered again; a changed setting changes the keys of exactly the frames it
affects, so a stale frame can never be mixed in. Published frames are copies: nothing done to
them reaches the store. The store lives in `<output>/.store/`.
"""

import fcntl
import hashlib
import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import MorphError
from ..files import file_digest, hash_file, write_atomic
from ..media.video import read_png, write_png

STORE = ".store"
PLAN = "job.json"  # the current job's frame keys, for `morph status`
LOCK = ".lock"
WRITE_LOCK = ".write.lock"  # in the store: one put writes its PNG and record at a time


def digest(value) -> str:
    """The key of a JSON-able value: sha256 of its canonical JSON."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def folder_digest(folder: Path) -> str:
    """A local model folder's weights and configs, by content (so a retrained folder is a new model)."""
    sha = hashlib.sha256()
    for path in _weight_files(folder):
        sha.update(str(path.relative_to(folder)).encode())
        hash_file(sha, path)
    return sha.hexdigest()[:32]


def _weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".json", ".txt"))


# location -> (stat_signature, its digest): a process that prepares many jobs on the same weights (the studio's
# previews) reads them once, not once a job (seconds for Stable Diffusion's gigabytes)
_DIGESTS: dict[str, tuple[tuple, str]] = {}


def stat_signature(location: str) -> tuple:
    """What changes when a local file or folder of weights changes: each file's name, size and modification time
    (empty for what is not on disk)."""
    path = Path(location)
    files = [path] if path.is_file() else _weight_files(path) if path.is_dir() else []
    return tuple((str(p), s.st_size, s.st_mtime_ns) for p in files for s in [p.stat()])


def content_digest(location: str, otherwise):
    """A local folder's or file's weights by content (folder_digest, file_digest), read again only once a file's
    stat_signature changes; `otherwise` for what is not on disk (a hub id: its revision or name)."""
    path = Path(location)
    if not path.exists():
        return otherwise
    where, signature = str(path.resolve()), stat_signature(location)
    known = _DIGESTS.get(where)
    if known is None or known[0] != signature:
        known = _DIGESTS[where] = signature, folder_digest(path) if path.is_dir() else file_digest(path)
    return known[1]


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
    # set by keyframes, walked with the prompts
    # an attribution's render: some rows moved to another frame's (analysis/attribution.py)
    for walking in ("seeds", "negative_prompts", "guidance_scale", "loras", "lora_scales", "controlnet_scales",
                    "references", "ip_adapter_scales", "moved"):
        if walking in record:
            identity[walking] = record[walking]
    if config.kind == "edit":
        identity["edit"] = {"base": config.base, "word": config.edit.word, "occurrence": config.edit.occurrence,
                            "slots": config.edit.slots}
    return identity


class FrameStore:
    """PNG frames by key in `<output>/.store/`, each with its record: {sha256 of the PNG's bytes, flags}."""

    def __init__(self, output: Path):
        self.folder = output / STORE

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.png"

    def sweep(self) -> None:
        """Remove the temporary files killed runs left (each write has one of its own, so none is ever reused). Only
        while holding the output lock, as every writer of the store does: no live write's file is swept."""
        for leftover in self.folder.glob(".*.partial*"):
            leftover.unlink(missing_ok=True)

    def _record_path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def record(self, key: str) -> dict | None:
        """What was written with the frame: {"sha256", "flags"}; None when there is no readable record."""
        try:
            record = json.loads(self._record_path(key).read_text())
            return record if isinstance(record.get("sha256"), str) and isinstance(record.get("flags"), list) else None
        except (OSError, ValueError, AttributeError):
            return None

    def has(self, key: str, shape: tuple[int, int, int]) -> bool:
        """Whether the frame stored under `key` is of `shape` and has exactly the bytes written (a truncated,
        corrupt or edited file, or one without its record, is not)."""
        record, path = self.record(key), self.path(key)
        if record is None or not path.is_file():
            return False
        try:
            if file_digest(path) != record["sha256"]:
                return False
            with Image.open(path) as image:
                return (image.height, image.width, 3) == shape
        except (OSError, SyntaxError, ValueError):
            return False

    def put(self, key: str, image: np.ndarray, flags: list[str] = ()) -> None:
        """Store a uint8 [H, W, 3] frame and its flags ("nsfw", "redecoded", "broken"). Writers of one key may race
        (the studio's slider and a render, two processes): each renames its PNG into place and writes that PNG's
        record while holding the store's write lock, so the record always describes the PNG under the key."""
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {"sha256": None, "flags": sorted(flags)}
        with open_lock(self.folder / WRITE_LOCK) as lock:  # each open is its own flock, threads' too

            def write(partial: Path) -> None:
                write_png(partial, image)  # encoded before the lock: ranks storing other keys never wait for it
                record["sha256"] = file_digest(partial)
                fcntl.flock(lock, fcntl.LOCK_EX)  # held until closed: through the rename and the record

            write_atomic(self.path(key), write)
            write_atomic(self._record_path(key), lambda path: path.write_text(json.dumps(record)))

    def flags(self, key: str) -> list[str]:
        record = self.record(key)
        return record["flags"] if record else []

    def read(self, key: str) -> np.ndarray:
        return read_png(self.path(key))

    def publish(self, key: str, target: Path) -> None:
        """Make `target` a copy of the stored frame (never a link: an edit of the copy must not reach the store)."""
        write_atomic(target, lambda partial: shutil.copyfile(self.path(key), partial))

    def put_tensor(self, key: str, tensor, info: dict) -> None:
        """Keep a tensor that took long to compute (an image keyframe's inversion) and what was measured with it."""
        from safetensors.torch import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self.folder / f"{key}.safetensors", lambda path: save_file(
            {"tensor": tensor.detach().cpu().contiguous()}, str(path), metadata={"info": json.dumps(info)}))

    def tensor(self, key: str):
        """(tensor, info) kept under `key`, or None when there is none that reads whole."""
        from safetensors import SafetensorError, safe_open

        path = self.folder / f"{key}.safetensors"
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), "pt") as kept:
                return kept.get_tensor("tensor"), json.loads(kept.metadata()["info"])
        except (OSError, ValueError, KeyError, TypeError, SafetensorError):
            return None

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


def open_lock(path: Path):
    """A lock file opened for reading and writing, created if missing; a link there is refused (MorphError), since
    writing the lock through it would change the file it leads to."""
    try:
        return os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644), "r+")
    except OSError as e:
        if not path.is_symlink():
            raise
        raise MorphError(f"{path} is a link, and morph writes its lock files only as files of their own; "
                         "remove the link") from None


class OutputLock:
    """One live run per output folder: an OS lock (flock) on `<output>/.lock`, which records the holder's pid and
    host for the message. The OS releases it when its process dies, so a dead run's lock is never in the way."""

    def __init__(self, output: Path):
        self.path = output / LOCK
        self._file = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            handle = open_lock(self.path)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = _holder(handle.read())
                handle.close()
                raise MorphError(f"output: {self.path.parent} is being written by another morph run ({holder}); "
                                 "wait for it, or choose another --out") from None
            # the holder before us may have removed the file between our open and our lock: lock the file that is
            # there now, or two runs could each hold a lock on a different file
            if _same_file(handle, self.path):
                handle.truncate(0)
                handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
                handle.flush()
                self._file = handle
                return self
            handle.close()
        raise MorphError(f"output: could not take the lock {self.path}; is another program removing it?")

    def __exit__(self, *exc):
        if self._file is not None:
            self.path.unlink(missing_ok=True)  # while still locked, so no one locks the file being removed
            self._file.close()
            self._file = None


def _same_file(handle, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


def _holder(text: str) -> str:
    """Who holds a lock, from what it wrote: "pid N on HOST" (or less, if it has not written yet)."""
    try:
        holder = json.loads(text)
        return f"pid {int(holder['pid'])} on {holder['host']}"
    except (ValueError, KeyError, TypeError):
        return "it is starting"
