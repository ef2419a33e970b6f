"""Pictures uploaded for keyframes: checked as a config's pictures are, kept in <root>/inputs/ under a name made of
their own and their content (so a second upload of other bytes never replaces the first a config names), and
written into the keyframe's `image` or `reference` as a config in configs/ names them."""

import hashlib
import re
import shutil
from pathlib import Path

from ..config.sections import Limits
from ..errors import MorphError
from ..files import write_atomic
from ..media.picture import read_picture
from .access import inside
from .configs import INPUTS
from .form import parse, rewritten

UPLOAD_COLUMNS = ("image", "reference")


def keep_input(upload: Path, root: Path) -> Path:
    """Copy the uploaded picture into <root>/inputs/ (refused: not a picture morph reads, or a link there leading out
    of it); the path kept."""
    read_picture(upload, Limits().max_image_pixels, "upload")
    with upload.open("rb") as read:
        digest = hashlib.file_digest(read, "sha256").hexdigest()[:12]  # streamed: an upload may be large
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", upload.stem)[:80].strip("._") or "picture"
    suffix = upload.suffix.lower() if re.fullmatch(r"\.[A-Za-z0-9]{1,5}", upload.suffix) else ""
    folder = root.resolve() / INPUTS
    kept = folder / f"{stem}-{digest}{suffix}"
    if not inside(kept, folder):
        raise MorphError(f"{INPUTS}/{kept.name} leads out of {folder} through a link, and the studio keeps uploads "
                         "only there; make it a folder of its own")
    try:
        folder.mkdir(exist_ok=True)
        if not kept.is_file():
            # whole or not at all: a half-copied picture would be read as this content's
            write_atomic(kept, lambda partial: shutil.copyfile(upload, partial))
    except OSError as e:
        raise MorphError(f"upload: cannot keep the picture in {folder}: {e.strerror}") from None
    return kept


def with_input(text: str, root: Path, upload: Path, keyframe: int, column: str) -> str:
    """The YAML `text` with the uploaded picture kept under inputs/ and named in keyframe `keyframe`'s (0-based)
    `column` (image or reference)."""
    if column not in UPLOAD_COLUMNS:
        raise MorphError(f"upload: a picture goes into a keyframe's {' or '.join(UPLOAD_COLUMNS)}, not {column!r}")
    raw = parse(text)
    keyframes = raw.get("prompts") if isinstance(raw.get("prompts"), list) else []
    if not 0 <= keyframe < len(keyframes):
        raise MorphError(f"upload: keyframe {keyframe} is not one of the walk's {len(keyframes)} keyframes "
                         f"(0 to {len(keyframes) - 1})")
    kept = keep_input(upload, root)
    entry = keyframes[keyframe]
    entry = dict(entry) if isinstance(entry, dict) else {"prompt": entry}
    entry[column] = Path("..", INPUTS, kept.name).as_posix()  # read from configs/, as a saved config reads it
    raw["prompts"] = [*keyframes[:keyframe], entry, *keyframes[keyframe + 1:]]
    return rewritten(text, raw)
