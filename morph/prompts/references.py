"""What walks along for an IP-Adapter: each keyframe's reference embedded once, and its strength."""

from pathlib import Path

import torch

from ..config.jobs import JobConfig
from ..files import file_digest
from ..media.picture import read_picture
from ..models.ip_adapter import embed_images
from ..models.ip_adapter_files import ip_adapter_files


def walk_references(config: JobConfig, pipe) -> tuple[dict, dict]:
    """A job's IP-Adapter references (none without ip_adapter:): the path's along entries, "ip_embeds" [K, 1, E]
    (slerped between keyframes) and "ip_scale" [K] (linear), and its labels: each keyframe's reference by content
    and its strength. A keyframe without a reference takes the embedding of the nearest one before it (else after
    it) at strength 0, so the walk fades that reference out."""
    files = ip_adapter_files(config)
    if files is None:
        return {}, {}
    references = borrowed(files.references)
    distinct = sorted(set(references))
    where = {r: f"prompts[{files.references.index(r)}].reference" for r in distinct}
    embedded = embed_images(pipe, files.image_encoder, [read_picture(r, config.limits.max_image_pixels, where[r])
                                                         for r in distinct])
    embeds = torch.stack([embedded[distinct.index(r)] for r in references])[:, None]
    scales = config.keyframe_ip_scales()
    return ({"ip_embeds": embeds, "ip_scale": torch.tensor(scales, dtype=torch.float64)},
            {"references": [file_digest(Path(r)) for r in references], "ip_adapter_scales": scales})


def borrowed(references: list[str | None]) -> list[str]:
    """Each keyframe's reference, or where it has none the nearest one before it (else after it)."""
    before = [next((r for r in reversed(references[:k + 1]) if r), None) for k in range(len(references))]
    return [found or next(r for r in references[k:] if r) for k, found in enumerate(before)]
