"""What a ControlNet is, read from its config or its safetensors header alone: the family it was made for, checked
against the model's before any model loads. No torch, no weights read."""

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import MorphError
from .model_files import looks_like_folder, tensor_shapes

CONFIG, WEIGHTS = "config.json", "diffusion_pytorch_model.safetensors"  # a diffusers ControlNet folder's files


@dataclass(frozen=True)
class Family:
    """What makes a ControlNet's residuals fit a UNet: the width its cross-attention reads, whether its attention
    projections are linear (SD 2.x, SDXL), whether it reads SDXL's size conditioning, and the channels of the
    residuals its down blocks hand over, in order (the mid block's is the last one's)."""

    cross_width: int
    linear: bool
    xl: bool
    residuals: tuple[int, ...]

    def name(self) -> str:
        return "SDXL" if self.xl else "SD 2.x" if self.linear else "SD 1.x"

    def words(self) -> str:
        return f"{self.name()} (its cross-attention reads {self.cross_width} channels)"


def family_of_config(config: dict) -> Family:
    """The family of a UNet's or a diffusers ControlNet's config.json: the residuals of conv_in, then of each down
    block's layers and its downsampler (all but the last block's)."""
    channels, layers = list(config["block_out_channels"]), config["layers_per_block"]
    residuals = [channels[0]]
    for i, width in enumerate(channels):
        residuals += [width] * (layers if isinstance(layers, int) else layers[i]) + ([width] if i < len(channels) - 1
                                                                                    else [])
    return Family(config["cross_attention_dim"], bool(config.get("use_linear_projection")),
                  config.get("addition_embed_type") == "text_time", tuple(residuals))


@dataclass(frozen=True)
class ControlNetFile:
    """One ControlNet of a config: its name, where its weights are (a diffusers folder, or one .safetensors file in
    diffusers' or the original layout) and its family."""

    name: str
    location: str
    family: Family

    @property
    def single_file(self) -> bool:
        return Path(self.location).is_file()


def _family_of_header(where: str, path: str) -> Family:
    """A single file's family from its tensor names and shapes: diffusers' keys, or the original layout's, under
    control_model. or bare (a ControlNet saved apart from its model, as diffusers' conversion reads it too)."""
    shapes = tensor_shapes(where, path)
    if not any(k.startswith(("controlnet_cond_embedding.", "control_model.input_hint_block.", "input_hint_block."))
               for k in shapes):
        raise MorphError(f"{where}: {path!r} holds no ControlNet weights (no controlnet_cond_embedding or "
                         f"input_hint_block tensors among its {len(shapes)})")
    keys = sorted(shapes)
    width = next((shapes[k][1] for k in keys if re.search(r"attn2\.to_k\.weight$", k)), None)
    projection = next((shapes[k] for k in keys if re.search(r"proj_in\.weight$", k)), None)
    if width is None or projection is None:
        raise MorphError(f"{where}: {path!r} is a ControlNet without cross-attention, which morph cannot check "
                         "against the model's family")
    # the zero convolutions that hand each residual over: diffusers' controlnet_down_blocks.N, the original zero_convs.N
    zero = re.compile(r"^(?:controlnet_down_blocks\.(\d+)|(?:control_model\.)?zero_convs\.(\d+)\.0)\.weight$")
    convs = sorted((int(m[1] or m[2]), shapes[k][0]) for k in keys if (m := zero.match(k)))
    return Family(width, len(projection) == 2, any(k.startswith(("add_embedding.", "control_model.label_emb.", "label_emb."))
                                                   for k in keys), tuple(c for _, c in convs))


def read_controlnet(where: str, name: str, path: str) -> ControlNetFile:
    """The ControlNet at `path`: a folder with config.json, a .safetensors file, or a hub id whose config.json and
    weights are in the Hugging Face cache; anything else one line naming `where`."""
    if Path(path).is_file():
        if not path.lower().endswith(".safetensors"):
            raise MorphError(f"{where}: {path!r} is not a .safetensors file; morph loads no pickle files")
        return ControlNetFile(name, path, _family_of_header(where, path))
    if Path(path).is_dir():
        folder = Path(path)
    elif looks_like_folder(path) or path.lower().endswith(".safetensors"):
        raise MorphError(f"{where}: {path!r} is not a file or folder; give a diffusers ControlNet folder, a "
                         ".safetensors file, or a hub id")
    else:
        from huggingface_hub import try_to_load_from_cache

        cached = [try_to_load_from_cache(path, file) for file in (CONFIG, WEIGHTS)]
        if not all(isinstance(file, str) for file in cached):
            raise MorphError(f"{where}: {path!r} is neither a local folder nor a ControlNet in the Hugging Face cache; "
                             f"download it on a connected machine with `hf download {path} {CONFIG} {WEIGHTS}`")
        folder = Path(cached[0]).parent
    try:
        config = json.loads((folder / CONFIG).read_text())
        if config.get("_class_name") != "ControlNetModel":
            raise MorphError(f"{where}: {path!r} holds a {config.get('_class_name')}, not a ControlNetModel")
        return ControlNetFile(name, str(folder), family_of_config(config))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise MorphError(f"{where}: {path!r} has no readable {CONFIG} of a diffusers ControlNet") from None


def check_fits(where: str, controlnet: ControlNetFile, model: str, unet: Family) -> None:
    """A ControlNet against the model's UNet: made for its family and widths, or one line naming both."""
    own = controlnet.family
    if own == unet:
        return
    if (own.cross_width, own.linear, own.xl) == (unet.cross_width, unet.linear, unet.xl):
        raise MorphError(f"{where}: {controlnet.name!r} is a ControlNet for another {own.name()} model: its residuals "
                         f"have {list(own.residuals)} channels, and those of model {model!r} {list(unet.residuals)}; "
                         "use a ControlNet made for this model")
    raise MorphError(f"{where}: {controlnet.name!r} is a ControlNet for {own.words()}, and model {model!r} is "
                     f"{unet.words()}; use a ControlNet made for the model's family")


def read_controlnets(config) -> list[ControlNetFile]:
    """The ControlNets of a config's `controlnets:`, each read and, where the model's configs are on disk, checked
    against its family (load_controlnets checks them all again against the loaded UNet)."""
    from .pipeline import unet_config

    files = [read_controlnet(f"controlnets[{i}]", name, spec.path)
             for i, (name, spec) in enumerate(zip(config.controlnet_names(), config.controlnets))]
    for i, spec in enumerate(config.controlnets):
        _check_image(f"controlnets[{i}].image", spec.image)
    own = unet_config(config.model, config.configs_from) if files else None
    for i, controlnet in enumerate(files):
        if own is not None:
            check_fits(f"controlnets[{i}]", controlnet, config.model, family_of_config(own))
    return files


def _check_image(where: str, path: str) -> None:
    """The control image opens as an image (its header alone)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):
            pass
    except (OSError, UnidentifiedImageError):
        raise MorphError(f"{where}: {path!r} is not an image Pillow can read (PNG, JPEG, WebP, ...)") from None
