"""Throughput and memory of `morph run` on the built-in tiny model (CPU unless --device says otherwise).

    python benchmarks/bench_render.py [--frames 40] [--device cpu]

(a) a naive loop calling the diffusers pipeline once per frame with prompt_embeds;
(b) morph's job runner (render + PNG + MP4) at batch sizes 1, 4, 8, 16;
(c) peak resident memory of whole runs at N=40 and N=400 frames (256 x 256), each in a fresh process.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time

from morph.config import validate


def job_config(frames, batch_size, device, out, size=64, steps=10):
    return validate({"name": "bench", "model": "tiny", "prompts": ["a photo of a cat", "a drawing of a dog in kyoto"],
                     "frames": frames, "height": size, "width": size, "num_inference_steps": steps,
                     "batch_size": batch_size, "device": device, "output": out})


def naive_loop(config):
    from morph.job import prepare_job

    job = prepare_job(config, quiet=True)
    pipe, s = job.loaded.pipe, job.settings
    conds = job.path.conditionings(list(range(len(job.path))))
    started = time.perf_counter()
    for i in range(len(job.path)):
        pipe(prompt_embeds=conds[i:i + 1].to(pipe.device), negative_prompt_embeds=job.negative[None].to(pipe.device),
             latents=job.latent.to(pipe.device), height=s.height, width=s.width,
             num_inference_steps=s.num_inference_steps, guidance_scale=s.guidance_scale, output_type="np")
    return len(job.path) / (time.perf_counter() - started)


def peak_memory_mib(frames, device):
    """Run a whole job (256 x 256 frames, 2 steps) in a fresh process and return its peak RSS.

    At 256 px, holding 400 frames would take 75 MiB more than holding 40: a leak would show.
    """
    code = ("import json, resource, sys; from morph.job import run_job; "
            "sys.path.insert(0, 'benchmarks'); from bench_render import job_config; "
            f"run_job(job_config({frames}, 8, {device!r}, sys.argv[1], size=256, steps=2), quiet=True); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    with tempfile.TemporaryDirectory() as out:
        result = subprocess.run([sys.executable, "-c", code, out], capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    from morph.job import run_job

    figures = {"frames": args.frames, "device": args.device}
    with tempfile.TemporaryDirectory() as out:
        naive = naive_loop(job_config(args.frames, 1, args.device, out))
        figures["naive_frames_per_s"] = round(naive, 2)
        print(f"(a) naive loop, one pipeline call per frame: {naive:.2f} frames/s")
        for batch in (1, 4, 8, 16):
            manifest = run_job(job_config(args.frames, batch, args.device, out), quiet=True)
            fps = manifest["timings"]["frames_per_s"]
            figures[f"morph_batch_{batch}_frames_per_s"] = fps
            print(f"(b) morph run, batch_size {batch:2d}: {fps:.2f} frames/s  (b/a = {fps / naive:.2f})")
    for n in (40, 400):
        mib = peak_memory_mib(n, args.device)
        figures[f"peak_rss_mib_N{n}"] = round(mib, 1)
        print(f"(c) peak memory of a whole run at 256 x 256, N={n}: {mib:.0f} MiB")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
