"""The `controlnets:` section: ControlNets that hold a composition while the prompt walks. No torch."""

from pathlib import Path
from typing import Literal

from pydantic import Field

from ..errors import MorphError
from .sections import LoraName, Section, Text


class ControlNetSpec(Section):
    path: Text
    """A diffusers ControlNet folder, a single .safetensors file, or a hub id in the Hugging Face cache, made for the
    model's family."""
    name: LoraName | None = None
    """How keyframes name it (letters, digits, _ and -); default: the path's stem."""
    image: Text
    """The control image held for the whole walk (an edge map, a pose, a depth map), fitted to the job's size: scaled
    to cover it, then its centre cut out."""
    scale: float = 1.0
    """Its strength for every keyframe that sets none (diffusers' controlnet_conditioning_scale): 0 is the model
    without it."""
    start: float = Field(0.0, ge=0, le=1)
    """The fraction of the denoising steps after which it starts acting (diffusers' control_guidance_start)."""
    end: float = Field(1.0, ge=0, le=1)
    """The fraction of the denoising steps after which it stops (diffusers' control_guidance_end)."""
    preprocess: Literal["none", "canny"] = "none"
    """none: the image is the control image; canny: its edge map (OpenCV's Canny, thresholds low and high)."""
    low: float = Field(100.0, ge=0, le=1000)
    """canny: gradients below this are no edge."""
    high: float = Field(200.0, ge=0, le=1000)
    """canny: gradients above this are edges; between low and high only where they join one."""

    def check(self, where: str) -> None:
        """What one key cannot say alone (called with the entry's key, controlnets[i]): start before end, canny's
        thresholds in order and only canny taking them, and the image a file (refused here, before anything loads)."""
        if self.start >= self.end:  # start == end: no step would take it
            raise MorphError(f"{where}: start {self.start:g} is not before end {self.end:g}; both are fractions of the "
                             "denoising steps, and it acts between them: start < end")
        thresholds = sorted({"low", "high"} & self.model_fields_set)
        if thresholds and self.preprocess != "canny":
            raise MorphError(f"{where}.{thresholds[0]}: a threshold of preprocess: canny; set that, or remove "
                             f"{thresholds[0]}")
        if self.low > self.high:
            raise MorphError(f"{where}: low {self.low:g} is above high {self.high:g}; canny's thresholds go "
                             "low <= high")
        if not Path(self.image).is_file():
            raise MorphError(f"{where}.image: {self.image!r} is not a file")
