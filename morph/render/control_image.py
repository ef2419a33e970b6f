"""A ControlNet's control image: read, fitted to the job's size without stretching, and (preprocess: canny) made
an edge map with OpenCV."""

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import MorphError


def fitted(image: Image.Image, width: int, height: int) -> Image.Image:
    """`image` scaled to cover width x height (Lanczos), then its centre cut out: never stretched (as video's fit:
    crop)."""
    scale = max(width / image.width, height / image.height)
    w, h = max(width, round(image.width * scale)), max(height, round(image.height * scale))
    left, top = (w - width) // 2, (h - height) // 2
    return image.resize((w, h), Image.LANCZOS).crop((left, top, left + width, top + height))


def canny(rgb: np.ndarray, low: float, high: float) -> np.ndarray:
    """An edge map [H, W, 3] uint8 (255 on edges, 0 elsewhere) of an image [H, W, 3] uint8, by OpenCV's Canny."""
    try:  # a dependency, but 60 MB: an environment without it can do all but this
        import cv2
    except ImportError:
        raise MorphError("preprocess: canny needs OpenCV: pip install opencv-python-headless") from None
    edges = cv2.Canny(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), low, high)
    return np.repeat(edges[:, :, None], 3, axis=2)


def control_image(path: str, width: int, height: int, preprocess: str = "none", low: float = 100.0,
                  high: float = 200.0) -> torch.Tensor:
    """The control image the ControlNet reads: [1, 3, height, width] float32 in 0..1, RGB (as diffusers' control image
    processor gives it). Canny runs on the fitted image, so its edges are one pixel wide at the job's size."""
    with Image.open(path) as image:
        # upright as a viewer shows it: a phone's photo is stored sideways with an EXIF orientation
        rgb = np.asarray(fitted(ImageOps.exif_transpose(image).convert("RGB"), width, height))
    if preprocess == "canny":
        rgb = canny(rgb, low, high)
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255
