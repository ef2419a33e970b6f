"""A user's picture read through PIL: checked before any model loads, then fitted to the job's size.

What a file may be: one still image that PIL reads whole, of at most `limits.max_image_pixels` (a camera's MPO
JPEG: its first picture), turned upright as its EXIF orientation says. Converted,
because nothing is lost: greyscale, palette and bilevel images (to RGB), 16-bit greyscale (scaled to 8 bits, as
the VAE sees 8), an alpha channel that is opaque everywhere. Refused, with the reason: CMYK (PIL converts it
without the file's colour profile, so its colours would shift without a word), an alpha channel with any
transparent pixel (what lies under it is for the user to choose, not morph), a GIF or PNG of several frames
(which frame is meant?), and every other mode.
"""

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import MorphError

GREY_16 = ("I;16", "I;16B", "I;16L", "I")  # how PIL opens a 16-bit greyscale PNG
CONVERTED = ("RGB", "L", "P", "1", "YCbCr")
ALPHA = ("RGBA", "LA", "PA", "La", "RGBa")


def read_picture(path: str | Path, max_pixels: int, where: str) -> Image.Image:
    """The picture at `path` as an RGB image, decoded whole; a one-line MorphError (naming `where`) for what cannot
    be one. Its size is read from the header first, so a decompression bomb is refused before it is decoded."""
    path = Path(path)
    if not path.is_file():
        raise MorphError(f"{where}: {str(path)!r} is not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own cap decides, below
            image = Image.open(path)
    except Image.DecompressionBombError:
        raise MorphError(f"{where}: {str(path)!r} is too many pixels to decode safely (a decompression bomb?); "
                         f"morph reads at most limits.max_image_pixels ({max_pixels})") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise MorphError(f"{where}: {str(path)!r} is not an image morph can read (PNG, JPEG, WebP, ...)") from None
    with image:
        pixels = image.width * image.height
        if pixels > max_pixels:
            raise MorphError(f"{where}: {str(path)!r} is {image.width} x {image.height} = {pixels} pixels, more than "
                             f"limits.max_image_pixels ({max_pixels}); shrink it, or raise the limit")
        frames = getattr(image, "n_frames", 1)
        if frames > 1 and image.format != "MPO":  # a camera's JPEG with previews after it: its first is the picture
            raise MorphError(f"{where}: {str(path)!r} holds {frames} frames (an animation); save the one frame you "
                             "mean as a PNG")
        try:
            image.load()
        except (OSError, ValueError, SyntaxError) as e:
            raise MorphError(f"{where}: {str(path)!r} cannot be decoded whole ({e})") from None
        ImageOps.exif_transpose(image, in_place=True)  # upright, as a photo viewer shows it
        return _as_rgb(image, path, where)


def _as_rgb(image: Image.Image, path: Path, where: str) -> Image.Image:
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in GREY_16:
        grey = np.asarray(image, dtype=np.float64)
        if grey.min() < 0 or grey.max() > 65535:
            raise MorphError(f"{where}: {str(path)!r} holds 32-bit values; save it as an 8- or 16-bit image")
        return Image.fromarray(np.round(grey / 257).astype(np.uint8)).convert("RGB")
    if mode in ALPHA:
        alpha = np.asarray(image.getchannel("A" if "A" in mode else "a"))
        if alpha.min() < 255:
            raise MorphError(f"{where}: {str(path)!r} has transparent pixels ({mode}), and what shows through them is "
                             "yours to choose; flatten it onto a background and save it without alpha")
        return image.convert("RGB")
    if mode == "CMYK":
        raise MorphError(f"{where}: {str(path)!r} is CMYK, which PIL converts to RGB without its colour profile "
                         "(the colours would shift); save it as RGB")
    if mode not in CONVERTED:
        raise MorphError(f"{where}: {str(path)!r} is in PIL's mode {mode}, not one morph reads; save it as RGB")
    return image.convert("RGB")


def fitted(image: Image.Image, width: int, height: int, fit: str) -> np.ndarray:
    """The RGB `image` at width x height: uint8 [H, W, 3]. crop: scaled to cover the frame, centred, the overhang
    cut; pad: scaled to fit inside it, centred on black."""
    size = (width, height)
    if fit == "crop":
        return np.asarray(ImageOps.fit(image, size, Image.Resampling.LANCZOS))
    return np.asarray(ImageOps.pad(image, size, Image.Resampling.LANCZOS, color=(0, 0, 0)))
