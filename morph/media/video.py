"""Writing frames: lossless PNGs and a streamed H.264 MP4, one video frame per rendered frame."""

import io
from pathlib import Path

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
from PIL import Image

from ..files import own_partial_name, write_atomic

try:  # a dependency; without it (a bare environment) frames are encoded by PIL, to the same pixels, 3x slower
    import imagecodecs
except ImportError:
    imagecodecs = None


# RGB -> YUV with BT.709's matrix in limited range, and the file tagged so: players assume BT.709 for HD sizes,
# and an untagged BT.601 file shifts colours there (a pure green pad decoded as (0, 215, 0))
TO_BT709 = ("scale=out_color_matrix=bt709:out_range=tv,format=yuv420p,"
            "setparams=range=tv:color_primaries=bt709:color_trc=bt709:colorspace=bt709")
BT709_TAGS = ("-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv")


def ffmpeg_command(*arguments: str) -> list[str]:
    """The ffmpeg that imageio-ffmpeg ships, quiet but for errors, with `arguments`."""
    return [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", *arguments]


def ffmpeg_said(stderr: bytes | str) -> str:
    """The line of ffmpeg's error output that says what went wrong: its last."""
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
    lines = text.strip().splitlines()
    return lines[-1] if lines else "no message"


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 [H, W, 3] image as lossless PNG bytes, quickly encoded."""
    # zlib level 1 with run-length matching over the Sub filter (libpng through imagecodecs; its docs give these as
    # OpenCV's fast settings): on the benchmark's 512 px frames, measured on a loaded machine, 14 ms a frame against
    # PIL's 51 ms at level 1, 7 % more bytes; it releases the GIL, so encoder threads run side by side
    if imagecodecs is None:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()
    return imagecodecs.png_encode(np.ascontiguousarray(image), level=1, strategy=imagecodecs.PNG.STRATEGY.RLE,
                                  filter=imagecodecs.PNG.FILTER.SUB)


def write_png(path: Path, image: np.ndarray) -> None:
    """Write a uint8 [H, W, 3] image losslessly; it appears under `path` only once complete."""
    data = png_bytes(image)
    write_atomic(path, lambda partial: partial.write_bytes(data))


def read_png(path: Path) -> np.ndarray:
    return iio.imread(path)[..., :3]


class VideoWriter:
    """Feeds frames to ffmpeg as they come: H.264 High, yuv420p, +faststart, constant `fps`.

    No frame is ever blended, duplicated or dropped: frame k of the file is render k. The file is
    written under a temporary name and appears under `path` only when it was closed without error.
    """

    def __init__(self, path: Path, width: int, height: int, fps: int):
        self.path = path
        self._partial = own_partial_name(path)
        self._writer = imageio_ffmpeg.write_frames(
            str(self._partial), (width, height), fps=fps, codec="libx264", pix_fmt_out="yuv420p", quality=None,
            macro_block_size=1, ffmpeg_log_level="error",
            output_params=["-vf", TO_BT709, "-profile:v", "high", "-crf", "16", "-preset", "medium",
                           "-movflags", "+faststart", *BT709_TAGS],
        )
        self._writer.send(None)
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        self._writer.send(np.ascontiguousarray(image))
        self.frames += 1

    def close(self) -> None:
        self._writer.close()
        self._partial.replace(self.path)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:  # the run failed: no video that claims to be whole
            try:
                self._writer.close()
            finally:
                self._partial.unlink(missing_ok=True)
