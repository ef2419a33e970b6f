"""ControlNets hold a composition while the prompt walks: around each UNet call of the first pass, each ControlNet runs
on the same inputs and its residuals, scaled per row, are added to the UNet's (one batch.Mechanism). A second pass (a
hires pass's img2img) runs without them: the composition is held in the base frames it starts from.

diffusers takes one controlnet_conditioning_scale per ControlNet per call; here each row of the batch takes its own
frame's strength (walking between keyframes through the path's `along`, as LoRA strengths do), over both halves of
classifier-free guidance. A ControlNet acts during the steps diffusers' control_guidance_start/end give it; one whose
strength is 0 in every row is not run at all, so a job at strength 0 renders exactly the model without it.
"""

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config.jobs import JobConfig
from ..models.controlnet import load_controlnet
from ..models.controlnet_files import read_controlnet
from .batch import Mechanism, RenderSettings, replaced_forward
from .control_image import control_image
from .controlnet_math import acts, scaled
from .store import content_digest, file_digest


@dataclass
class Control:
    """One ControlNet of a job: its model, its config entry, and its weights' digest."""

    net: torch.nn.Module
    spec: object  # config.controlnets.ControlNetSpec
    name: str
    weights: str


class ControlNets(Mechanism):
    """The job's ControlNets; per row, their strengths from `walking["controlnets"]` [B, m] (else the top level's)."""

    name = "controlnets"

    def __init__(self, controls: list[Control], scales: list[float], walking: bool):
        self.controls, self.scales = controls, torch.tensor(scales, dtype=torch.float64)
        self.walking = walking  # the strengths walk with the path: each frame's record keys its own
        self._images = {}  # (ControlNet, height, width) -> its control image on the device

    def identity(self) -> dict:
        """Each ControlNet by name: its weights' and its image's content, and its settings (its strength too where
        the frames' records do not hold it: a grid's)."""
        return {c.name: {"weights": c.weights, "image": file_digest(Path(c.spec.image)),
                         **({} if self.walking else {"scale": c.spec.scale}),
                         "start": c.spec.start, "end": c.spec.end, "preprocess": c.spec.preprocess,
                         **({"low": c.spec.low, "high": c.spec.high} if c.spec.preprocess == "canny" else {})}
                for c in self.controls}

    def denoise(self, pipe, first_pass, conds, negative, walking, settings: RenderSettings, guidance_scale=None,
                float32_vae=None):
        """The first pass with the ControlNets on the UNet, and only it: a pass after it (hires) runs without."""
        rows = walking.get("controlnets", self.scales.expand(conds.shape[0], -1))  # [B', m]
        active = [(i, c) for i, c in enumerate(self.controls) if bool((rows[:, i] != 0).any())]
        with self._controlled(pipe, rows, active, settings) if active else nullcontext():
            return first_pass()

    @contextmanager
    def _controlled(self, pipe, rows: torch.Tensor, active: list, settings: RenderSettings):
        forward, calls = pipe.unet.forward, [0]  # the steps of this pass alone
        images = [self._image(pipe, i, c, settings) for i, c in active]

        def controlled(sample, timestep, *args, **kwargs):
            step, steps = calls[0], len(pipe.scheduler.timesteps)  # one UNet call per timestep, as diffusers counts
            calls[0] += 1
            halves = sample.shape[0] // rows.shape[0]  # 2 under classifier-free guidance: [uncond, cond]
            down = mid = None
            for (i, control), image in zip(active, images):
                if not acts(step, steps, control.spec.start, control.spec.end):
                    continue
                own_down, own_mid = control.net(
                    sample, timestep, encoder_hidden_states=kwargs["encoder_hidden_states"],
                    controlnet_cond=image.expand(sample.shape[0], -1, -1, -1), conditioning_scale=1.0,
                    added_cond_kwargs=kwargs.get("added_cond_kwargs"), return_dict=False)
                weights = rows[:, i].repeat(halves).to(sample.device, torch.float32)
                own = scaled([*own_down, own_mid], weights)
                # summed in the model's dtype, as diffusers' MultiControlNetModel sums them
                down, mid = (own[:-1], own[-1]) if down is None else \
                    ([a + b for a, b in zip(down, own[:-1])], mid + own[-1])
            if down is not None:
                kwargs.update(down_block_additional_residuals=down, mid_block_additional_residual=mid)
            return forward(sample, timestep, *args, **kwargs)

        with replaced_forward(pipe.unet, controlled):
            yield

    def _image(self, pipe, i: int, control: Control, settings: RenderSettings) -> torch.Tensor:
        """Its control image [1, 3, H, W] at the batch's size, on the device in the UNet's dtype; made once per size."""
        key = (i, settings.height, settings.width)
        if key not in self._images:
            spec = control.spec
            self._images[key] = control_image(spec.image, settings.width, settings.height, spec.preprocess, spec.low,
                                              spec.high).to(pipe.device, pipe.unet.dtype)
        return self._images[key]


def controlnets(config: JobConfig, loaded, path) -> ControlNets | None:
    """The job's ControlNets, loaded beside `loaded` (pipeline.LoadedModel); None without any."""
    if not config.controlnets:
        return None
    controls = []
    for i, (name, spec) in enumerate(zip(config.controlnet_names(), config.controlnets)):
        where = f"controlnets[{i}]"
        file = read_controlnet(where, name, spec.path)
        controls.append(Control(load_controlnet(loaded.pipe, config.model, where, file), spec, name,
                                content_digest(file.location, file.location)))
    return ControlNets(controls, [spec.scale for spec in config.controlnets], "controlnets" in getattr(path, "along", {}))
