"""Where a run writes: the output folder checked before any model loads, and files that appear whole or not at all.

Every PNG, MP4 and manifest is written under a temporary name in its folder and renamed when
complete, so a crash, a full disk or Ctrl-C never leaves a truncated file under a final name.
"""

import hashlib
import json
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from .errors import MorphError

PNG_BYTES_PER_PIXEL = 1.5  # lossless RGB PNG of a rendered frame: about half of the raw 3 bytes


def own_partial_name(path: Path) -> Path:
    """The temporary name one writer writes a file under: hidden, in the same folder, same suffix (writers read it),
    and its own: two writers of the same file (the studio's slider beside a render, two processes) never write,
    rename or remove each other's temporary file, and no leftover of a killed run (which may be a link to another
    file) is ever written through. The frame store sweeps leftovers (FrameStore.sweep)."""
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex}.partial{path.suffix}")


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(temporary path), then rename it to `path`; on any error the temporary file is removed."""
    partial = own_partial_name(path)
    try:
        write(partial)
        os.replace(partial, path)
    except BaseException as e:
        partial.unlink(missing_ok=True)
        if isinstance(e, OSError):
            e.filename = str(path)  # the user knows the final name, not the temporary one
        raise


STAGING = ".staging"


class Staging:
    """A run's outputs, written into `<output>/.staging/` under their final names and moved into `<output>` only
    once every one of them is whole (the manifest last): until then the previous run's outputs stay as they were,
    and a run that fails on the way leaves them untouched. Use as a context manager; call commit() at the end."""

    def __init__(self, output: Path):
        self.output, self.folder = output, output / STAGING

    def __enter__(self):
        shutil.rmtree(self.folder, ignore_errors=True)  # a killed run's leftovers
        self.folder.mkdir(parents=True)
        return self

    def __exit__(self, *exc):
        shutil.rmtree(self.folder, ignore_errors=True)

    def path(self, name: str) -> Path:
        """Where to write the output that will be `<output>/<name>`."""
        return self.folder / name

    def final_names(self, value):
        """`value` (a manifest: dicts, lists, strings) with every path into the staging folder made the path the file
        will have once committed."""
        if isinstance(value, dict):
            return {k: self.final_names(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.final_names(v) for v in value]
        if isinstance(value, str) and value.startswith(str(self.folder)):
            return str(self.output) + value[len(str(self.folder)):]
        return value

    def commit(self, frames: str, whole: bool, last: str = "manifest.json") -> None:
        """Move everything staged into place: the `frames` folder (`whole`: replacing the old one, leftovers and all;
        else file by file) and any other folder (replacing the old one), then the other files, `last` last."""
        staged = self.folder / frames
        for folder in sorted(p for p in self.folder.iterdir() if p.is_dir() and p.name != frames):
            self._replace(folder.name)
        if whole and staged.is_dir():
            self._replace(frames)
        elif staged.is_dir():
            target = self.output / frames
            target.mkdir(parents=True, exist_ok=True)
            for path in sorted(staged.iterdir()):
                os.replace(path, target / path.name)
        files = sorted((p for p in self.folder.iterdir() if p.is_file() and not p.name.startswith(".")),
                       key=lambda p: p.name == last)
        for path in files:
            os.replace(path, self.output / path.name)

    def _replace(self, name: str) -> None:
        """The staged folder `name` in place of the output's own: the old one moved aside first, then removed."""
        staged, target, old = self.folder / name, self.output / name, self.output / f".{name}.old"
        shutil.rmtree(old, ignore_errors=True)
        if target.is_dir():
            os.replace(target, old)
        os.replace(staged, target)
        shutil.rmtree(old, ignore_errors=True)


def _probe_write(folder: Path) -> None:
    """Create and remove a file in `folder`: the only sure test that a run can write there."""
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".morph-probe-"):
        pass


def check_output(folder: Path, subfolder: str, files: list[str], frames: int, frame_pixels: int) -> None:
    """Before any model loads: `folder` can hold the run's frames (in `subfolder`) and `files`; warn if space is short."""
    if folder.exists() and not folder.is_dir():
        raise MorphError(f"output: {folder} is a file, not a folder; choose another output (--out) or remove it")
    if (folder / subfolder).exists() and not (folder / subfolder).is_dir():
        raise MorphError(f"output: {folder / subfolder} is a file where the {subfolder} folder goes; remove it")
    for name in files:
        if (folder / name).is_dir():
            raise MorphError(f"output: {folder / name} is a folder where the file {name} goes; remove or rename it")
    existing = next(p for p in [folder, *folder.parents] if p.exists())  # the run makes the rest, once accepted
    if not existing.is_dir():
        raise MorphError(f"output: {existing} is a file, so {folder} cannot be made; choose another output (--out)")
    try:
        _probe_write(existing)
    except OSError as e:
        raise MorphError(f"output: cannot write in {existing} ({e.strerror}); choose another output (--out)") from None
    needed = int(frames * frame_pixels * PNG_BYTES_PER_PIXEL)
    free = shutil.disk_usage(existing).free
    if free < needed:
        warnings.warn(f"{folder} has {free / 2**20:.0f} MiB free, and {frames} frames may need about "
                      f"{needed / 2**20:.0f} MiB", stacklevel=2)


@contextmanager
def removed_if_refused(folder: Path):
    """The folders of `folder`'s path that do not exist yet, and that the run makes, are removed again if the run is
    refused (MorphError) while they are still empty: a refusal leaves the disk as it found it. A folder that was
    there before, or that holds anything, stays."""
    made = [p for p in [folder, *folder.parents] if not p.exists()]  # deepest first
    try:
        yield
    except MorphError:
        for path in made:
            try:
                path.rmdir()  # only if empty
            except OSError:
                break
        raise


def read_walk(output: Path, needs: str) -> dict:
    """The manifest of a whole walk rendered in `output`, for a command that `needs` one (e.g. "a storm map")."""
    try:
        manifest = json.loads((output / "manifest.json").read_text())
    except (OSError, ValueError):
        manifest = None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("frames"), list):  # valid JSON, not morph's
        raise MorphError(f"{output}: no readable manifest.json; is it a morph output folder?")
    if manifest.get("kind") == "grid" or manifest.get("frame_count") != len(manifest["frames"]):
        raise MorphError(f"{output}: {needs} needs a whole walk (this is a {manifest.get('kind')} of "
                         f"{len(manifest['frames'])} of {manifest.get('frame_count')} frames)")
    return manifest


def file_digest(path: Path) -> str:
    """One file's bytes (a single-file checkpoint, a VAE, a textual-inversion embedding, a picture), by content."""
    sha = hashlib.sha256()
    hash_file(sha, path)
    return sha.hexdigest()[:32]


def hash_file(sha, path: Path) -> None:
    """Feed a file's bytes to `sha`, 16 MiB at a time."""
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            sha.update(chunk)
