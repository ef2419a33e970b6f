"""ControlNets loaded beside a pipeline (controlnet_files.ControlNetFile), each checked against the loaded UNet's
family first."""

import torch

from ..errors import MorphError
from .controlnet_files import ControlNetFile, check_fits, family_of_config
from .pipeline import _from_pretrained


def load_controlnet(pipe, model: str, where: str, controlnet: ControlNetFile):
    """The ControlNet's diffusers ControlNetModel on the pipeline's device, in its UNet's dtype. A single file has no
    config: it takes the model's UNet's, as ControlNetModel.from_unet makes one (diffusers' layout or the original
    control_model. one)."""
    from diffusers import ControlNetModel

    check_fits(where, controlnet, model, family_of_config(pipe.unet.config))
    if controlnet.single_file:
        from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint
        from safetensors.torch import load_file

        with torch.device("meta"):  # no storage: the file's tensors are assigned
            net = ControlNetModel.from_unet(pipe.unet, load_weights_from_unet=False)
        try:
            state = convert_controlnet_checkpoint(load_file(controlnet.location), dict(net.config))
            net.load_state_dict({k: v.to(pipe.unet.dtype) for k, v in state.items()}, assign=True)
        except (RuntimeError, KeyError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise MorphError(f"{where}: {controlnet.location!r} cannot be loaded as a ControlNet of model {model!r} "
                             f"({first[:200]})") from None
    else:
        net = _from_pretrained(ControlNetModel.from_pretrained, controlnet.location, where,
                               torch_dtype=pipe.unet.dtype, use_safetensors=True)
    return net.to(pipe.device).eval()  # in the UNet's dtype already (a cast by .to would warn)
