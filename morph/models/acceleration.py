"""Speed on the GPU: channels_last, torch.compile with fixed batch shapes, and batch_size: auto.

None of it changes what a frame shows beyond float noise; the manifest records what was used.
"""

from collections.abc import Callable

import torch

# Past 16 frames of 512 x 512 per UNet call the GPU is saturated: on an H200 with SD 1.5 (25 steps,
# CFG) batch 8 gave 4.07 frames/s and batch 16 gave 4.27, at 11 GB and ~20 GB. Larger batches
# only cost memory, so `auto` stops there (more frames per call at smaller sizes).
SATURATION_PIXELS = 16 * 512 * 512
CPU_BATCH_SIZE = 4  # `auto` off CUDA: the CPU's throughput still grows with batch, but so does latency
MEMORY_HEADROOM = 0.85  # share of the free GPU memory that `auto` plans to use


def channels_last(pipe) -> None:
    """UNet and VAE in channels_last on CUDA, where convolutions run faster in that layout."""
    if pipe.device.type == "cuda":
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)


def compile_pipeline(pipe) -> None:
    """torch.compile the UNet and the VAE decoder with static shapes (the renderer pads short batches)."""
    pipe.unet = torch.compile(pipe.unet, dynamic=False)
    compile_decoder(pipe.vae)


def compile_decoder(vae) -> None:
    """torch.compile a VAE's decoder with static shapes (the pipeline's, or the renderer's float32 copy of it)."""
    vae.decoder = torch.compile(vae.decoder, dynamic=False)


def is_compiled(module) -> bool:
    """Whether `module` is torch.compile's wrapper (which holds the module itself as _orig_mod)."""
    return hasattr(module, "_orig_mod")


def plan_batch_size(free_bytes: int, one: int, two: int, height: int, width: int) -> int:
    """The largest batch whose measured memory fits in `free_bytes`, capped where throughput stops growing.

    `one` and `two` are the memory probe batches of 1 and 2 frames took; their difference is the
    cost of one more frame.
    """
    per_frame = max(two - one, 1)
    fixed = max(one - per_frame, 0)
    fits = int((free_bytes * MEMORY_HEADROOM - fixed) // per_frame)
    return max(1, min(fits, max(1, SATURATION_PIXELS // (height * width))))


def cuda_peak_bytes(device: torch.device, render: Callable[[int], object]) -> Callable[[int], int]:
    """A peak_bytes(b): the GPU memory the caching allocator reserves beyond what it held while `render(b)` runs.
    Reserved, not allocated: the allocator takes whole segments from the GPU, and a batch needs what it takes."""

    def peak(batch: int) -> int:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        before = torch.cuda.memory_reserved(device)
        torch.cuda.reset_peak_memory_stats(device)
        render(batch)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_reserved(device) - before

    return peak


def auto_batch_size(device: torch.device, render: Callable[[int], object], height: int, width: int) -> int:
    """batch_size: auto. On CUDA, from probe renders (1 and 2 frames) and the free memory they leave; elsewhere 4.

    A probe that runs out of memory answers 1: a single frame that does not fit then fails in one
    line, as any batch of 1 does.
    """
    if device.type != "cuda":
        return CPU_BATCH_SIZE
    peak = cuda_peak_bytes(device, render)
    try:
        # the first render makes what every later one keeps (SDXL's float32 VAE copy, cuBLAS's workspace, the loaded
        # kernels): made before measuring, it counts as neither a frame's cost nor free memory
        render(1)
        one, two = peak(1), peak(2)
    except torch.OutOfMemoryError:
        one = two = None  # leave the except block first, so that the probe's tensors can be freed
    torch.cuda.empty_cache()
    if one is None:
        return 1
    free, _ = torch.cuda.mem_get_info(device)  # after the probes: less what they keep and what CUDA loaded for them
    return plan_batch_size(free, one, two, height, width)
