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
    assert plan_batch_size(40 * GIB, 3 * GIB, 4 * GIB, 128, 128) == 32
    assert plan_batch_size(6 * GIB, 3 * GIB, 4 * GIB, 128, 128) == 3


def test_plan_stops_where_throughput_stops_growing():
    # memory is no limit
    assert plan_batch_size(80 * GIB, 100, 101, 512, 512) == SATURATION_PIXELS // (512 * 512) == 16
    assert plan_batch_size(80 * GIB, 100, 101, 1024, 1024) == 4
    assert plan_batch_size(80 * GIB, 100, 101, 4096, 4096) == 1


def test_plan_never_goes_below_one_frame():
    assert plan_batch_size(1 * GIB, 3 * GIB, 5 * GIB, 512, 512) == 1


class FakeGpu:
    """torch.cuda's memory calls over a model of a GPU: a render of b frames reserves `fixed + b * per_frame` while it
    runs (and allocates a quarter less: the allocator reserves whole segments); the first render also keeps `kept`
    for good (SDXL's float32 VAE copy, cuBLAS's workspace), and `oom_at` frames run out of memory."""

    def __init__(self, monkeypatch, total, kept, fixed, per_frame, oom_at=None):
        self.total, self.kept, self.fixed, self.per_frame, self.oom_at = total, kept, fixed, per_frame, oom_at
        self.held = self.peak = 0
        for name in ("synchronize", "empty_cache", "reset_peak_memory_stats", "memory_reserved", "max_memory_reserved",
                     "memory_allocated", "max_memory_allocated", "mem_get_info"):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))

    def render(self, batch):
        if self.oom_at is not None and batch >= self.oom_at:
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        self.held = self.kept
        self.peak = max(self.peak, self.held + self.fixed + batch * self.per_frame)

    def synchronize(self, device=None):
        pass

    def empty_cache(self):
        pass

    def reset_peak_memory_stats(self, device=None):
        self.peak = self.held

    def memory_reserved(self, device=None):
        return self.held

    def max_memory_reserved(self, device=None):
        return self.peak

    def memory_allocated(self, device=None):
        return self.held * 3 // 4

    def max_memory_allocated(self, device=None):
        return self.peak * 3 // 4

    def mem_get_info(self, device=None):
        return self.total - self.held, self.total


def test_auto_measures_after_what_the_first_render_keeps_and_plans_with_reserved_memory(monkeypatch):
    """SDXL in float16 makes its float32 VAE copy in the first probe: measured inside a probe it would pass for frames'
    memory (and free memory read before it would still count it as free), and the batch would be far too large."""
    gpu = FakeGpu(monkeypatch, total=80 * GIB, kept=2 * GIB, fixed=1 * GIB, per_frame=1 * GIB)
    # free after the first render: 78 GiB; 78 * 0.85 - 1 fixed = 65.3 GiB of frames, reserved at 1 GiB each
    assert auto_batch_size(torch.device("cuda"), gpu.render, 64, 64) == 65


@pytest.mark.parametrize("oom_at", [1, 2])
def test_a_probe_out_of_memory_answers_one_frame(monkeypatch, oom_at):
    """A batch of 1 that does not fit then fails in one line when it renders (tests/test_render.py), as any does."""
    gpu = FakeGpu(monkeypatch, total=8 * GIB, kept=0, fixed=1 * GIB, per_frame=1 * GIB, oom_at=oom_at)
    assert auto_batch_size(torch.device("cuda"), gpu.render, 64, 64) == 1


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
