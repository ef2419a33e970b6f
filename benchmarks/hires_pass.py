"""Render time of a walk with a hires pass (2x, both upscales) against the plain walk, and with its base frames
reused (strength raised). Printed, not a test.

    python benchmarks/hires_pass.py [--model toy] [--frames 8] [--steps 10] [--size 64] [--device cpu]
"""

import argparse
import json
import tempfile
from pathlib import Path

from morph.config.jobs import validate
from morph.job import run_job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    walk = {"model": args.model, "prompts": ["a red circle", "a blue square"], "frames": args.frames,
            "num_inference_steps": args.steps, "height": args.size, "width": args.size, "device": args.device}
    runs = [("plain", None, "plain"), ("hires 2x latent", {"upscale": "latent"}, "latent"),
            ("hires 2x latent, strength 0.5, base frames reused", {"upscale": "latent", "strength": 0.5}, "latent"),
            ("hires 2x lanczos", {"upscale": "lanczos"}, "lanczos")]
    with tempfile.TemporaryDirectory() as folder:
        results = {}
        for label, hires, output in runs:
            config = validate({**walk, "name": "bench", "output": str(Path(folder) / output), "hires": hires})
            timings = run_job(config, quiet=True)["timings"]
            results[label] = timings["render_s"]
            ratio = f" ({timings['render_s'] / results['plain']:.2f}x plain)" if hires else ""
            print(f"{label}: render {timings['render_s']:.2f} s{ratio}", flush=True)
        print(json.dumps({"walk": walk, "render_s": results}))


if __name__ == "__main__":
    main()
