"""batch_size: auto, channels_last and compile: true (on the CPU; tests/test_gpu.py repeats them on CUDA)."""

import pytest
import torch

from morph.models.acceleration import CPU_BATCH_SIZE, SATURATION_PIXELS, auto_batch_size, plan_batch_size
from morph.config.yaml_file import load_config
from morph.golden import PRESETS
from morph.job import prepare_job, run_job
from morph.render.store import FrameStore
from morph.analysis.metrics import compare
from morph.media.video import read_png

GIB = 1024**3


def test_plan_fits_the_measured_memory_per_frame():
    # 1 GiB per frame on top of 2 GiB: 40 GiB free * 0.85 headroom leaves room for 32 frames at 128 px
    peak = {1: 3 * GIB, 2: 4 * GIB}.__getitem__
    assert plan_batch_size(40 * GIB, peak, 128, 128) == 32
    assert plan_batch_size(6 * GIB, peak, 128, 128) == 3


def test_plan_stops_where_throughput_stops_growing():
    peak = {1: 100, 2: 101}.__getitem__  # memory is no limit
    assert plan_batch_size(80 * GIB, peak, 512, 512) == SATURATION_PIXELS // (512 * 512) == 16
    assert plan_batch_size(80 * GIB, peak, 1024, 1024) == 4
    assert plan_batch_size(80 * GIB, peak, 4096, 4096) == 1


def test_plan_never_goes_below_one_frame():
    assert plan_batch_size(1 * GIB, {1: 3 * GIB, 2: 5 * GIB}.__getitem__, 512, 512) == 1


def test_auto_off_cuda_is_the_cpu_default_without_probing():
    def probe(batch):
        raise AssertionError("no probe renders off CUDA")

    assert auto_batch_size(torch.device("cpu"), probe, 64, 64) == CPU_BATCH_SIZE


def test_auto_batch_size_run_records_the_resolved_size(write_config):
    manifest = run_job(load_config(write_config(frames=5, batch_size="auto")), quiet=True)
    assert manifest["config"]["batch_size"] == "auto" and manifest["batch_size"] == CPU_BATCH_SIZE
    assert manifest["memory_format"] == "contiguous" and manifest["compiled"] is False  # channels_last: CUDA only


def test_compile_stays_within_tolerance_and_never_recompiles(write_config, tmp_path):
    """6 frames at batch 4: the second batch is padded to 4, so the compiled graphs see one shape only."""
    eager = load_config(write_config(name="eager", num_inference_steps=2))
    run_job(eager, quiet=True)
    compiled = load_config(write_config(name="compiled", num_inference_steps=2, compile=True))
    torch._dynamo.reset()  # graphs another test compiled for other weights would count as recompiles
    with torch._dynamo.config.patch(error_on_recompile=True):  # monkeypatch's undo would delete the setting
        manifest = run_job(compiled, quiet=True)
    assert manifest["compiled"] is True and manifest["timings"]["first_batch_s"] > 0
    for i in range(6):
        a, b = (torch.from_numpy(read_png(c.output_dir / "frames" / f"{i:05d}.png")) for c in (eager, compiled))
        assert PRESETS["cross-device"].passes(compare(a, b)), i


@pytest.mark.parametrize("value", ["fast", 0, -2, 1.5])
def test_bad_batch_sizes_are_refused(write_config, value):
    from morph.errors import MorphError

    with pytest.raises(MorphError, match="batch_size"):
        load_config(write_config(batch_size=value))


def test_a_prompt_edit_keeps_the_batch_size_auto_chose(write_config):
    """Memory does not depend on the prompts: probing again could pick another size and re-key every frame."""
    config = load_config(write_config(frames=6, batch_size="auto", prompts=["a cat", "a dog", "a red circle"]))
    run_job(config, quiet=True)
    store = FrameStore(config.output_dir)
    store.save_plan({**store.plan(), "batch_size": 2})  # as if a GPU had chosen 2
    edited = load_config(write_config(frames=6, batch_size="auto", prompts=["a cat", "a dog", "a blue square"]))
    assert run_job(edited, quiet=True)["batch_size"] == 2
    bigger = load_config(write_config(frames=6, batch_size="auto", height=128, prompts=["a cat", "a dog"]))
    assert run_job(bigger, quiet=True)["batch_size"] == CPU_BATCH_SIZE  # a new size: probed again


def test_every_process_renders_at_the_batch_size_they_agree_on(write_config):
    job = prepare_job(load_config(write_config(frames=6, batch_size="auto")), agree=lambda mine: 3)
    assert job.renderer.batch_size == 3
