"""What few-step rendering saves, and what a walking LoRA strength costs, on the toy model.

    python benchmarks/lora_and_few_step.py [--frames 120] [--rounds 3]     # about 6 minutes on 2 cores

The same walk rendered four ways on the CPU: 25 steps with classifier-free guidance (guidance_scale 5);
4 LCMScheduler steps at guidance_scale 1 (no guidance: one UNet pass per step); the 25-step walk with one
LoRA (made here with peft, on the UNet's and the text encoder's attention) at a constant strength of 0.5;
and with that LoRA's strength walking from 0 to 1. The four jobs are prepared (model loaded, prompts
encoded) once; then each batch of the walk is rendered by all four in a shuffled order, and every round
renders the whole walk again. A slow spell of the machine, which on 2 shared cores comes and goes within
seconds, so touches the four alike: a ratio is taken between renders of the same batch a moment apart,
and the median over batches and rounds counts. It prints frames/s of each (the whole walk, the median
round) and the ratios. Run it with nothing else on the machine: another process can slow torch severalfold.
"""

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from morph.config.jobs import validate
from morph.job import prepare_job
from morph.models.pipeline import quiet_libraries
from morph.testing import make_lora

PROMPTS = ["a red circle", "a blue square"]
PLAIN, FEW_STEP, CONSTANT, WALKING = ("25 steps, CFG", "4 LCM steps, no CFG", "25 steps, CFG, LoRA at 0.5",
                                      "25 steps, CFG, walking LoRA")


def prepared(folder: Path, name: str, frames: int, **keys):
    config = validate({"name": name, "model": "toy", "prompts": PROMPTS, "frames": frames, "seed": 3,
                       "num_inference_steps": 25, "guidance_scale": 5.0, "batch_size": 8, "device": "cpu",
                       "output": str(folder / name), **keys})
    return prepare_job(config)


def seconds(job, indices: list[int]) -> float:
    started = time.perf_counter()
    assert len(list(job.frames(indices))) == len(indices)
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=3, help="the whole walk is rendered this many times each way")
    args = parser.parse_args()
    quiet_libraries()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        lora = make_lora(folder / "style.safetensors", model="toy")
        walking = [{"prompt": PROMPTS[0], "loras": {"style": 0}}, {"prompt": PROMPTS[1], "loras": {"style": 1}}]
        ways = {
            PLAIN: {},
            FEW_STEP: {"scheduler": "LCMScheduler", "num_inference_steps": 4, "guidance_scale": 1.0},
            CONSTANT: {"loras": [{"path": str(lora), "name": "style", "scale": 0.5}]},
            WALKING: {"prompts": walking, "loras": [{"path": str(lora), "name": "style"}]},
        }
        jobs = {name: prepared(folder, f"way{i}", args.frames, **keys) for i, (name, keys) in enumerate(ways.items())}
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
        print(f"{name:<30} {statistics.median(rates):8.2f} frames/s (rounds: {', '.join(f'{r:.2f}' for r in rates)})")

    def ratio(name: str, slower: bool) -> str:
        pairs = sorted((w / p if slower else p / w) for plain, way in zip(took[PLAIN], took[name])
                       for p, w in zip(plain, way))
        low, high = pairs[len(pairs) // 4], pairs[3 * len(pairs) // 4]
        return f"{statistics.median(pairs):.3f}x (quartiles of {len(pairs)} batches {low:.3f}-{high:.3f})"

    print(f"few-step speed-up: {ratio(FEW_STEP, False)} (target >= 5)")
    print(f"walking LoRA's cost: {ratio(WALKING, True)} the plain walk's time per frame (target <= 1.15)")
    print(f"a constant strength's cost: {ratio(CONSTANT, True)}")


if __name__ == "__main__":
    main()
