"""Image keyframes, checked with the config before any model loads: each picture readable within the limits, and
a scheduler that DDIM inversion can run backwards. No torch."""

from ..errors import MorphError
from ..media.picture import read_picture

# the walk renders with the inversion's own scheduler, run forwards (deterministic: eta 0); DDIMInverseScheduler
# spaces its timesteps only these ways
INVERTIBLE = "DDIMScheduler"
INVERTIBLE_SPACING = ("leading", "trailing")


def check_image_keyframes(config) -> None:
    """Every keyframe image of the walk `config` is a picture morph reads, and its scheduler can be inverted;
    `inversion:` only where some keyframe has an image."""
    images = config.keyframe_images()
    if not images:
        if config.inversion is not None:
            raise MorphError("inversion: says how keyframe images are inverted, and no keyframe has an image:; "
                             "remove it, or give a keyframe one")
        return
    first = f"prompts[{images[0][0]}].image"
    if config.scheduler is not None and config.scheduler.name != INVERTIBLE:
        raise MorphError(f"{first}: DDIM inversion needs the walk to render with {INVERTIBLE} (eta 0), and "
                         f"scheduler: {config.scheduler.name} cannot be inverted; use scheduler: {INVERTIBLE}, or "
                         "leave scheduler out (image keyframes then render with DDIM)")
    options = config.scheduler_choice()[1]
    if options.get("timestep_spacing", "leading") not in INVERTIBLE_SPACING or options.get("thresholding"):
        raise MorphError(f"{first}: DDIM inversion runs only {INVERTIBLE} without thresholding and with "
                         f"timestep_spacing {' or '.join(INVERTIBLE_SPACING)}; change the scheduler's options")
    for index, path, _ in images:
        read_picture(path, config.limits.max_image_pixels, f"prompts[{index}].image")
