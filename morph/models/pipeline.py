"""Load a diffusers Stable Diffusion 1.x pipeline: built-in, local folder or hub id; device, dtype, scheduler."""

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import MorphError
from .lora import load_loras
from .model_files import check_model_files, is_single_file, looks_like_folder, tensor_shapes
from .scheduler import scheduler_class, scheduler_options
from ..quiet import quiet_environment
from ..torchrun import launch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LoadedModel:
    pipe: object  # a diffusers StableDiffusionPipeline
    model: str  # what the config named
    location: str  # where the weights came from: "built in code", a folder, or a hub id
    revision: str | None  # hub commit hash, when the weights came from the hub cache
    loras: object = None  # lora.LoraStrengths, when the config loads LoRAs


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA, else the CPU; an explicit device must exist. Under torchrun a GPU is counted from the rank's
    own: cuda and cuda:0 are GPU LOCAL_RANK, cuda:N is GPU N + LOCAL_RANK, so one config puts each rank on its own
    GPU; a config whose ranks would run past the GPUs torch sees is refused (two ranks on one GPU). Apple's MPS is
    refused: it has no float64, in which morph interpolates prompt tensors and noise."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise MorphError(f"device: {name!r} asked for, but torch sees no CUDA GPU "
                             f"(torch {torch.__version__}); use device: cpu or install a CUDA build of torch")
        index, count = int(name.partition(":")[2] or 0), torch.cuda.device_count()
        if index >= count:
            raise MorphError(f"device: {name!r} asked for, but torch sees {count} CUDA GPU(s): cuda:0"
                             f"{f' to cuda:{count - 1}' if count > 1 else ''}; check CUDA_VISIBLE_DEVICES")
        ranks = launch()
        if index + ranks.local_world > count:
            raise MorphError(f"device: {name!r} puts the {ranks.local_world} torchrun ranks on this machine "
                             f"(LOCAL_WORLD_SIZE) on GPUs {index} to {index + ranks.local_world - 1}, but torch sees "
                             f"{count}; name a lower cuda:N or start fewer ranks (--nproc_per_node)")
        return torch.device("cuda", index + ranks.local_rank)
    if name == "mps":
        raise MorphError("device: 'mps' cannot render morph's walks: Apple's MPS has no float64, in which morph "
                         "interpolates prompts and noise; use device: cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto' is float16 on CUDA (half the memory, tensor cores) and float32 elsewhere."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return DTYPES[name]


def quiet_libraries() -> None:
    """Silence the libraries' own progress bars, advice and info logging (morph shows its own)."""
    quiet_environment()
    import transformers

    transformers.logging.set_verbosity_error()  # before diffusers imports it and it warns
    transformers.logging.disable_progress_bar()
    import diffusers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()


def _toy_folder() -> Path:
    return Path(__file__).parent / "toy" / "weights"


def _location(model: str) -> str:
    if model == "toy":
        if not (_toy_folder() / "model_index.json").exists():
            raise MorphError("model: 'toy' weights are not in this install; build them with "
                             "`python -m morph.models.toy.train`")
        return str(_toy_folder())
    return model


def _from_pretrained(load, model: str, what: str = "model", **kwargs):
    """Call a from_pretrained-style `load`; a missing or unreachable model becomes one line, naming the key `what`
    (model, vae, configs_from) that gave it, saying what to do."""
    try:
        return load(model, **kwargs)
    except (OSError, ValueError) as e:
        if looks_like_folder(model) and not Path(model).is_dir():
            raise MorphError(f"{what}: {model!r} is not a folder; give an existing diffusers folder, "
                             "a hub id such as stable-diffusion-v1-5/stable-diffusion-v1-5"
                             f"{', tiny or toy' if what == 'model' else ''}") from None
        if Path(model).exists():
            kind = "Stable Diffusion folder" if what == "model" else "folder"
            raise MorphError(f"{what}: {model!r} is not a diffusers {kind} with safetensors weights "
                             f"({str(e).splitlines()[0]})") from None
        if "safetensors" in str(e):
            raise MorphError(f"{what}: {model!r} has no safetensors weights, and morph loads no other kind; "
                             "convert it, or use a model that ships .safetensors files") from None
        raise MorphError(
            f"{what}: {model!r} is neither in the Hugging Face cache nor reachable; download it on a connected "
            f"machine with `hf download {model}`, or point {what}: at a local diffusers folder") from None


def _hub_revision(model: str) -> str | None:
    """The commit of a hub model's cached snapshot (its folder name), or None for a local folder."""
    if Path(model).exists():
        return None
    from huggingface_hub import try_to_load_from_cache

    index = try_to_load_from_cache(model, "model_index.json")
    return Path(index).parent.name if isinstance(index, str) else None


PIPELINES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline")  # SD 1.x and 2.x; SDXL


def _pipeline_class(model: str, location: str, what: str = "model"):
    """The diffusers pipeline class the model's own model_index.json names: its family decides, not a flag."""
    import diffusers

    name = _from_pretrained(diffusers.DiffusionPipeline.load_config, location, what).get("_class_name")
    if name not in PIPELINES:
        raise MorphError(f"{what}: {model!r} is a {name}; morph renders Stable Diffusion 1.x, 2.x and XL "
                         f"({', '.join(PIPELINES)})")
    return getattr(diffusers, name)


SINGLE_FILE_PIPELINES = {"v1": "StableDiffusionPipeline", "v2": "StableDiffusionPipeline",
                         "xl_base": "StableDiffusionXLPipeline"}  # diffusers' names for what a checkpoint holds


def _warn_if_pickle(path: str) -> None:
    if not path.lower().endswith(".safetensors"):  # check_model_files refused it unless allow_pickle
        warnings.warn(f"{path}: loading a pickle checkpoint (allow_pickle: true); only do this for files you trust",
                      stacklevel=3)


def _single_file(what: str, load, path: str, config: str | None, **kwargs):
    """`load` (a from_single_file) with the configs of `config`, or of the hub model diffusers picks for the
    checkpoint's family; offline that needs the configs in the cache, which one line says how to get."""
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    try:
        return load(path, config=config, local_files_only=os.environ.get("HF_HUB_OFFLINE") == "1", **kwargs)
    except (OSError, ValueError, SingleFileComponentError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MorphError(f"{what}: {path!r} could not be loaded as a single-file checkpoint ({first[:200]}); set "
                         "configs_from: to a diffusers folder or hub id of the same family (its configs only, e.g. "
                         "`hf download stable-diffusion-v1-5/stable-diffusion-v1-5 --include '*.json' '*.txt'`)") from None


def load_vae(vae: str, dtype: torch.dtype, configs_from: str | None = None, allow_pickle: bool = False):
    """A VAE to use instead of the model's: a diffusers VAE folder (or a model folder with vae/), a hub id, or a
    single file (its config from configs_from's vae/)."""
    from diffusers import AutoencoderKL

    if is_single_file(vae):
        _warn_if_pickle(vae)
        return _single_file("vae", AutoencoderKL.from_single_file, vae, configs_from, subfolder="vae",
                            torch_dtype=dtype)
    subfolder = "vae" if (Path(vae) / "vae" / "config.json").is_file() else None
    return _from_pretrained(AutoencoderKL.from_pretrained, vae, "vae", subfolder=subfolder, torch_dtype=dtype,
                            use_safetensors=True)


def _load_single_file_pipeline(model: str, dtype: torch.dtype, safety_checker: bool, configs_from: str | None,
                               allow_pickle: bool):
    """A whole pipeline from one checkpoint file (as model sites share them); the family from its weights."""
    import diffusers
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type, load_single_file_checkpoint

    _warn_if_pickle(model)
    try:
        checkpoint = load_single_file_checkpoint(model)
    except (OSError, ValueError) as e:  # the header was whole (check_model_files); the tensors are not
        raise MorphError(f"model: {model!r} cannot be read as a checkpoint ({str(e).splitlines()[0][:150]}); "
                         "download or convert it again") from None
    kind = infer_diffusers_model_type(checkpoint)
    if configs_from:
        cls = _pipeline_class(configs_from, configs_from, "configs_from")
    elif kind in SINGLE_FILE_PIPELINES:
        cls = getattr(diffusers, SINGLE_FILE_PIPELINES[kind])
    else:
        raise MorphError(f"model: {model!r} holds a {kind} checkpoint; morph renders Stable Diffusion 1.x, 2.x and XL")
    kwargs = {"torch_dtype": dtype}
    if cls.__name__ == "StableDiffusionPipeline" and not safety_checker:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    return _single_file("model", cls.from_single_file, model, configs_from, **kwargs)


def load_model(model: str, device: torch.device, dtype: torch.dtype, scheduler: str | None,
               safety_checker: bool, vae: str | None = None, embeddings: list | None = None,
               configs_from: str | None = None, allow_pickle: bool = False,
               scheduler_config: dict | None = None, loras: list | None = None,
               lora_scales: list[float] | None = None) -> LoadedModel:
    """Load the pipeline named by `model` (its family read from its files), move it to `device`/`dtype`, swap
    the scheduler or the VAE if asked, and load textual-inversion embeddings and LoRAs (lora_files.LoraFile, each
    run at its scale of `lora_scales` unless a frame says otherwise)."""
    scheduler_cls = scheduler_class(scheduler) if scheduler else None
    if scheduler_cls is not None:
        scheduler_options(scheduler_cls, scheduler_config or {})
    check_model_files(model, vae, [e if isinstance(e, str) else e["path"] for e in embeddings or []], configs_from,
                      allow_pickle)
    if model.split("-")[0] == "tiny":
        from .tiny import BUILT_IN

        if model not in BUILT_IN:
            raise MorphError(f"model: {model!r} is not built in; the tiny models are {', '.join(BUILT_IN)}")
        if safety_checker:
            raise MorphError("safety_checker: the built-in tiny models have no safety checker; set it to false")
        pipe, location, revision = BUILT_IN[model](), "built in code", None
        if dtype != torch.float32:  # built in float32; hub and toy weights load in `dtype` directly
            pipe = pipe.to(dtype=dtype)
        if vae:
            pipe.vae = load_vae(vae, dtype, configs_from, allow_pickle)
    elif is_single_file(model):
        pipe, location, revision = _load_single_file_pipeline(model, dtype, safety_checker, configs_from,
                                                              allow_pickle), model, None
        if vae:
            pipe.vae = load_vae(vae, dtype, configs_from, allow_pickle)
    else:
        location = _location(model)
        cls = _pipeline_class(model, location)
        kwargs = {"dtype": dtype, "use_safetensors": True}
        if not safety_checker and cls.__name__ == "StableDiffusionPipeline":
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        if vae:
            kwargs["vae"] = load_vae(vae, dtype, configs_from, allow_pickle)
        pipe = _from_pretrained(cls.from_pretrained, location, **kwargs)
        revision = _hub_revision(location)
        if safety_checker and getattr(pipe, "safety_checker", None) is None:
            raise MorphError(f"safety_checker: true, but {model!r} ships no safety checker; set it to false")
    for embedding in embeddings or []:
        load_embedding(pipe, embedding)
    if device.type == "cuda" and device.index is not None:  # current too: pinned host copies go there, not to GPU 0
        torch.cuda.set_device(device)
    pipe = pipe.to(device)
    if scheduler_cls is not None:
        pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config, **(scheduler_config or {}))
    pipe.set_progress_bar_config(disable=True)
    strengths = load_loras(pipe, model, loras or [], lora_scales or [])
    return LoadedModel(pipe=pipe, model=model, location=location, revision=revision, loras=strengths)


def _tokenizer_on_disk(location: str) -> bool:
    names = ("tokenizer/vocab.json", "tokenizer/tokenizer.json")  # the slow and the fast tokenizer's file
    if Path(location).is_dir() or looks_like_folder(location):
        return any((Path(location) / name).is_file() for name in names)
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(location, name), str) for name in names)


def load_tokenizer(model: str | None):
    """Only the tokenizer of `model` (for `morph tokens`; None: SD 1.x's, shipped): no weights, no network."""
    if model is None:
        from .clip_bpe import sd15_tokenizer

        return sd15_tokenizer()
    # tiny.BUILT_IN's names, written out because importing tiny loads diffusers; they share one tokenizer
    if model in ("tiny", "tiny-sd2", "tiny-sdxl"):
        from .tiny import build_tokenizer

        return build_tokenizer()
    from transformers import CLIPTokenizer

    # only what is on disk: a hub id that is not cached is one line at once, not minutes of retries,
    # and never a tokenizer built from nothing (transformers returns one when the files are missing)
    location = _location(model)
    if not _tokenizer_on_disk(location):
        if Path(location).is_dir() or looks_like_folder(location):
            raise MorphError(f"model: {model!r} is not a diffusers folder with a tokenizer/ subfolder; "
                             "leave out --model for Stable Diffusion 1.x's tokenizer")
        raise MorphError(f"model: {model!r} has no tokenizer in the Hugging Face cache; download it with "
                         f"`hf download {model}`, or leave out --model for Stable Diffusion 1.x's tokenizer")
    tokenizer = _from_pretrained(CLIPTokenizer.from_pretrained, location, subfolder="tokenizer", local_files_only=True)
    if not 1 <= tokenizer.model_max_length <= 100_000:
        raise MorphError(f"model: {model!r} has a tokenizer without a usable model_max_length "
                         f"({tokenizer.model_max_length}); is it a Stable Diffusion model?")
    return tokenizer


def read_embedding(path: str, token: str | None) -> tuple[str, dict]:
    """A textual-inversion file: (its token, {encoder part: rows [n, D]}). Parts: "" for SD 1.x/2.x files (one
    tensor), "clip_l" and "clip_g" for SDXL's. The token is the one given, the file's own, or <file name>."""
    if not path.endswith(".safetensors"):
        raise MorphError(f"embeddings: {path!r} is not a .safetensors file; morph loads no pickle files")
    from safetensors.torch import load_file

    try:
        state = load_file(path)
    except Exception as e:
        raise MorphError(f"embeddings: {path!r} cannot be read as safetensors ({type(e).__name__})") from None
    if {"clip_l", "clip_g"} <= set(state):
        return token or f"<{Path(path).stem}>", {"clip_l": state["clip_l"], "clip_g": state["clip_g"]}
    if len(state) == 1:
        (own, rows), = state.items()
        name = token or (own if own not in ("emb_params", "*") else f"<{Path(path).stem}>")
        return name, {"": rows if rows.dim() == 2 else rows[None]}
    raise MorphError(f"embeddings: {path!r} holds {sorted(state)[:4]}; expected one tensor, or clip_l and clip_g")


def check_embedding_fits(path: str, parts: dict, widths: dict[str, int]) -> None:
    """A textual-inversion file's parts (read_embedding) against the text encoders' widths {part: channels}: made
    for the same family, and for encoders of the same width."""
    if set(parts) != set(widths):
        raise MorphError(f"embeddings: {path!r} is made for {'SDXL' if 'clip_l' in parts else 'SD 1.x/2.x'}, "
                         f"and the model is {'SDXL' if 'clip_l' in widths else 'SD 1.x/2.x'}")
    for part, rows in parts.items():
        if rows.shape[-1] != widths[part]:
            raise MorphError(f"embeddings: {path!r} has {rows.shape[-1]} channels, and the model's text encoder "
                             f"{widths[part]}; it was made for another model")


def text_widths(model: str | None) -> dict[str, int]:
    """The channels of the text encoder(s) of `model`, by embedding part ("" for SD 1.x/2.x; clip_l and clip_g for
    SDXL), from its configs alone (None: Stable Diffusion 1.x's)."""
    if model is None:
        from .clip_bpe import TEXT_WIDTH

        return {"": TEXT_WIDTH}
    if model.split("-")[0] == "tiny":
        from .tiny import BUILT_IN

        pipe = BUILT_IN[model]()  # tiny: built in code in a moment
        encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if getattr(pipe, "text_encoder_2", None) else [])
        widths = [e.config.hidden_size for e in encoders]
    else:
        widths = [json.loads(Path(f).read_text())["hidden_size"] for f in _text_encoder_configs(_location(model))]
    return dict(zip(["clip_l", "clip_g"], widths)) if len(widths) == 2 else {"": widths[0]}


def own_side(model: str, configs_from: str | None = None) -> int | None:
    """The side, in pixels, of what `model` renders when a config sets no size (its UNet's sample size times its
    VAE's scale; square in every family), from its configs alone: a diffusers folder's or a cached hub model's, a
    single file's from configs_from or the hub model diffusers describes its family with. None where they are not
    on disk, or where a pickle checkpoint hides its family."""
    if model.split("-")[0] == "tiny":
        from .tiny import BUILT_IN

        pipe = BUILT_IN[model]() if model in BUILT_IN else None  # tiny: built in code in a moment
        return pipe.unet.config.sample_size * pipe.vae_scale_factor if pipe else None
    location = configs_from or (_family_configs(model) if is_single_file(model) else _location(model))
    if location is None or (looks_like_folder(location) and not Path(location).is_dir()):
        return None
    found = _config_files(location, ["unet/config.json", "vae/config.json"])
    if len(found) < 2:
        return None
    try:
        unet, vae = (json.loads(Path(f).read_text()) for f in found)
        side, levels = unet["sample_size"], len(vae["block_out_channels"])
    except (OSError, ValueError, KeyError, TypeError):  # not JSON, or not a UNet's and a VAE's: no side known
        return None
    return side * 2 ** (levels - 1) if type(side) is int and side > 0 and levels > 0 else None  # a [h, w] has no side


def unet_config(model: str, configs_from: str | None = None) -> dict | None:
    """The UNet's config of `model` from its configs alone, found as own_side finds them; None where they are not on
    disk."""
    if model.split("-")[0] == "tiny":
        from .tiny import BUILT_IN

        return dict(BUILT_IN[model]().unet.config) if model in BUILT_IN else None  # tiny: built in code in a moment
    location = configs_from or (_family_configs(model) if is_single_file(model) else _location(model))
    if location is None or (looks_like_folder(location) and not Path(location).is_dir()):
        return None
    found = _config_files(location, ["unet/config.json"])
    try:
        return json.loads(Path(found[0]).read_text()) if found else None
    except (OSError, ValueError):
        return None


def _family_configs(path: str) -> str | None:
    """The hub model whose configs diffusers loads a single-file checkpoint with, from the checkpoint's tensor
    names and shapes (its header; as meta tensors, nothing read)."""
    if not path.lower().endswith(".safetensors"):
        return None
    from diffusers.loaders.single_file_utils import fetch_diffusers_config

    shapes = tensor_shapes("model", path)
    return fetch_diffusers_config({name: torch.empty(shape, device="meta") for name, shape in shapes.items()}
                                  )["pretrained_model_name_or_path"]


def _config_files(location: str, names: list[str]) -> list[str]:
    """Those of the files `names` (unet/config.json, ...) that a local folder or a cached hub model has on disk."""
    if Path(location).is_dir():
        return [str(Path(location) / n) for n in names if (Path(location) / n).is_file()]
    from huggingface_hub import try_to_load_from_cache

    return [f for f in (try_to_load_from_cache(location, n) for n in names) if isinstance(f, str)]


def _text_encoder_configs(location: str) -> list[str]:
    """The text_encoder(_2)/config.json files of a local folder or a cached hub model."""
    found = _config_files(location, [f"{sub}/config.json" for sub in ("text_encoder", "text_encoder_2")])
    if not found:
        raise MorphError(f"model: {location!r} has no text_encoder/config.json here, so an embedding's width cannot "
                         "be checked; download the model's configs, or leave out --model")
    return found


def load_embedding(pipe, embedding) -> None:
    """Load one `embeddings:` entry (a path, or {path, token}) into the tokenizer(s) and text encoder(s)."""
    path, token = (embedding, None) if isinstance(embedding, str) else (embedding["path"], embedding.get("token"))
    token, parts = read_embedding(path, token)
    xl = getattr(pipe, "text_encoder_2", None) is not None
    targets = [(parts.get("clip_l"), pipe.text_encoder, pipe.tokenizer),
               (parts.get("clip_g"), pipe.text_encoder_2, pipe.tokenizer_2)] if xl else \
        [(parts.get(""), pipe.text_encoder, pipe.tokenizer)]
    check_embedding_fits(path, parts, dict(zip(["clip_l", "clip_g"] if xl else [""],
                                               (encoder.config.hidden_size for _, encoder, _ in targets))))
    for rows, encoder, tokenizer in targets:
        try:
            pipe.load_textual_inversion(rows.to(encoder.dtype), token=token, text_encoder=encoder, tokenizer=tokenizer)
        except ValueError as e:
            raise MorphError(f"embeddings: {path!r}: {str(e).splitlines()[0]}") from None
