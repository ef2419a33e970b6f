"""A walk's keyframe entries: a prompt text, or a mapping with the keyframe's own settings; and how image keyframes
are inverted. No torch."""

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_serializer, model_validator

from ..errors import MorphError
from .sections import MAX_TEXT, Ease, LoraName, Section, Text


class Keyframe(Section):
    """A keyframe with its own settings; what it does not set comes from the top level."""

    prompt: Text
    """The keyframe's prompt (a text, or an expression over `define`)."""
    seed: int | None = Field(None, ge=0, le=2**64 - 1)
    """Its starting noise; between keyframes the noise is slerped (a seed walk)."""
    negative_prompt: str | None = Field(None, max_length=MAX_TEXT)
    """Its negative prompt (a text, or an expression over `define`); interpolated like the prompts."""
    guidance_scale: float | None = Field(None, ge=0, le=100)
    """Its classifier-free guidance; linear between keyframes."""
    ease: Ease | None = None
    """How the segment that starts here moves: linear, smoothstep, cosine, ease-in or ease-out (default: the top
    level's ease)."""
    loras: dict[LoraName, float] | None = None
    """Its LoRA strengths, {name: scale}; a LoRA it leaves out keeps the top level's scale. Linear between
    keyframes."""
    controlnets: dict[LoraName, float] | None = None
    """Its ControlNet strengths, {name: scale}; a ControlNet it leaves out keeps the top level's scale. Linear
    between keyframes."""
    reference: str | None = Field(None, min_length=1)
    """An image the IP-Adapter (ip_adapter:) steers this keyframe towards; embedded once, the embeddings slerp
    between keyframes. A keyframe without one fades the nearest reference to scale 0."""
    ip_adapter_scale: float | None = Field(None, ge=0, le=10)
    """Its reference's strength (default: ip_adapter.scale); linear between keyframes."""
    image: Text | None = None
    """A picture (PNG, JPEG, ...) whose DDIM inversion is the keyframe's starting latent: its frame redraws it."""
    fit: Literal["crop", "pad"] | None = None
    """How its image meets the job's size: crop (default: cover the frame, cut the overhang) or pad (fit inside,
    on black)."""

    @model_validator(mode="after")
    def _fit_needs_an_image(self):
        if self.fit is not None and self.image is None:
            raise MorphError("fit: says how a keyframe's image meets the job's size; give the keyframe an image: too, "
                             "or remove fit")
        return self

    @model_serializer(mode="wrap")
    def _plain(self, handler):
        """A keyframe that sets nothing but its prompt is written as the prompt alone, as the user wrote it."""
        data = {k: v for k, v in handler(self).items() if v is not None}
        return self.prompt if list(data) == ["prompt"] else data


def _keyframe(value):
    """A keyframe is a prompt text, or a mapping with its own settings."""
    if isinstance(value, str):
        if not value:
            raise ValueError("expected a non-empty string")
        return {"prompt": value}
    if isinstance(value, dict):
        return value
    raise ValueError("expected a prompt text, or a mapping {prompt, seed, negative_prompt, guidance_scale, ease, "
                     "loras, controlnets, reference, ip_adapter_scale, image, fit}")


class InversionSpec(Section):
    """How image keyframes are inverted into their starting latents (DDIM inversion)."""

    guidance_scale: float = Field(1.0, ge=0, le=100)
    """Classifier-free guidance of the inversion; 1 inverts most faithfully."""
    num_inference_steps: int | None = Field(None, ge=1, le=1000)
    """Inversion steps; default: the job's num_inference_steps."""


KeyframeEntry = Annotated[Keyframe, BeforeValidator(_keyframe, json_schema_input_type=Text | Keyframe)]
