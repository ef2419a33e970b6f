"""What `ip_adapter:` and the keyframes' `reference:` name, found and checked before any model loads: the adapter's
.safetensors file (a file, a folder holding one, or a cached hub id: diffusers' load_ip_adapter layouts), its CLIP
image encoder's folder, and each reference image (read whole, as keyframe images are). No torch: headers, configs
and pictures only."""

import json
from dataclasses import dataclass
from pathlib import Path

from ..config.jobs import JobConfig
from ..errors import MorphError
from ..media.picture import read_picture
from .model_files import tensor_shapes

PLAIN = "image_proj.proj.weight"  # the image projection of a plain IP-Adapter: [4 tokens x cross width, embedding]


@dataclass(frozen=True)
class IpAdapterFiles:
    """The files of a job's IP-Adapter, found and checked, and the widths its projection was made for."""

    adapter: str  # the .safetensors file holding image_proj.* and ip_adapter.*
    image_encoder: str  # the CLIP image encoder's folder (config.json and .safetensors weights)
    references: list[str | None]  # each keyframe's reference image (None: it has none)
    cross_width: int  # channels of the UNet cross-attention it was made for


def ip_adapter_files(config: JobConfig) -> IpAdapterFiles | None:
    """A job's IP-Adapter files (None without ip_adapter:); each mistake one line naming its key."""
    spec = getattr(config, "ip_adapter", None)
    if spec is None:
        return None
    references = config.keyframe_references()
    for i, reference in enumerate(references):
        if reference is not None:
            read_picture(reference, config.limits.max_image_pixels, f"prompts[{i}].reference")
    adapter = adapter_file(spec.path)
    shapes = tensor_shapes("ip_adapter.path", adapter)
    if not any(k.startswith("image_proj.") for k in shapes) or not any(k.startswith("ip_adapter.") for k in shapes):
        raise MorphError(f"ip_adapter.path: {adapter!r} holds no IP-Adapter (no image_proj. and ip_adapter. tensors "
                         f"among its {len(shapes)}); is it a LoRA or a checkpoint?")
    if PLAIN not in shapes:
        raise MorphError(f"ip_adapter.path: {adapter!r} is an IP-Adapter Plus, FaceID or full-face adapter (no "
                         f"{PLAIN}); morph walks plain IP-Adapters only")
    out_width, embed_width = shapes[PLAIN]
    encoder = encoder_folder(spec.image_encoder, adapter)
    projection = _encoder_config(encoder).get("projection_dim")
    if projection != embed_width:
        raise MorphError(f"ip_adapter.image_encoder: {encoder!r} embeds images in {projection} channels, and the "
                         f"adapter reads {embed_width}; use the image encoder the adapter was trained with")
    return IpAdapterFiles(adapter, encoder, references, out_width // 4)


def adapter_file(path: str) -> str:
    """The .safetensors file `ip_adapter.path` names: the file itself, the one IP-Adapter in a folder, or a cached
    hub id's (owner/name, or owner/name/sub/file.safetensors for one of several)."""
    if Path(path).is_file():
        if not path.lower().endswith(".safetensors"):
            raise MorphError(f"ip_adapter.path: {path!r} is not a .safetensors file; morph loads no pickle files")
        return path
    if Path(path).is_dir():
        return _one_adapter(path, path)
    parts = path.split("/")
    if path.startswith((".", "/", "~")) or "\\" in path or len(parts) < 2:
        raise MorphError(f"ip_adapter.path: {path!r} is not a file or folder; give an IP-Adapter .safetensors file, "
                         "a folder holding one, or a hub id")
    repo, inside = "/".join(parts[:2]), "/".join(parts[2:])
    snapshot = cached_snapshot("ip_adapter.path", repo)
    if inside:
        if not (Path(snapshot) / inside).is_file():
            raise MorphError(f"ip_adapter.path: the cached {repo!r} has no {inside!r}; download it on a connected "
                             f"machine with `hf download {repo} {inside}`")
        return str(Path(snapshot) / inside)
    return _one_adapter(path, snapshot)


def _one_adapter(named: str, folder: str) -> str:
    """The one IP-Adapter .safetensors file under `folder` (told by its image_proj. tensors), else one line."""
    found = [str(f) for f in sorted(Path(folder).rglob("*.safetensors"))
             if any(k.startswith("image_proj.") for k in tensor_shapes("ip_adapter.path", str(f)))]
    if not found:
        raise MorphError(f"ip_adapter.path: {named!r} holds no IP-Adapter .safetensors file (image_proj. tensors)")
    if len(found) > 1:
        names = [str(Path(f).relative_to(folder)) for f in found]
        raise MorphError(f"ip_adapter.path: {named!r} holds {len(found)} IP-Adapter files ({', '.join(names[:4])}); "
                         f"name one, e.g. {named}/{names[0]}")
    return found[0]


def encoder_folder(image_encoder: str | None, adapter: str) -> str:
    """The image encoder's folder: the one named (a folder, or a cached hub id owner/name[/subfolder]), else the
    image_encoder/ folder beside the adapter file, where diffusers' load_ip_adapter looks."""
    if image_encoder is None:
        folder = Path(adapter).parent / "image_encoder"
        if not folder.is_dir():
            raise MorphError(f"ip_adapter.image_encoder: there is no image_encoder/ folder beside {adapter!r}; name "
                             "the CLIP image encoder's folder or hub id")
        return str(folder)
    if Path(image_encoder).is_dir():
        return image_encoder
    parts = image_encoder.split("/")
    if image_encoder.startswith((".", "/", "~")) or "\\" in image_encoder or len(parts) < 2:
        raise MorphError(f"ip_adapter.image_encoder: {image_encoder!r} is not a folder; give the CLIP image "
                         "encoder's folder or hub id")
    folder = Path(cached_snapshot("ip_adapter.image_encoder", "/".join(parts[:2]))) / "/".join(parts[2:])
    if not folder.is_dir():
        raise MorphError(f"ip_adapter.image_encoder: the cached {'/'.join(parts[:2])!r} has no folder "
                         f"{'/'.join(parts[2:])!r}")
    return str(folder)


def _encoder_config(folder: str) -> dict:
    """The image encoder's config.json, checked to come with .safetensors weights."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        raise MorphError(f"ip_adapter.image_encoder: {folder!r} has no readable config.json; is it a CLIP image "
                         "encoder's folder?") from None
    if not isinstance(config, dict) or not any(Path(folder).glob("*.safetensors")):
        raise MorphError(f"ip_adapter.image_encoder: {folder!r} holds no .safetensors weights and config; morph "
                         "loads no pickle files")
    return config


def cached_snapshot(key: str, repo: str) -> str:
    """The Hugging Face cache's folder of hub id `repo`, without the network; not cached: one line naming `key`."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(repo, local_files_only=True)
    except (LocalEntryNotFoundError, ValueError, OSError):
        raise MorphError(f"{key}: {repo!r} is neither a local file or folder nor in the Hugging Face cache; "
                         f"download it on a connected machine with `hf download {repo}`") from None
