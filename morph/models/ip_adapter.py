"""An IP-Adapter with a strength per frame: its reference images embedded once, its UNet layers built once and put
in place only around each batch's denoising loop.

diffusers runs an IP-Adapter at one scale per call (`set_ip_adapter_scale`), the same for every sample. Attention is
linear in its values, softmax(q k^T)(s v) = s softmax(q k^T) v, so morph scales the adapter's value projection
(`to_v_ip`) per row instead: each frame of a batch attends to its own reference at its own strength, and strength
0 adds exactly nothing.
"""

from contextlib import contextmanager

import torch

from ..errors import MorphError
from .ip_adapter_files import IpAdapterFiles
from .ip_rows import scaled_rows


class RowScaledValues(torch.nn.Module):
    """An IP-Adapter's value projection whose output is scaled per row: base(x) [R, images, tokens, C] times
    scale [R]."""

    def __init__(self, base: torch.nn.Linear):
        super().__init__()
        self.base = base
        self.scale: torch.Tensor | None = None  # [R], set for each UNet call (AdapterLayers.scale_rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scaled_rows(self.base(x), self.scale)


class AdapterLayers:
    """The UNet side of an IP-Adapter: its attention processors (on the cross-attention layers) and its image
    projection, kept out of the UNet between batches so that the pipeline stays as it was loaded."""

    def __init__(self, processors: dict, projection: torch.nn.Module):
        self.processors, self.projection = processors, projection
        self.values = [values for processor in processors.values() for values in processor.to_v_ip]

    @contextmanager
    def installed(self, unet):
        """The adapter in `unet` inside the context (its image embeddings come as added_cond_kwargs["image_embeds"],
        its rows' strengths through `scale_rows`), and the UNet as it was after it."""
        with restored(unet):
            unet.set_attn_processor({**unet.attn_processors, **self.processors})
            unet.encoder_hid_proj, unet.config.encoder_hid_dim_type = self.projection, "ip_image_proj"
            try:
                yield
            finally:
                self.scale_rows(None)

    def scale_rows(self, scale: torch.Tensor | None) -> None:
        """Run each UNet row at its own strength, scale [R], from now on (None: none set)."""
        for values in self.values:
            values.scale = scale


@contextmanager
def restored(unet):
    """`unet`'s attention processors and image projection as they were before the context, however it ends."""
    own, projection, kind = unet.attn_processors, unet.encoder_hid_proj, unet.config.encoder_hid_dim_type
    try:
        yield
    finally:
        unet.set_attn_processor(own)
        unet.encoder_hid_proj, unet.config.encoder_hid_dim_type = projection, kind


def load_adapter(pipe, files: IpAdapterFiles) -> AdapterLayers:
    """The adapter's UNet layers, built by diffusers from its file and then taken out of the UNet again. This is
    load_ip_adapter's UNet half (unet._load_ip_adapter_weights): the public call, even with image_encoder_folder=None,
    would also register a feature extractor on the pipeline (SDXL) and log a warning."""
    from safetensors import safe_open

    unet = pipe.unet
    if files.cross_width != unet.config.cross_attention_dim:
        raise MorphError(f"ip_adapter.path: {files.adapter!r} was made for a UNet whose cross-attention reads "
                         f"{files.cross_width} channels, and the model's reads {unet.config.cross_attention_dim}; use "
                         "an IP-Adapter made for the model's family")
    state = {"image_proj": {}, "ip_adapter": {}}
    with safe_open(files.adapter, framework="pt", device="cpu") as f:
        for key in f.keys():
            part, _, name = key.partition(".")
            if part in state:
                state[part][name] = f.get_tensor(key)
    with restored(unet):  # a failure half way (after its processors are set) leaves the UNet as it was too
        try:
            unet._load_ip_adapter_weights([state], low_cpu_mem_usage=False)
        except (KeyError, RuntimeError) as e:  # a layer's weights missing, or of another shape: made for another UNet
            raise MorphError(f"ip_adapter.path: {files.adapter!r} does not fit the model's UNet "
                             f"({str(e).splitlines()[0][:150]}); use an IP-Adapter made for this model") from None
        processors = {name: p for name, p in unet.attn_processors.items() if hasattr(p, "to_v_ip")}
        built = unet.encoder_hid_proj
    for processor in processors.values():  # the strength is each row's own (processor.scale stays diffusers' 1.0)
        processor.to_v_ip = torch.nn.ModuleList(RowScaledValues(values) for values in processor.to_v_ip)
    return AdapterLayers(processors, built)


@torch.no_grad()
def embed_images(pipe, encoder_folder: str, images: list) -> torch.Tensor:
    """Image embeddings [n, E] (float32, on the CPU, as the path keeps what walks) of RGB PIL images by the CLIP image
    encoder in `encoder_folder`, preprocessed as diffusers' load_ip_adapter sets it up; the encoder is let go after."""
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    encoder = CLIPVisionModelWithProjection.from_pretrained(encoder_folder, local_files_only=True,
                                                            use_safetensors=True, dtype=pipe.unet.dtype)
    encoder = encoder.to(pipe.device).eval()
    size = encoder.config.image_size
    pixels = CLIPImageProcessor(size=size, crop_size=size)(images, return_tensors="pt").pixel_values
    return encoder(pixels.to(pipe.device, encoder.dtype)).image_embeds.float().cpu()
