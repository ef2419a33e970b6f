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
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from morph.config.jobs import validate
from morph.job import prepare_job
from morph.models.pipeline import quiet_libraries
from morph.testing import make_controlnet

from interleaved import interleaved, print_rates, ratio

PROMPTS = ["a red circle", "a blue square"]
PLAIN, CONSTANT, WALKING = "plain walk", "ControlNet at 1", "walking ControlNet (0 to 1)"


def prepared(folder: Path, name: str, model: str, frames: int, steps: int, **keys):
    config = validate({"name": name, "model": model, "prompts": PROMPTS, "frames": frames, "seed": 3,
                       "num_inference_steps": steps, "guidance_scale": 5.0, "batch_size": 8, "device": "cpu",
                       "output": str(folder / name), **keys})
    return prepare_job(config)


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
        took = interleaved(jobs, args.frames, args.rounds)
    print_rates(took, args.frames, 34)
    for name in (CONSTANT, WALKING):
        print(f"{name}: {ratio(took, PLAIN, name)} the plain walk's time per frame")


if __name__ == "__main__":
    main()
