"""The host path at GPU speed: morph's whole output path behind an instant stand-in for the model.

    python benchmarks/host_path.py [--frames 48] [--sizes 512 1024] [--threads 1 2 0] [--preset x]

Each run is a real `run_job` of the tiny model in which the batch renderer's pipeline call hands
back precomputed frames at once: every frame is stored (PNG and record, on the writer's encoder
threads), streamed into the MP4, published under its name, made into the platform files
(`--preset`) and analysed (storm map, filmstrip, report), exactly as in a run on a GPU. The
precomputed frames are blends of two real renders of the tiny model at that size (one step),
whose noise compresses worse than a photograph (about 2.3 bytes a pixel against 1.5): encoding
times are on the high side. Printed per size and thread count (0: all
cores): the frames/s the host path absorbs while rendering (the manifest's frames_per_s), and the
seconds that run after the last frame is stored (MP4 flush, published frames, platform files,
storm map, report, manifest), in all, per frame and by step. Run it alone: it measures the cores.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

import morph.job
import morph.render.writer
from morph.config.jobs import validate
from morph.render.batch import Batch, BatchRenderer

PROMPTS = ["a photo of a cat", "a drawing of a dog in kyoto"]


def job_config(frames: int, size: int, out: str, presets: list[str], steps: int = 1):
    return validate({"name": "host", "model": "tiny", "prompts": PROMPTS, "frames": frames, "height": size,
                     "width": size, "num_inference_steps": steps, "batch_size": 8, "device": "cpu", "output": out,
                     "video": {"presets": presets}})


def precomputed_frames(frames: int, size: int) -> torch.Tensor:
    """[frames, size, size, 3] uint8: the walk's first and last frame rendered by the tiny model, and blends
    between them."""
    with tempfile.TemporaryDirectory() as out:
        job = morph.job.prepare_job(job_config(2, size, out, []))
        ends = np.stack([image for _, image, _ in job.frames([0, 1])]).astype(np.float32)
    t = np.linspace(0, 1, frames, dtype=np.float32)[:, None, None, None]
    return torch.from_numpy(np.rint((1 - t) * ends[0] + t * ends[1]).astype(np.uint8))


class InstantModel:
    """Stands in for the pipeline call: BatchRenderer._render_frames gives the precomputed frames of its indices."""

    def __init__(self, frames: torch.Tensor):
        self.frames = frames

    def __enter__(self):
        self._real = BatchRenderer._render_frames
        frames = self.frames

        def render(renderer, indices):
            n = len(indices)
            return Batch(frames[indices], [False] * n, [False] * n, [False] * n)

        BatchRenderer._render_frames = render
        return self

    def __exit__(self, *exc):
        BatchRenderer._render_frames = self._real


STEPS = ("produce", "publish", "deliver_all", "storm_map", "write_report")  # run_job's steps, by morph.job's names


class Steps:
    """Times each of run_job's STEPS (wrapping morph.job's names for them); `ended`: when each returned."""

    def __enter__(self):
        self.seconds, self.ended, self._real = {}, {}, {name: getattr(morph.job, name) for name in STEPS}
        for name, real in self._real.items():
            setattr(morph.job, name, self._timed(name, real))
        return self

    def _timed(self, name, real):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                self.ended[name] = time.perf_counter()
                self.seconds[name] = round(self.ended[name] - started, 3)

        return timed

    def __exit__(self, *exc):
        for name, real in self._real.items():
            setattr(morph.job, name, real)


def measure(frames: torch.Tensor, size: int, threads: int, presets: list[str]) -> dict:
    morph.render.writer.THREADS = threads
    with tempfile.TemporaryDirectory() as out, InstantModel(frames), Steps() as steps:
        manifest = morph.job.run_job(job_config(len(frames), size, out, presets), quiet=True, fresh=True)
        after = time.perf_counter() - steps.ended["produce"]
    return {"size": size, "threads": threads, "frames": len(frames),
            "frames_per_s": manifest["timings"]["frames_per_s"], "after_last_frame_s": round(after, 3),
            "after_last_frame_ms_per_frame": round(1000 * after / len(frames), 1),
            "steps_s": {name: steps.seconds[name] for name in STEPS if name != "produce"}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 0], help="encoder threads; 0: all cores")
    parser.add_argument("--preset", nargs="*", default=["x"], help="platform files to make (none: only the master)")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}; {os.cpu_count()} cores", file=sys.stderr)
    figures = []
    for size in args.sizes:
        frames = precomputed_frames(args.frames, size)
        for threads in args.threads:
            row = measure(frames, size, threads or os.cpu_count(), args.preset)
            figures.append(row)
            print(f"{size} px, {row['threads']} encoder thread(s): {row['frames_per_s']:.1f} frames/s; after the last "
                  f"frame {row['after_last_frame_s']:.2f} s ({row['after_last_frame_ms_per_frame']:.1f} ms a frame: "
                  + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in row["steps_s"].items()) + ")", flush=True)
    print(f"load average after: {os.getloadavg()}", file=sys.stderr)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
