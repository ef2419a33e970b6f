"""Timing several ways of rendering the same frames: batch by batch, in a shuffled order each time, so that a machine
whose speed drifts (another job starting, the CPU's clock) slows every way alike. The benchmarks that compare a
capability with the plain walk (lora_and_few_step.py, controlnet.py) share it."""

import random
import statistics
import time


def seconds(job, indices: list[int]) -> float:
    """How long a prepared job takes to render the frames `indices`."""
    started = time.perf_counter()
    assert len(list(job.frames(indices))) == len(indices)
    return time.perf_counter() - started


def interleaved(jobs: dict, frames: int, rounds: int) -> dict[str, list[list[float]]]:
    """Per way, per round, the seconds of each of its batches of `frames` frames (after one warm-up batch each)."""
    size = next(iter(jobs.values())).renderer.batch_size
    batches = [list(range(start, min(start + size, frames))) for start in range(0, frames, size)]
    for job in jobs.values():  # the first batch of a job pays for warming up
        seconds(job, batches[0])
    took = {name: [] for name in jobs}
    order, shuffle = list(jobs), random.Random(0).shuffle
    for _ in range(rounds):
        for name in jobs:
            took[name].append([])
        for batch in batches:
            shuffle(order)
            for name in order:
                took[name][-1].append(seconds(jobs[name], batch))
    return took


def print_rates(took: dict, frames: int, width: int = 30) -> None:
    """Each way's median frames/s over the rounds, and every round's."""
    for name, rounds in took.items():
        rates = [frames / sum(round_) for round_ in rounds]
        print(f"{name:<{width}} {statistics.median(rates):8.2f} frames/s (rounds: {', '.join(f'{r:.2f}' for r in rates)})")


def ratio(took: dict, plain: str, name: str, slower: bool = True) -> str:
    """The median, over batches, of way `name`'s time over `plain`'s (or its inverse: a speed-up), with quartiles."""
    pairs = sorted((w / p if slower else p / w) for base, way in zip(took[plain], took[name])
                   for p, w in zip(base, way))
    low, high = pairs[len(pairs) // 4], pairs[3 * len(pairs) // 4]
    return f"{statistics.median(pairs):.3f}x (quartiles of {len(pairs)} batches {low:.3f}-{high:.3f})"
