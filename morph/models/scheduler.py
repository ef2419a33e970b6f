"""The scheduler a config names: its class, its options, and a trial of both at the job's step count, all before
any model loads (diffusers checks many values only once it is stepping, deep inside a render)."""

import inspect
import warnings

from ..errors import MorphError, did_you_mean

# What people render Stable Diffusion 1.x, 2.x and XL with (the few-step one last); every family takes each of them
SD_SCHEDULERS = ("DPMSolverMultistepScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
                 "DDIMScheduler", "PNDMScheduler", "UniPCMultistepScheduler", "LCMScheduler")


def _meant(name: str, known: list[str]) -> str:
    """'did you mean X? ' for a scheduler name written another way ('EulerDiscrete', 'ddimscheduler') or misspelt;
    close names among the Stable Diffusion ones first."""
    normal = lambda n: n.lower().removesuffix("scheduler")  # noqa: E731
    exact = {normal(n): n for n in known}.get(normal(name))
    if exact:
        return f"did you mean {exact}? "
    return did_you_mean(name, SD_SCHEDULERS, normal=normal) or did_you_mean(name, known, normal=normal)


def scheduler_options(cls, options: dict) -> list[str]:
    """The options a config sets on the scheduler `cls` are keys of its config (its constructor's arguments);
    returns those keys."""
    allowed = sorted(set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"})
    for key in options:
        if key not in allowed:
            raise MorphError(f"scheduler.{key}: not an option of {cls.__name__}; {did_you_mean(key, allowed)}its "
                             f"options are {', '.join(allowed)}")
    return allowed


def scheduler_class(name: str):
    """The diffusers scheduler class called `name`, checked before any model loads; a wrong name gets the close
    names and the ones used with Stable Diffusion."""
    import diffusers

    cls = getattr(diffusers, name, None)
    if isinstance(cls, type) and not issubclass(cls, diffusers.SchedulerMixin) and getattr(cls, "_backends", None):
        # diffusers' placeholder for a scheduler whose package is missing: the packages it names, torch aside
        missing = [package for package in cls._backends if package != "torch"]
        raise MorphError(f"scheduler: {name} needs {' and '.join(missing)}, which is not installed here: "
                         f"pip install {' '.join(missing)}")
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        known = [n for n in dir(diffusers) if n.endswith("Scheduler") and n != "SchedulerMixin"]
        raise MorphError(f"scheduler: {name!r} is not a diffusers scheduler; {_meant(name, known)}Stable Diffusion "
                         f"renders with e.g. {', '.join(SD_SCHEDULERS)}")
    return cls


# The noise schedule every Stable Diffusion 1.x, 2.x and XL model's scheduler config shares: a swapped scheduler
# starts from the model's config (pipeline.load_model), so its trial starts from these
STABLE_DIFFUSION = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                    "beta_schedule": "scaled_linear", "steps_offset": 1, "skip_prk_steps": True,
                    "set_alpha_to_one": False, "clip_sample": False}


def try_scheduler(cls, options: dict, steps: int, key: str = "num_inference_steps") -> None:
    """Make the scheduler `cls` with `options` over Stable Diffusion's schedule, set `steps` timesteps and take its
    first step on a small zero latent; what diffusers refuses (a value, a step count) is refused in one line, which
    names the step count `key`."""
    import torch

    allowed = scheduler_options(cls, options)
    sample = torch.zeros(1, 4, 8, 8)
    try:
        with warnings.catch_warnings():  # deprecation notes of the scheduler's own; refusals are exceptions
            warnings.simplefilter("ignore")
            scheduler = cls(**{k: v for k, v in STABLE_DIFFUSION.items() if k in allowed} | options)
            scheduler.set_timesteps(steps)
            t = scheduler.timesteps[0]
            scheduler.step(sample, t, scheduler.scale_model_input(sample, t))
    except (ValueError, TypeError, KeyError, IndexError, NotImplementedError, RuntimeError, AssertionError) as e:
        said = " ".join(str(e).split())[:300] or type(e).__name__
        given = "".join(f", {k}: {v}" for k, v in options.items())
        raise MorphError(f"scheduler: {cls.__name__} cannot render {key}: {steps}{given}; "
                         f"diffusers says: {said}") from None
