"""Where a run writes: the output folder checked before any model loads, and files that appear whole or not at all.

Every PNG, MP4 and manifest is written under a temporary name in its folder and renamed when
complete, so a crash, a full disk or Ctrl-C never leaves a truncated file under a final name.
"""

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

from .errors import MorphError

PNG_BYTES_PER_PIXEL = 1.5  # lossless RGB PNG of a rendered frame: about half of the raw 3 bytes


def partial_name(path: Path) -> Path:
    """The temporary name a file is written under: hidden, in the same folder, same suffix (writers read it)."""
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(temporary path), then rename it to `path`; on any error the temporary file is removed."""
    partial = partial_name(path)
    try:
        write(partial)
        os.replace(partial, path)
    except BaseException as e:
        partial.unlink(missing_ok=True)
        if isinstance(e, OSError):
            e.filename = str(path)  # the user knows the final name, not the temporary one
        raise


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
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _probe_write(folder)
    except OSError as e:
        raise MorphError(f"output: cannot write in {folder} ({e.strerror}); choose another output (--out)") from None
    needed = int(frames * frame_pixels * PNG_BYTES_PER_PIXEL)
    free = shutil.disk_usage(folder).free
    if free < needed:
        warnings.warn(f"{folder} has {free / 2**20:.0f} MiB free, and {frames} frames may need about "
                      f"{needed / 2**20:.0f} MiB", stacklevel=2)


def read_walk(output: Path, needs: str) -> dict:
    """The manifest of a whole walk rendered in `output`, for a command that `needs` one (e.g. "a storm map")."""
    try:
        manifest = json.loads((output / "manifest.json").read_text())
    except (OSError, ValueError):
        raise MorphError(f"{output}: no readable manifest.json; is it a morph output folder?") from None
    if manifest["kind"] == "grid" or manifest["frame_count"] != len(manifest["frames"]):
        raise MorphError(f"{output}: {needs} needs a whole walk (this is a {manifest['kind']} of "
                         f"{len(manifest['frames'])} of {manifest['frame_count']} frames)")
    return manifest
