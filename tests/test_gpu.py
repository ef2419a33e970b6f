"""The CUDA path: float16, SDPA, channels_last, the shipped goldens, batch_size: auto, OOM back-off, compile.

Skipped, with the reason shown in pytest's summary (`-rs`), on machines without a CUDA GPU.
"""

from pathlib import Path

import pytest
import torch

from morph.config import load_config
from morph.golden import PRESETS
from morph.job import run_job
from morph.metrics import compare
from morph.testing import assert_matches_golden
from morph.video import read_png

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)")]

CONFIGS = Path(__file__).parents[1] / "configs"


def frames_of(config, count):
    return [torch.from_numpy(read_png(config.output_dir / "frames" / f"{i:05d}.png")) for i in range(count)]


def assert_within(preset, a_frames, b_frames):
    for i, (a, b) in enumerate(zip(a_frames, b_frames, strict=True)):
        figures = compare(a, b)
        assert PRESETS[preset].passes(figures), (i, figures)


@pytest.mark.parametrize("model", ["tiny", "toy"])
def test_float16_end_to_end_matches_the_cpu_render(write_config, model):
    cpu = load_config(write_config(name=f"{model}-cpu", model=model, frames=5))
    cuda = load_config(write_config(name=f"{model}-cuda", model=model, frames=5, device="cuda", dtype="auto"))
    run_job(cpu, quiet=True)
    manifest = run_job(cuda, quiet=True)
    assert manifest["device"].startswith("cuda") and manifest["dtype"] == "float16"
    assert "AttnProcessor2_0" in manifest["attention"]  # PyTorch's scaled-dot-product attention
    assert manifest["memory_format"] == "channels_last"
    assert_within("cross-device", frames_of(cpu, 5), frames_of(cuda, 5))


@pytest.mark.parametrize("name", ["tiny_demo", "toy_demo"])
def test_the_shipped_goldens_pass_on_cuda_with_the_default_preset(name, tmp_path):
    assert_matches_golden(CONFIGS / f"{name}.yaml", device="cuda", output=str(tmp_path))


def test_batch_size_auto_probes_the_gpu(write_config):
    manifest = run_job(load_config(write_config(frames=5, device="cuda", batch_size="auto")), quiet=True)
    assert manifest["config"]["batch_size"] == "auto" and 1 <= manifest["batch_size"] <= 16 * 512 * 512 // 64**2


def test_out_of_memory_on_a_real_gpu_halves_the_batch(write_config):
    """512 px frames of the tiny model at batch 64 do not fit in 1.5 GiB; morph backs off instead of crashing."""
    small = load_config(write_config(name="small", frames=3, height=512, width=512, num_inference_steps=1,
                                     device="cuda", batch_size=1))
    big = load_config(write_config(name="big", frames=3, height=512, width=512, num_inference_steps=1,
                                   device="cuda", batch_size=64))
    run_job(small, quiet=True)
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(1.5 * 1024**3 / total)
    try:
        with pytest.warns(UserWarning, match="out of GPU memory at batch_size 64"):
            manifest = run_job(big, quiet=True)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert manifest["batch_size"] < 64 and manifest["batch_size_backoffs"]
    assert_within("same-device", frames_of(small, 3), frames_of(big, 3))


def test_compile_on_cuda_stays_within_tolerance_of_eager(write_config, monkeypatch):
    eager = load_config(write_config(name="eager", frames=6, device="cuda"))
    compiled = load_config(write_config(name="compiled", frames=6, device="cuda", compile=True))
    run_job(eager, quiet=True)
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    manifest = run_job(compiled, quiet=True)
    assert manifest["compiled"] is True
    assert_within("cross-device", frames_of(eager, 6), frames_of(compiled, 6))
