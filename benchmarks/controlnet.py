"""What a ControlNet costs: the same walk with one ControlNet (at a constant strength, and walking) against the plain
walk, on the toy model.

    python benchmarks/controlnet.py [--frames 24] [--rounds 2] [--steps 25]     # minutes on 2 idle cores

The three jobs are prepared once (the ControlNet made here with morph.testing.make_controlnet from the model's UNet,
its control image an edge map of a drawn square); each batch of the walk is then rendered by all three in a shuffled
order, every round the whole walk again, and the ratio of each batch's time to the plain walk's same batch a moment
apart counts (median over batches and rounds), so a slow spell of a shared machine touches them alike. Run it with
nothing else on the machine.
"""

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from morph.config.jobs import validate
from morph.job import prepare_job
from morph.models.pipeline import quiet_libraries
from morph.testing import make_controlnet

PROMPTS = ["a red circle", "a blue square"]
PLAIN, CONSTANT, WALKING = "plain walk", "ControlNet at 1", "walking ControlNet (0 to 1)"


def prepared(folder: Path, name: str, model: str, frames: int, steps: int, **keys):
    config = validate({"name": name, "model": model, "prompts": PROMPTS, "frames": frames, "seed": 3,
                       "num_inference_steps": steps, "guidance_scale": 5.0, "batch_size": 8, "device": "cpu",
                       "output": str(folder / name), **keys})
    return prepare_job(config)


def seconds(job, indices: list[int]) -> float:
    started = time.perf_counter()
    assert len(list(job.frames(indices))) == len(indices)
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy", choices=["toy", "tiny"])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=2, help="the whole walk is rendered this many times each way")
    parser.add_argument("--steps", type=int, default=25, help="denoising steps per frame (classifier-free guidance 5)")
    args = parser.parse_args()
    quiet_libraries()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        square = np.zeros((64, 64, 3), np.uint8)
        square[16:48, 16:48] = 255
        Image.fromarray(square).save(folder / "square.png")
        net = {"path": str(make_controlnet(folder / "edges", model=args.model)), "name": "edges",
               "image": str(folder / "square.png"), "preprocess": "canny"}
        walking = [{"prompt": PROMPTS[0], "controlnets": {"edges": 0}}, {"prompt": PROMPTS[1], "controlnets":
                                                                           {"edges": 1}}]
        ways = {PLAIN: {}, CONSTANT: {"controlnets": [net]}, WALKING: {"prompts": walking, "controlnets": [net]}}
        jobs = {name: prepared(folder, f"way{i}", args.model, args.frames, args.steps,
                                 **keys) for i, (name, keys) in enumerate(ways.items())}
        size = jobs[PLAIN].renderer.batch_size
        batches = [list(range(start, min(start + size, args.frames))) for start in range(0, args.frames, size)]
        for job in jobs.values():  # the first batch of a job pays for warming up
            seconds(job, batches[0])
        took = {name: [] for name in ways}  # [rounds][batches] seconds
        order, shuffle = list(ways), random.Random(0).shuffle
        for _ in range(args.rounds):
            for name in ways:
                took[name].append([])
            for batch in batches:
                shuffle(order)
                for name in order:
                    took[name][-1].append(seconds(jobs[name], batch))
    for name, rounds in took.items():
        rates = [args.frames / sum(round_) for round_ in rounds]
        print(f"{name:<34} {statistics.median(rates):8.2f} frames/s (rounds: {', '.join(f'{r:.2f}' for r in rates)})")
    for name in (CONSTANT, WALKING):
        pairs = sorted(w / p for plain, way in zip(took[PLAIN], took[name]) for p, w in zip(plain, way))
        print(f"{name}: {statistics.median(pairs):.3f}x the plain walk's time per frame (quartiles of {len(pairs)} "
              f"batches {pairs[len(pairs) // 4]:.3f}-{pairs[3 * len(pairs) // 4]:.3f})")


if __name__ == "__main__":
    main()
