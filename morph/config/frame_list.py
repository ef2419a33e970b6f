"""Frame lists as users write them on the command line: '0,17,100-120'."""

import re

from ..errors import MorphError
from .messages import short


def parse_frame_spec(spec: str, count: int, where: str = "--frames") -> list[int]:
    """'0,17,100-120' -> sorted unique indices, each checked against `count` frames."""
    if len(spec) > 10_000:
        raise MorphError(f"{where}: a frame list of {len(spec)} characters is too long; use ranges such as 0-399")
    indices = set()
    for part in spec.split(","):
        match = re.fullmatch(r"\s*(\d{1,9})\s*(?:-\s*(\d{1,9})\s*)?", part)
        if not match:
            raise MorphError(f"{where}: {short(spec)} is not a frame list; write e.g. 0,17,100-120")
        first, last = int(match[1]), int(match[2] or match[1])
        if first > last:
            raise MorphError(f"{where}: {part.strip()!r} starts after it ends; write the range low to high, "
                             f"{last}-{first}")
        if last >= count:
            raise MorphError(f"{where}: {part.strip()!r} is out of range; this job has frames 0-{count - 1}")
        indices.update(range(first, last + 1))
    return sorted(indices)
