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
    pipe.vae.decoder = torch.compile(pipe.vae.decoder, dynamic=False)


def plan_batch_size(free_bytes: int, peak_bytes: Callable[[int], int], height: int, width: int) -> int:
    """The largest batch whose measured memory fits in `free_bytes`, capped where throughput stops growing.

    `peak_bytes(b)` renders a probe batch of b frames and returns the memory it took; the
    difference between b = 2 and b = 1 is the cost of one more frame.
    """
    one, two = peak_bytes(1), peak_bytes(2)
    per_frame = max(two - one, 1)
    fixed = max(one - per_frame, 0)
    fits = int((free_bytes * MEMORY_HEADROOM - fixed) // per_frame)
    return max(1, min(fits, max(1, SATURATION_PIXELS // (height * width))))


def cuda_peak_bytes(device: torch.device, render: Callable[[int], object]) -> Callable[[int], int]:
    """A peak_bytes(b) for plan_batch_size: the GPU memory `render(b)` allocates at its peak."""

    def peak(batch: int) -> int:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        render(batch)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before

    return peak


def auto_batch_size(device: torch.device, render: Callable[[int], object], height: int, width: int) -> int:
    """batch_size: auto. On CUDA, from two probe renders (1 and 2 frames) and the free memory; elsewhere 4."""
    if device.type != "cuda":
        return CPU_BATCH_SIZE
    peak = cuda_peak_bytes(device, render)
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    return plan_batch_size(free, peak, height, width)
