"""IP-Adapter references as a batch.Mechanism: each frame's UNet rows attend to its own reference embedding (walked
along the path: "ip_embeds", "ip_scale") at its own strength.

diffusers' pipelines repeat `ip_adapter_image_embeds` batch-size times (diffusers issue #9813: B rows given become
B x B, and the attention then reshapes them into rows that mix every frame's reference, without an error). So the
pipeline is given none: the UNet gets each call's rows in added_cond_kwargs["image_embeds"] directly, one per row,
the unconditional half's zeros first under guidance (as diffusers makes them for a plain IP-Adapter).
"""

from contextlib import contextmanager

import torch

from ..config.jobs import JobConfig
from ..errors import MorphError
from ..models.ip_adapter import load_adapter
from ..models.ip_adapter_files import IpAdapterFiles, ip_adapter_files
from ..models.ip_rows import guided_rows
from .batch import Mechanism, RenderSettings, on_device, replaced_forward
from .store import content_digest


class ReferenceImages(Mechanism):
    """The IP-Adapter of a job whose keyframes give reference images."""

    name = "ip_adapter"

    def __init__(self, pipe, files: IpAdapterFiles):
        self.files, self.layers = files, load_adapter(pipe, files)

    @classmethod
    def of(cls, config: JobConfig, loaded, path) -> "ReferenceImages | None":
        """The job's IP-Adapter loaded for `loaded`'s pipeline, or None for a job without ip_adapter:."""
        files = ip_adapter_files(config)
        return cls(loaded.pipe, files) if files else None

    def identity(self) -> dict:
        # the references and their strengths walk: each frame's key holds its two keyframes' (store.frame_identity)
        return {"adapter": content_digest(self.files.adapter, None),
                "image_encoder": content_digest(self.files.image_encoder, None)}

    @contextmanager
    def during(self, pipe, conds, walking: dict, settings: RenderSettings):
        embeds, scale = on_device(pipe, walking["ip_embeds"]), on_device(pipe, walking["ip_scale"])
        unet = pipe.unet
        forward = unet.forward  # per-frame guidance's, where it is in place

        def with_references(sample, *args, **kwargs):
            guided = sample.shape[0] == 2 * len(embeds)
            if not guided and sample.shape[0] != len(embeds):
                raise MorphError(f"ip_adapter: the UNet was called on {sample.shape[0]} rows for {len(embeds)} frames; "
                                 "morph cannot tell which reference each row takes")
            self.layers.scale_rows(guided_rows(scale, scale, guided))
            added = {**(kwargs.get("added_cond_kwargs") or {}),
                     "image_embeds": [guided_rows(torch.zeros_like(embeds), embeds, guided)]}
            return forward(sample, *args, **{**kwargs, "added_cond_kwargs": added})

        with self.layers.installed(unet), replaced_forward(unet, with_references):
            yield {}
