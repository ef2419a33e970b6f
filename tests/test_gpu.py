"""The CUDA path: float16, SDPA, channels_last, the shipped goldens, batch_size: auto, OOM back-off, compile, and
every job kind (grids, edits, walking guidance, a walking LoRA, SDXL) and a second GPU.

Skipped, with the reason shown in pytest's summary (`-rs`), on machines without a CUDA GPU.
"""

from pathlib import Path

import pytest
import torch

from morph.models.acceleration import SATURATION_PIXELS
from morph.config.yaml_file import load_config
from morph.golden import PRESETS
from morph.job import run_job
from morph.analysis.metrics import compare
from morph.testing import assert_matches_golden
from morph.media.video import read_png

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
    # the tiny model's 64 px frames take a few MB each: the saturation cap decides, not the memory, and it fits
    assert manifest["config"]["batch_size"] == "auto" and manifest["batch_size"] == SATURATION_PIXELS // 64**2
    assert manifest["batch_size_backoffs"] == []


def test_batch_size_auto_for_sdxl_fits_its_float32_decode(write_config):
    """SDXL decodes in float32: the probe must measure that decode, or the first real batch runs out of memory."""
    manifest = run_job(load_config(write_config(model="tiny-sdxl", frames=5, height=512, width=512,
                                                num_inference_steps=2, device="cuda", batch_size="auto")),
                       quiet=True)
    assert manifest["vae_decode"] == "float32" and manifest["batch_size_backoffs"] == []


def peak_reserved(config):
    """The most memory the caching allocator held above what it held before, rendering every frame of `config`."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_reserved()
    run_job(config, quiet=True, fresh=True)
    return torch.cuda.max_memory_reserved() - before


def test_out_of_memory_on_a_real_gpu_halves_the_batch(write_config):
    """Under a cap that one 512 px frame of the tiny model fits in and a batch of three does not, morph backs off
    instead of crashing. The cap is measured, not fixed: flash attention's memory grows with the pixels, not their
    square, so three frames fit in the 1.5 GiB that three frames of the quadratic kernel overran. It bounds what the
    allocator reserves, so the peaks are reserved memory too."""
    keys = dict(frames=3, height=512, width=512, num_inference_steps=1, device="cuda")
    small = load_config(write_config(name="small", batch_size=1, **keys))
    three = load_config(write_config(name="three", batch_size=3, **keys))
    big = load_config(write_config(name="big", batch_size=64, **keys))
    run_job(small, quiet=True)  # warm: kernels chosen, cuBLAS's workspace held, as in the runs measured below
    one, all_three = peak_reserved(small), peak_reserved(three)
    assert all_three > one, (one, all_three)  # else no cap tells a batch of one from a batch of three
    torch.cuda.empty_cache()
    cap = torch.cuda.memory_reserved() + (one + all_three) // 2
    torch.cuda.set_per_process_memory_fraction(cap / torch.cuda.get_device_properties(0).total_memory)
    try:
        with pytest.warns(UserWarning, match="out of GPU memory in a batch of 3 frames"):
            manifest = run_job(big, quiet=True)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert manifest["batch_size"] < 3 and manifest["batch_size_backoffs"]
    assert_within("same-device", frames_of(small, 3), frames_of(big, 3))


def test_compile_on_cuda_stays_within_tolerance_of_eager(write_config):
    eager = load_config(write_config(name="eager", frames=6, device="cuda"))
    compiled = load_config(write_config(name="compiled", frames=6, device="cuda", compile=True))
    run_job(eager, quiet=True)
    torch._dynamo.reset()  # graphs another test compiled for other weights would count as recompiles
    with torch._dynamo.config.patch(error_on_recompile=True):  # monkeypatch's undo would delete the setting
        manifest = run_job(compiled, quiet=True)
    assert manifest["compiled"] is True
    assert_within("cross-device", frames_of(eager, 6), frames_of(compiled, 6))


def cpu_and_cuda(write_config, name, **keys):
    """The same job rendered on the CPU (float32) and on CUDA (float16): their configs, after both ran."""
    cpu = load_config(write_config(name=f"{name}-cpu", **keys))
    cuda = load_config(write_config(name=f"{name}-cuda", device="cuda", dtype="auto", **keys))
    run_job(cpu, quiet=True)
    return cpu, cuda, run_job(cuda, quiet=True)


def test_grids_render_on_cuda(write_config):
    grid = {"rows": {"from": "a photo of a cat", "to": "a photo of a kitten", "steps": 2},
            "columns": {"add": "tabby", "from": -0.5, "to": 1, "steps": 2}}
    cpu, cuda, manifest = cpu_and_cuda(write_config, "grid", prompts=None, frames=None, grid=grid)
    assert manifest["device"].startswith("cuda") and manifest["grid"].endswith("grid.png")
    for name in ("r00_c00.png", "r01_c01.png"):
        a, b = (torch.from_numpy(read_png(c.output_dir / "cells" / name)) for c in (cpu, cuda))
        assert PRESETS["cross-device"].passes(compare(a, b)), name


def test_one_word_edits_render_on_cuda(write_config):
    cpu, cuda, _ = cpu_and_cuda(write_config, "edit", prompts=None, base="a drawing of a cat", frames=3,
                                edit={"word": "cat", "prompts": ["cat", "dog"]})
    assert_within("cross-device", frames_of(cpu, 3), frames_of(cuda, 3))


@pytest.mark.parametrize("compile_", [False, True])
def test_walking_guidance_renders_on_cuda_compiled_or_not(write_config, compile_):
    keyframes = [{"prompt": "a red circle", "guidance_scale": 3}, {"prompt": "a blue square", "guidance_scale": 7}]
    cpu, cuda, manifest = cpu_and_cuda(write_config, f"guidance-{compile_}", prompts=keyframes, frames=6,
                                       compile=compile_)
    assert [r["guidance_scale"] for r in manifest["frames"]] == pytest.approx([3, 3.8, 4.6, 5.4, 6.2, 7])
    assert_within("cross-device", frames_of(cpu, 6), frames_of(cuda, 6))


@pytest.mark.parametrize("compile_", [False, True])
def test_a_walking_lora_renders_on_cuda_compiled_or_not(write_config, lora_file, compile_):
    keyframes = [{"prompt": "a red circle", "loras": {"style": 0}}, {"prompt": "a blue square", "loras": {"style": 1}}]
    cpu, cuda, manifest = cpu_and_cuda(write_config, f"lora-{compile_}", prompts=keyframes, frames=6,
                                       compile=compile_, loras=[{"path": str(lora_file()), "name": "style"}])
    assert [r["lora_scales"]["style"] for r in manifest["frames"]] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1])
    assert_within("cross-device", frames_of(cpu, 6), frames_of(cuda, 6))


def test_sdxl_in_float16_decodes_in_float32_and_matches_the_cpu(write_config):
    cpu, cuda, manifest = cpu_and_cuda(write_config, "sdxl", model="tiny-sdxl", frames=3)
    assert manifest["dtype"] == "float16" and manifest["vae_decode"] == "float32"
    assert manifest["redecoded_float32"] == [] and manifest["broken_frames"] == []
    assert_within("cross-device", frames_of(cpu, 3), frames_of(cuda, 3))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs a second CUDA GPU")
def test_a_second_gpu_renders_the_same_frames_as_the_first(write_config):
    first = load_config(write_config(name="gpu0", frames=5, device="cuda:0"))
    second = load_config(write_config(name="gpu1", frames=5, device="cuda:1"))
    run_job(first, quiet=True)
    assert run_job(second, quiet=True)["device"] == "cuda:1"
    assert_within("same-device", frames_of(first, 5), frames_of(second, 5))
