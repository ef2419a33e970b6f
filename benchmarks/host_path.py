"""The host path at GPU speed: morph's whole output path behind an instant stand-in for the model.

    python benchmarks/host_path.py [--frames 200] [--sizes 512 1024] [--threads 1 2 0] [--preset x] [--rss 40 400]
                                   [--rounds 3]

Each run is a real `run_job` of the tiny model in which the batch renderer's pipeline call hands
back precomputed frames at once: every frame is stored (PNG and record, on the writer's encoder
threads), streamed into the MP4, published under its name, made into the platform files
(`--preset`) and analysed (storm map, filmstrip, report), exactly as in a run on a GPU. The
precomputed frames are blends of two real renders of the tiny model at that size (one step),
whose noise compresses worse than a photograph (about 2.3 bytes a pixel against 1.5): encoding
times are on the high side. Printed per size and thread count (0: all cores): the frames/s the host
path absorbs while rendering (the manifest's frames_per_s), and the seconds that run after the last
frame is stored (MP4 flush, published frames, platform files, storm map, report, manifest), in all,
per frame and by step; how the whole path, and the store's encoding alone (nothing else running),
scale from 1 encoder thread to 2. Each is the best of --rounds runs taken in turn (on a shared
machine the others' load only slows a run; every round is printed too; the seconds after the last
frame are those of the run with the best frames/s). Then the peak memory (RSS) of whole runs of the
first size with --rss's frame counts, each in a fresh process (the stand-in keeps at most CYCLE
frames, shown in turn: memory that grows is morph's).
Run it alone: it measures the cores.
"""

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import morph.job
import morph.render.writer
from morph.config.jobs import validate
from morph.render.batch import Batch, BatchRenderer, HostCopy
from morph.render.store import FrameStore
from morph.render.writer import FrameWriter

PROMPTS = ["a photo of a cat", "a drawing of a dog in kyoto"]


def job_config(frames: int, size: int, out: str, presets: list[str], steps: int = 1):
    return validate({"name": "host", "model": "tiny", "prompts": PROMPTS, "frames": frames, "height": size,
                     "width": size, "num_inference_steps": steps, "batch_size": 8, "device": "cpu", "output": out,
                     "video": {"presets": presets}})


CYCLE = 48  # precomputed frames at most; a longer walk shows them again in turn


def precomputed_frames(frames: int, size: int) -> torch.Tensor:
    """[frames, size, size, 3] uint8: the walk's first and last frame rendered by the tiny model, and blends
    between them."""
    with tempfile.TemporaryDirectory() as out:
        job = morph.job.prepare_job(job_config(2, size, out, []))
        ends = np.stack([image for _, image, _ in job.frames([0, 1])]).astype(np.float32)
    t = np.linspace(0, 1, min(frames, CYCLE), dtype=np.float32)[:, None, None, None]
    return torch.from_numpy(np.rint((1 - t) * ends[0] + t * ends[1]).astype(np.uint8))


class InstantModel:
    """Stands in for the pipeline call: BatchRenderer._render_frames gives the precomputed frames of its indices
    (index i: frame i modulo their count)."""

    def __init__(self, frames: torch.Tensor):
        self.frames = frames

    def __enter__(self):
        self._real = BatchRenderer._render_frames
        frames = self.frames

        def render(renderer, indices):
            n = len(indices)
            return Batch(frames[[i % len(frames) for i in indices]], [False] * n, [False] * n, [False] * n)

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


def measure(frames: torch.Tensor, count: int, size: int, threads: int, presets: list[str]) -> dict:
    """One whole run of a walk of `count` frames showing the precomputed `frames`, on `threads` encoder threads."""
    morph.render.writer.THREADS = threads
    with tempfile.TemporaryDirectory() as out, InstantModel(frames), Steps() as steps:
        manifest = morph.job.run_job(job_config(count, size, out, presets), quiet=True, fresh=True)
        after = time.perf_counter() - steps.ended["produce"]
    return {"size": size, "threads": threads, "frames": count,
            "frames_per_s": manifest["timings"]["frames_per_s"], "after_last_frame_s": round(after, 3),
            "after_last_frame_ms_per_frame": round(1000 * after / count, 1),
            "steps_s": {name: steps.seconds[name] for name in STEPS if name != "produce"}}


def encoding_rate(frames: torch.Tensor, count: int, threads: int) -> float:
    """Frames/s of the store's writes alone (PNG encode, hash, atomic rename, record) on `threads` encoder threads,
    fed in batches of 8 as the renderer does, with nothing else running: how encoding scales with threads. The
    batches are gathered before the clock starts: the stand-in's copying is not the store's work."""
    batches = [list(range(first, min(first + 8, count))) for first in range(0, count, 8)]
    shown = lambda batch: tuple(i % len(frames) for i in batch)  # noqa: E731  a walk longer than CYCLE repeats them
    pixels = {shown(batch): frames[list(shown(batch))] for batch in batches}
    with tempfile.TemporaryDirectory() as out:
        store = FrameStore(Path(out))
        started = time.perf_counter()
        with FrameWriter(lambda item, image: None, encode=lambda key, image: store.put(key, image),
                         threads=threads) as writer:
            for batch in batches:
                writer.put([f"frame-{i}" for i in batch], HostCopy(pixels[shown(batch)]))
        return count / (time.perf_counter() - started)


def in_turn(ways: dict, rounds: int) -> dict:
    """Each way's results (way() for each, a callable) over `rounds` rounds, the ways taken in turn within a round,
    so that a machine whose speed drifts slows every way alike."""
    results = {name: [] for name in ways}
    for _ in range(rounds):
        for name, way in ways.items():
            results[name].append(way())
    return results


def peak_rss_mib(frames: int, size: int, threads: int, presets: list[str]) -> tuple[float, float]:
    """The peak resident memory of a whole run of `frames` frames, measured in a fresh process: its own, and its
    largest child's (an ffmpeg: the MP4's or a platform file's; at least the process's own size when it started the
    child, since Linux keeps a child's peak from before its exec: flat in the frames is what it can show)."""
    code = ("import resource, sys; sys.path.insert(0, 'benchmarks'); import host_path as h; "
            f"h.measure(h.precomputed_frames({frames}, {size}), {frames}, {size}, {threads}, {presets!r}); "
            "print(*(resource.getrusage(who).ru_maxrss / 1024 "
            "for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    own, child = result.stdout.strip().splitlines()[-1].split()
    return float(own), float(child)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2, 0], help="encoder threads; 0: all cores")
    parser.add_argument("--preset", nargs="*", default=["x"], help="platform files to make (none: only the master)")
    parser.add_argument("--rss", type=int, nargs="*", default=[40, 400], help="frame counts to measure peak RSS at")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs of each thread count, taken in turn; the best counts (a shared machine only slows)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds: at least 1")
    print(f"load average before: {os.getloadavg()}; {os.cpu_count()} cores", file=sys.stderr)
    figures = []
    for size in args.sizes:
        frames = precomputed_frames(args.frames, size)
        counts = list(dict.fromkeys(threads or os.cpu_count() for threads in args.threads))  # 0 may be 2 again
        runs = in_turn({threads: functools.partial(measure, frames, args.frames, size, threads, args.preset)
                        for threads in counts}, args.rounds)
        rate = {}
        for threads, rows in runs.items():
            row = max(rows, key=lambda r: r["frames_per_s"])
            row["rounds_frames_per_s"] = [r["frames_per_s"] for r in rows]
            row["rounds_after_last_frame_ms_per_frame"] = [r["after_last_frame_ms_per_frame"] for r in rows]
            figures.append(row)
            rate[threads] = row["frames_per_s"]
            print(f"{size} px, {threads} encoder thread(s): {row['frames_per_s']:.1f} frames/s (rounds: "
                  + ", ".join(f"{r:.1f}" for r in row["rounds_frames_per_s"]) + f"); after the last frame, that run: "
                  f"{row['after_last_frame_s']:.2f} s ({row['after_last_frame_ms_per_frame']:.1f} ms a frame: "
                  + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in row["steps_s"].items())
                  + "; rounds: " + ", ".join(f"{ms:.1f}" for ms in row["rounds_after_last_frame_ms_per_frame"])
                  + " ms a frame)", flush=True)
        if 1 in rate and 2 in rate:
            print(f"{size} px: the whole path on 2 encoder threads absorbs {rate[2] / rate[1]:.2f}x the frames/s of "
                  "1 (best runs)", flush=True)
        alone = in_turn({threads: functools.partial(encoding_rate, frames, args.frames, threads) for threads in (1, 2)},
                        args.rounds)
        best = {threads: max(rates) for threads, rates in alone.items()}
        figures.append({"size": size, "encoding_alone_frames_per_s": {t: round(r, 1) for t, r in best.items()},
                        "encoding_alone_rounds": {t: [round(r, 1) for r in rates] for t, rates in alone.items()}})
        print(f"{size} px, encoding alone: {best[1]:.1f} frames/s on 1 thread, {best[2]:.1f} on 2 "
              f"({best[2] / best[1]:.2f}x; rounds: 1 thread " + ", ".join(f"{r:.1f}" for r in alone[1])
              + "; 2 threads " + ", ".join(f"{r:.1f}" for r in alone[2]) + ")", flush=True)
    for count in args.rss:
        mib, child = peak_rss_mib(count, args.sizes[0], os.cpu_count(), args.preset)
        figures.append({"size": args.sizes[0], "frames": count, "peak_rss_mib": round(mib, 1),
                        "largest_child_peak_rss_mib": round(child, 1)})
        print(f"{args.sizes[0]} px, {count} frames: peak RSS {mib:.0f} MiB, its largest child's {child:.0f} MiB",
              flush=True)
    print(f"load average after: {os.getloadavg()}", file=sys.stderr)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
