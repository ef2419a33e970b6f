"""How far renders move between runs that should look the same: the evidence behind the golden presets.

    python benchmarks/golden_tolerances.py [CONFIG] [--frames 0,20,40,60,80,100,119]

Renders the chosen frames of CONFIG (default configs/toy_demo.yaml) on this machine's CPU
(a) float32 at batch 1 and again at batch 8 (same device, different kernels' summation order),
(b) float32 against float16 (the dtype CUDA renders use) and bfloat16 (coarser still: a
pessimistic stand-in for moving goldens across devices and dtypes),
and prints the worst max abs diff, PSNR and SSIM over the frames for each pair.
"""

import argparse
import math

import torch

from morph.config.frame_list import parse_frame_spec
from morph.config.yaml_file import load_config
from morph.job import prepare_job
from morph.analysis.metrics import compare


def render(config, indices, **overrides):
    job = prepare_job(config.model_copy(update=overrides))
    return {i: torch.from_numpy(image) for i, image, _ in job.frames(indices)}


def worst(a, b):
    figures = [compare(a[i], b[i]) for i in a]
    return {"max_abs_diff": max(f["max_abs_diff"] for f in figures),
            "min_psnr": min(f["psnr"] for f in figures), "min_ssim": min(f["ssim"] for f in figures),
            "mean_psnr": sum(min(f["psnr"], 99.0) for f in figures) / len(figures)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default="configs/toy_demo.yaml")
    parser.add_argument("--frames", default=None)
    args = parser.parse_args()
    config = load_config(args.config, device="cpu")
    count = config.frame_count()
    indices = parse_frame_spec(args.frames, count) if args.frames else sorted({round(x * (count - 1) / 6)
                                                                                for x in range(7)})
    reference = render(config, indices, batch_size=1, dtype="float32")
    pairs = {"float32 batch 1 vs batch 8": render(config, indices, batch_size=8, dtype="float32"),
             "float32 vs float16": render(config, indices, batch_size=1, dtype="float16"),
             "float32 vs bfloat16": render(config, indices, batch_size=1, dtype="bfloat16")}
    print(f"{config.name}: frames {indices}")
    for label, other in pairs.items():
        w = worst(reference, other)
        psnr = "inf" if math.isinf(w["min_psnr"]) else f"{w['min_psnr']:.2f}"
        print(f"{label:28s} max abs diff {w['max_abs_diff']:3d}  min PSNR {psnr} dB  "
              f"mean PSNR {w['mean_psnr']:.2f} dB  min SSIM {w['min_ssim']:.4f}")


if __name__ == "__main__":
    main()
