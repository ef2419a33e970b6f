"""What few-step rendering saves, and what a walking LoRA strength costs, on the toy model.

    python benchmarks/lora_and_few_step.py [--frames 120] [--rounds 3]     # about 5 minutes on 2 cores

The same walk rendered four ways on the CPU, each --rounds times, interleaved (the best of each counts): 25
steps with classifier-free guidance (guidance_scale 5); 4 LCMScheduler steps at guidance_scale 1 (no
guidance: one UNet pass per step); the 25-step walk with one LoRA (made here with peft, on the UNet's and the
text encoder's attention) at a constant strength of 0.5; and with that LoRA's strength walking from 0 to 1.
It prints frames/s of each and the ratios. Run it with nothing else on the machine: on 2 cores another
process can slow torch severalfold.
"""

import argparse
import tempfile
from pathlib import Path

from morph.config.jobs import validate
from morph.job import run_job
from morph.models.pipeline import quiet_libraries
from morph.testing import make_lora

PROMPTS = ["a red circle", "a blue square"]


def frames_per_s(folder: Path, name: str, frames: int, **keys) -> float:
    config = validate({"name": name, "model": "toy", "prompts": PROMPTS, "frames": frames, "seed": 3,
                       "num_inference_steps": 25, "guidance_scale": 5.0, "batch_size": 8, "device": "cpu",
                       "output": str(folder / name), **keys})
    manifest = run_job(config, quiet=True, fresh=True)
    assert manifest["rendered"] == frames
    return manifest["timings"]["frames_per_s"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=3, help="each way is rendered this many times; the best counts")
    args = parser.parse_args()
    quiet_libraries()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        lora = make_lora(folder / "style.safetensors", model="toy")
        walking = [{"prompt": PROMPTS[0], "loras": {"style": 0}}, {"prompt": PROMPTS[1], "loras": {"style": 1}}]
        ways = {
            "25 steps, CFG": {},
            "4 LCM steps, no CFG": {"scheduler": "LCMScheduler", "num_inference_steps": 4, "guidance_scale": 1.0},
            "25 steps, CFG, LoRA at 0.5": {"loras": [{"path": str(lora), "name": "style", "scale": 0.5}]},
            "25 steps, CFG, walking LoRA": {"prompts": walking, "loras": [{"path": str(lora), "name": "style"}]},
        }
        figures = {name: [] for name in ways}
        for _ in range(args.rounds):  # interleaved, so that a slow spell of the machine touches every way alike
            for i, (name, keys) in enumerate(ways.items()):
                figures[name].append(frames_per_s(folder, f"way{i}", args.frames, **keys))
    best = {name: max(values) for name, values in figures.items()}
    for name, values in figures.items():
        print(f"{name:<30} {best[name]:8.2f} frames/s (best of {', '.join(f'{v:.2f}' for v in values)})")
    plain = best["25 steps, CFG"]
    print(f"few-step speed-up: {best['4 LCM steps, no CFG'] / plain:.2f}x (target >= 5)")
    print(f"walking LoRA's cost: {plain / best['25 steps, CFG, walking LoRA']:.3f}x the plain walk's time per frame "
          f"(target <= 1.15); a constant strength's: {plain / best['25 steps, CFG, LoRA at 0.5']:.3f}x")


if __name__ == "__main__":
    main()
