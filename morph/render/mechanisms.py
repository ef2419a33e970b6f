"""The UNet-side capabilities a job asks for (batch.Mechanism): each lives in its own module; this is the one list
of them, in the order they act on a batch."""

from ..config.jobs import JobConfig
from .attention import attention_interpolation
from .batch import Mechanism
from .controlnet import controlnets
from .hires import HiresPass
from .image_keyframes import image_keyframes
from .ip_adapter import ReferenceImages


def unet_mechanisms(config: JobConfig, loaded, path) -> tuple[Mechanism, ...]:
    """The mechanisms of a job whose model is `loaded` (pipeline.LoadedModel) and whose frames walk along `path`:
    none for a job that asks for none, so its keys and pixels stay what they were."""
    made = (image_keyframes(config, loaded, path), attention_interpolation(config, path),
            controlnets(config, loaded, path), ReferenceImages.of(config, loaded, path),
            HiresPass(config.hires, config.seed) if config.hires else None)
    return tuple(mechanism for mechanism in made if mechanism is not None)
