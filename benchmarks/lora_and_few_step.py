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
import tempfile
from pathlib import Path

from morph.config.jobs import validate
from morph.job import prepare_job
from morph.models.pipeline import quiet_libraries
from morph.testing import make_lora

from interleaved import interleaved, print_rates, ratio

PROMPTS = ["a red circle", "a blue square"]
PLAIN, FEW_STEP, CONSTANT, WALKING = ("25 steps, CFG", "4 LCM steps, no CFG", "25 steps, CFG, LoRA at 0.5",
                                      "25 steps, CFG, walking LoRA")


def prepared(folder: Path, name: str, frames: int, **keys):
    config = validate({"name": name, "model": "toy", "prompts": PROMPTS, "frames": frames, "seed": 3,
                       "num_inference_steps": 25, "guidance_scale": 5.0, "batch_size": 8, "device": "cpu",
                       "output": str(folder / name), **keys})
    return prepare_job(config)


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
        took = interleaved(jobs, args.frames, args.rounds)
    print_rates(took, args.frames)

    print(f"few-step speed-up: {ratio(took, PLAIN, FEW_STEP, slower=False)} (target >= 5)")
    print(f"walking LoRA's cost: {ratio(took, PLAIN, WALKING)} the plain walk's time per frame (target <= 1.15)")
    print(f"a constant strength's cost: {ratio(took, PLAIN, CONSTANT)}")


if __name__ == "__main__":
    main()
