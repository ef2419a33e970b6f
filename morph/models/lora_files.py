"""What a LoRA file is, read from its safetensors header alone: which parts of a model it changes (UNet, text
encoders) and for which widths it was made. No torch, no weights read: checked before any model loads."""

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MorphError
from .model_files import looks_like_folder, tensor_shapes

HUB_FILE = "pytorch_lora_weights.safetensors"  # the name diffusers' trainers (and LCM-LoRA, Hyper-SD) save under
# the down (A) matrix of a LoRA pair, in diffusers/PEFT, older diffusers and kohya/A1111 key layouts
_DOWN = re.compile(r"(\.lora_A(\.[^.]+)?\.weight|\.lora_down\.weight|\.lora\.down\.weight|_lora\.down\.weight)$")
# which encoder a key belongs to; anything else is the UNet's
_TEXT = {"text_encoder_2": ("text_encoder_2.", "lora_te2_"), "text_encoder": ("text_encoder.", "lora_te_", "lora_te1_")}
FAMILIES = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}  # by the width the UNet's cross-attention reads


@dataclass
class LoraFile:
    """One LoRA of a config: its name, the file it was read from, and what its tensors change."""

    name: str
    file: str  # the local .safetensors file (a folder's or a cached hub id's own)
    parts: list[str] = field(default_factory=list)  # unet, text_encoder, text_encoder_2: what it changes
    cross_width: int | None = None  # channels its UNet cross-attention keys read (768 for SD 1.x)
    text_widths: dict[str, int] = field(default_factory=dict)  # per text encoder part, the channels it reads

    def family(self) -> str:
        """The family its widths say it was made for, in words."""
        if "text_encoder_2" in self.parts or self.cross_width == 2048:
            return "SDXL"
        return FAMILIES.get(self.cross_width, f"a model whose cross-attention reads {self.cross_width} channels")


def lora_file(where: str, path: str) -> str:
    """The .safetensors file a `loras:` path names: the file itself, a folder's LoRA file, or a hub id's cached one."""
    if Path(path).is_file():
        return path
    if Path(path).is_dir():
        files = sorted(Path(path).glob("*.safetensors"))
        own = [f for f in files if f.name == HUB_FILE]
        if own or len(files) == 1:
            return str((own or files)[0])
        raise MorphError(f"{where}: {path!r} holds {len(files)} .safetensors files and no {HUB_FILE}; name the file "
                         "itself")
    if looks_like_folder(path) or path.lower().endswith(".safetensors"):
        raise MorphError(f"{where}: {path!r} is not a file or folder; give a LoRA .safetensors file, a folder "
                         "holding one, or a hub id")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(path, HUB_FILE)
    if not isinstance(cached, str):
        raise MorphError(f"{where}: {path!r} is neither a local file nor a LoRA in the Hugging Face cache; download "
                         f"it on a connected machine with `hf download {path} {HUB_FILE}`")
    return cached


def read_lora(where: str, name: str, path: str) -> LoraFile:
    """The LoRA at `path` (lora_file): refused, in one line naming `where`, when it holds no LoRA or a kind morph
    cannot give a strength per frame (DoRA)."""
    file = lora_file(where, path)
    if not file.lower().endswith(".safetensors"):
        raise MorphError(f"{where}: {path!r} is not a .safetensors file; morph loads no pickle files")
    shapes = tensor_shapes(where, file)
    downs = {k: s for k, s in shapes.items() if _DOWN.search(k) and len(s) >= 2}
    if not downs:
        raise MorphError(f"{where}: {path!r} holds no LoRA weights (no lora_A or lora_down tensors among its "
                         f"{len(shapes)}); is it a checkpoint or an embedding?")
    if any("dora_scale" in k or "lora_magnitude_vector" in k for k in shapes):
        raise MorphError(f"{where}: {path!r} is a DoRA, whose strength is not a scale of its change; morph walks "
                         "plain LoRAs only")
    lora = LoraFile(name, file)
    for key, shape in downs.items():
        part = next((p for p, prefixes in _TEXT.items() if key.startswith(prefixes)), "unet")
        if part not in lora.parts:
            lora.parts.append(part)
        if part == "unet" and re.search(r"attn2[._]to_k", key):
            lora.cross_width = shape[1]
        elif part != "unet" and re.search(r"q_proj", key):
            lora.text_widths[part] = shape[1]
    lora.parts.sort(key=["unet", "text_encoder", "text_encoder_2"].index)
    return lora


def read_loras(names: list[str], paths: list[str]) -> list[LoraFile]:
    """The LoRAs of a config's `loras:` (by name and path), each read and checked (read_lora)."""
    return [read_lora(f"loras[{i}]", name, path) for i, (name, path) in enumerate(zip(names, paths))]


def check_fits(where: str, lora: LoraFile, model: str, cross_width: int, text_widths: dict[str, int]) -> None:
    """A LoRA against the model's widths (the UNet's cross-attention, each text encoder's hidden size): made for
    its family, or one line naming the mismatch."""
    mismatch = lora.cross_width is not None and lora.cross_width != cross_width
    mismatch |= any(part not in text_widths or width != text_widths[part] for part, width in lora.text_widths.items())
    mismatch |= "text_encoder_2" in lora.parts and "text_encoder_2" not in text_widths
    if mismatch:
        family = "SDXL" if "text_encoder_2" in text_widths else FAMILIES.get(cross_width)
        widths = f"its cross-attention reads {lora.cross_width} channels" if lora.cross_width else \
            f"its text encoder reads {', '.join(map(str, lora.text_widths.values()))} channels"
        raise MorphError(f"{where}: {Path(lora.file).name!r} is a LoRA for {lora.family()} ({widths}), and model "
                         f"{model!r} {f'is {family}' if family else 'is another model'} (its cross-attention reads "
                         f"{cross_width}); use a LoRA made for the model's family")
