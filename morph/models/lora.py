"""LoRAs loaded into a pipeline with a strength per frame.

diffusers scales a LoRA per call (`set_adapters`), the same for every sample of a batch. morph loads
each LoRA at peft scale 1 and multiplies its change by a strength per row of the batch instead:
frames of one batch can then sit at different strengths. The change B(A x) is linear in A x, so the
strength multiplies the down (A) matrix's output, which has only the LoRA's rank of channels.
A UNet batch under classifier-free guidance is [unconditional rows, conditional rows], so the
strengths repeat over both halves. The text encoders take one strength per encoding.
"""

from contextlib import contextmanager

import torch

from ..errors import MorphError
from .lora_files import LoraFile, check_fits

_TEXT_PARTS = ("text_encoder", "text_encoder_2")


class LoraStrengths:
    """The LoRAs in a pipeline and the strengths they run at: `rows` for a UNet batch, `text` for an encoding."""

    def __init__(self, pipe, loras: list[LoraFile], scales: list[float]):
        from peft.tuners.lora import LoraLayer

        self.loras, self.names = loras, [lora.name for lora in loras]
        self.defaults = torch.tensor(scales, dtype=torch.float64)  # the top level's scale of each LoRA
        self.in_text = any(part in _TEXT_PARTS for lora in loras for part in lora.parts)
        self._device, self._dtype = pipe.unet.device, pipe.unet.dtype
        self._now = {"unet": self._on_device(self.defaults), "text": self._on_device(self.defaults)}
        self._shaped = {}  # the multipliers made from _now, by (part, LoRA, rows, dims, dtype): made once per batch
        for part in ("unet",) + _TEXT_PARTS:
            model = getattr(pipe, part, None)
            for layer in model.modules() if model is not None else ():
                if isinstance(layer, LoraLayer):
                    for name, down in layer.lora_A.items():
                        down.register_forward_hook(self._hook("unet" if part == "unet" else "text",
                                                              self.names.index(name)))

    def _on_device(self, strengths: torch.Tensor) -> torch.Tensor:
        return strengths.to(self._device, torch.float32)

    def _hook(self, part: str, k: int):
        def scaled(module, args, output):
            key = (part, k, output.shape[0], output.dim(), output.dtype)
            if key not in self._shaped:
                strength = self._now[part][..., k]  # [B] per row of a UNet batch, or one for all rows
                if strength.dim():
                    strength = strength.repeat(output.shape[0] // strength.shape[0])  # both halves under CFG
                    strength = strength.view(-1, *[1] * (output.dim() - 1))
                self._shaped[key] = strength.to(output.dtype)
            return output * self._shaped[key]
        return scaled

    def _set(self, part: str, strengths: torch.Tensor) -> torch.Tensor:
        """Run `part` at `strengths` from now on; returns what it ran at before."""
        before, self._now[part] = self._now[part], strengths
        self._shaped = {key: value for key, value in self._shaped.items() if key[0] != part}
        return before

    @contextmanager
    def rows(self, strengths: torch.Tensor | None):
        """Inside: the UNet runs each LoRA k at strengths[:, k] on the batch's rows ([B, n]; None: the defaults)."""
        before = self._set("unet", self._on_device(self.defaults if strengths is None else strengths))
        try:
            yield
        finally:
            self._set("unet", before)

    @contextmanager
    def text(self, scales: list[float]):
        """Inside: the text encoders run each LoRA at scales[k] [n]."""
        before = self._set("text", self._on_device(torch.tensor(scales, dtype=torch.float64)))
        try:
            yield
        finally:
            self._set("text", before)

    def record(self) -> list[dict]:
        """What the manifest says of each LoRA: name, file, what it changes, default strength."""
        return [{"name": lora.name, "file": lora.file, "parts": lora.parts, "scale": float(scale)}
                for lora, scale in zip(self.loras, self.defaults)]


def text_widths(pipe) -> dict[str, int]:
    """The channels each text encoder of a pipeline reads: {text_encoder: 768} (SDXL: text_encoder_2 too)."""
    return {part: getattr(pipe, part).config.hidden_size for part in _TEXT_PARTS if getattr(pipe, part, None)}


def load_loras(pipe, model: str, loras: list[LoraFile], scales: list[float]) -> LoraStrengths | None:
    """Load the config's LoRAs (lora_files.read_lora) into `pipe`, each checked against the model's family first;
    None without any."""
    if not loras:
        return None
    from safetensors.torch import load_file

    for i, lora in enumerate(loras):
        check_fits(f"loras[{i}]", lora, model, pipe.unet.config.cross_attention_dim, text_widths(pipe))
    for i, lora in enumerate(loras):
        try:
            pipe.load_lora_weights(load_file(lora.file), adapter_name=lora.name)
        except (ValueError, KeyError, RuntimeError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise MorphError(f"loras[{i}]: {lora.file!r} cannot be loaded into model {model!r} "
                             f"({first[:200]})") from None
    pipe.set_adapters([lora.name for lora in loras], adapter_weights=[1.0] * len(loras))  # strengths: the hooks'
    return LoraStrengths(pipe, loras, scales)
