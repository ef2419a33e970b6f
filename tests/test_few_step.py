"""Few-step rendering: scheduler options from the config, and no classifier-free guidance at guidance_scale <= 1."""

import pytest
from click.testing import CliRunner

from morph.cli import cli
from morph.config.yaml_file import load_config
from morph.job import prepare_job, run_job
from morph.models.scheduler import try_scheduler


def test_scheduler_options_reach_the_scheduler_the_keys_and_the_manifest(write_config):
    plain = run_job(load_config(write_config(name="plain", frames=2, scheduler="DDIMScheduler")), quiet=True)
    config = load_config(write_config(name="trailing", frames=2,
                                      scheduler={"name": "DDIMScheduler", "timestep_spacing": "trailing"}))
    job = prepare_job(config)
    assert job.loaded.pipe.scheduler.config.timestep_spacing == "trailing"
    manifest = run_job(config, quiet=True)
    assert manifest["scheduler"] == "DDIMScheduler" and manifest["scheduler_options"] == {"timestep_spacing": "trailing"}
    assert plain["scheduler_options"] == {} and plain["config"]["scheduler"] == "DDIMScheduler"  # written as it was
    assert manifest["config_hash"] != plain["config_hash"]


@pytest.mark.parametrize("guidance, rows", [(1.0, 2), (0.0, 2), (7.5, 4)])
def test_guidance_of_one_or_less_runs_the_unet_once_per_frame_not_on_a_doubled_batch(write_config, guidance, rows):
    job = prepare_job(load_config(write_config(frames=2, batch_size=2, guidance_scale=guidance)))
    unet, seen = job.loaded.pipe.unet, []
    forward = unet.forward
    unet.forward = lambda sample, *args, **kwargs: seen.append(sample.shape[0]) or forward(sample, *args, **kwargs)
    list(job.frames([0, 1]))
    assert seen and set(seen) == {rows}


def test_a_scheduler_whose_package_is_missing_is_refused_naming_it(write_config, monkeypatch):
    import diffusers
    from diffusers.utils.import_utils import DummyObject

    class Placeholder(metaclass=DummyObject):  # what diffusers exports for LMSDiscreteScheduler without scipy
        _backends = ["torch", "scipy"]

    monkeypatch.setattr(diffusers, "LMSDiscreteScheduler", Placeholder)
    result = CliRunner().invoke(cli, ["run", str(write_config(scheduler="LMSDiscreteScheduler")), "--quiet"])
    assert result.exit_code == 2
    assert result.output.strip() == ("Error: scheduler: LMSDiscreteScheduler needs scipy, which is not installed here: "
                                     "pip install scipy")


@pytest.mark.parametrize("scheduler", ["DPMSolverMultistepScheduler", "EulerDiscreteScheduler", "DDIMScheduler",
                                       "EulerAncestralDiscreteScheduler", "PNDMScheduler", "UniPCMultistepScheduler",
                                       "HeunDiscreteScheduler", "LCMScheduler", "TCDScheduler"])
@pytest.mark.parametrize("steps", [1, 2, 4, 50])
def test_the_schedulers_stable_diffusion_renders_with_pass_their_trial_at_any_usual_step_count(scheduler, steps):
    """The trial before the model loads refuses only what the render would fail on: never these."""
    import diffusers

    try_scheduler(getattr(diffusers, scheduler), {}, steps)
