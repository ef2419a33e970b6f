"""LoRAs loaded into a pipeline with a strength per frame.

diffusers scales a LoRA per call (`set_adapters`), the same for every sample of a batch. morph loads the
LoRAs with diffusers (every file layout it reads), then swaps each layer peft made for a `RowScaled` one:
the base layer plus up(down(x) * s), where down and up stack every LoRA of that layer along the rank
(up already times its LoRA's alpha/rank) and s is the strength of each rank channel's LoRA for each
row. The change is linear in down(x), so frames of one batch can sit at different strengths. A Linear
layer takes s into A's rows once per batch (a copy of A per row while a strength walks) and then
costs two thin products over its own, the second adding into the base's output; peft's forward adds
a full-width multiply per LoRA and Python around every layer (docs/loras.md has the figures).
A UNet batch under classifier-free guidance is [unconditional rows, conditional rows], so the
strengths repeat over both halves. The text encoders take one strength per encoding.
"""

import warnings
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from ..errors import MorphError
from .lora_files import LoraFile, check_fits

_TEXT_PARTS = ("text_encoder", "text_encoder_2")


class RowScaled(torch.nn.Module):
    """A layer with its LoRAs' changes scaled per row: base(x) + up(down(x) * s), for a Linear or a Conv2d."""

    def __init__(self, base: torch.nn.Module, down: torch.nn.Module, up: torch.Tensor, channels: tuple[int, ...]):
        super().__init__()
        self.base = base
        self.channels = channels  # which LoRA (its index in the config's loras:) each rank channel belongs to
        self.down = down  # every LoRA's A stacked along the rank: a Linear [R, in] or a Conv2d [R, in, kh, kw]
        self.up = torch.nn.Parameter(up, requires_grad=False)  # [out, R] (Conv2d: [out, R, 1, 1]): B * alpha/rank
        self._conv = isinstance(base, torch.nn.Conv2d)
        self.scale(torch.zeros(up.shape[1], dtype=up.dtype, device=up.device))

    def scale(self, strength: torch.Tensor):
        """Run each rank channel at `strength` from now on: [R] for every row, or [B, R] per frame (rows [2B] under
        CFG take it twice)."""
        # plain tensors, so that a compiled UNet takes new ones as its inputs, not as a new graph
        doubled = torch.cat([strength, strength]) if strength.dim() == 2 else strength
        if self._conv:  # [1, R, 1, 1] or [2B, R, 1, 1], times down's output
            self.strength = doubled.view(-1, doubled.shape[-1], 1, 1)
        else:  # A's rows times their strength, as [in, R] or per row [2B, in, R]: a call is one product for down
            # and one that adds up's into the base's output, where a multiply and an add more cost as much again
            self.down_scaled = (self.down.weight * doubled[..., None]).transpose(-1, -2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self._conv:
            return out + F.conv2d(self.down(x) * self.strength[:x.shape[0]], self.up)
        down = self.down_scaled  # [:rows] is the first half (the frames' own strengths) without CFG
        down = torch.bmm(x.reshape(x.shape[0], -1, x.shape[-1]), down[:x.shape[0]]) if down.dim() == 3 else x @ down
        # in place on the base's fresh output: view(), never a copy, so the sum lands in `out`
        out.view(-1, out.shape[-1]).addmm_(down.reshape(-1, down.shape[-1]), self.up.t())
        return out


def _row_scaled(name: str, layer, loras: list[str]) -> RowScaled:
    """The RowScaled layer for peft's LoRA `layer`, whose adapters are named as in `loras`; refused in one line when
    its LoRAs are not plain A/B pairs."""
    base, adapters = layer.get_base_layer(), list(layer.lora_A)
    plain = (type(base) in (torch.nn.Linear, torch.nn.Conv2d) and not layer.lora_variant
             and getattr(base, "groups", 1) == 1 and not any(layer.lora_bias.get(a) for a in adapters))
    if not plain:
        raise MorphError(f"loras: {', '.join(adapters)} change {name} ({type(base).__name__}) in a way morph "
                         f"cannot give a strength per frame; only plain LoRAs on Linear and Conv2d layers walk")
    first, weight = layer.lora_A[adapters[0]], torch.cat([layer.lora_A[a].weight for a in adapters])
    if isinstance(first, torch.nn.Conv2d):  # its kernel, stride and padding are the base layer's
        down = torch.nn.Conv2d(first.in_channels, len(weight), first.kernel_size, first.stride, first.padding,
                               first.dilation, bias=False, device="meta")
    else:
        down = torch.nn.Linear(first.in_features, len(weight), bias=False, device="meta")
    down.weight = torch.nn.Parameter(weight, requires_grad=False)
    up = torch.cat([layer.lora_B[a].weight * layer.scaling[a] for a in adapters], dim=1)
    return RowScaled(base, down, up, tuple(loras.index(a) for a in adapters for _ in range(layer.r[a])))


class LoraStrengths:
    """The LoRAs in a pipeline and the strengths they run at: `rows` for a UNet batch, `text` for an encoding."""

    def __init__(self, pipe, loras: list[LoraFile], scales: list[float]):
        from peft.tuners.lora import LoraLayer

        self.loras, self.names = loras, [lora.name for lora in loras]
        self.defaults = torch.tensor(scales, dtype=torch.float64)  # the top level's scale of each LoRA
        self.in_text = any(part in _TEXT_PARTS for lora in loras for part in lora.parts)
        self._device = pipe.unet.device
        # the swapped layers of the UNet ("unet") and the text encoders ("text"), grouped by which LoRA each of
        # their rank channels belongs to: one strength tensor serves a group
        self._layers: dict[str, dict[tuple[int, ...], list[RowScaled]]] = {"unet": {}, "text": {}}
        for part in ("unet",) + _TEXT_PARTS:
            model = getattr(pipe, part, None)
            layers = [(name, layer) for name, layer in (model.named_modules() if model is not None else ())
                      if isinstance(layer, LoraLayer)]
            for name, layer in layers:
                parent, _, child = name.rpartition(".")
                scaled = _row_scaled(f"{part}.{name}", layer, self.names)
                self._layers["unet" if part == "unet" else "text"].setdefault(scaled.channels, []).append(scaled)
                model.get_submodule(parent).register_module(child, scaled)
        self._now = {}
        for part in self._layers:
            self._set(part, self._on_device(self.defaults))

    def _on_device(self, strengths: torch.Tensor) -> torch.Tensor:
        return strengths.to(self._device, torch.float32)

    def _set(self, part: str, strengths: torch.Tensor) -> torch.Tensor:
        """Run `part` at `strengths` ([n], or [B, n] per frame) from now on; returns what it ran at before. Building
        the per-row copies of A can run out of memory: then `part` stays at what it ran at before, every layer."""
        before = self._now.get(part)
        try:
            self._scale(part, strengths)
        except BaseException:
            if before is not None:  # the layers already scaled go back (and free their copies)
                self._scale(part, before)
            raise
        self._now[part] = strengths
        return before

    def _scale(self, part: str, strengths: torch.Tensor) -> None:
        for channels, layers in self._layers[part].items():
            strength = strengths[..., list(channels)].to(layers[0].up.dtype)
            for layer in layers:
                layer.scale(strength)

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
            with warnings.catch_warnings():  # peft warns of every adapter after the first: several are the point
                warnings.filterwarnings("ignore", "Already found a `peft_config`")
                pipe.load_lora_weights(load_file(lora.file), adapter_name=lora.name)
        except (ValueError, KeyError, RuntimeError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise MorphError(f"loras[{i}]: {lora.file!r} cannot be loaded into model {model!r} "
                             f"({first[:200]})") from None
    return LoraStrengths(pipe, loras, scales)
