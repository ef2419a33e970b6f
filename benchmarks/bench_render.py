"""Throughput of morph's render loop against the bare model underneath it.

    python benchmarks/bench_render.py [--frames 40]     # CPU: built-in tiny model, 256 x 256, 10 steps
    python benchmarks/bench_render.py --sd15-shaped      # CUDA: Stable-Diffusion-1.5-shaped random weights
    python benchmarks/bench_render.py --overhead [--rounds 5]  # CPU: morph / bare at 256 x 256, 2 steps, batch 8

CPU: (a) one pipeline call per frame; (b) at batch 1, 4, 8, 16, the bare pipeline calls on the same
conditionings (no files written) against morph's whole render loop (PNGs + MP4), and their ratio,
the overhead (target <= 1.05); (c) peak resident memory of whole runs at N=40 and N=400 frames.
--overhead: only (b) at 256 x 256, 2 steps, batch 8, where the host's work weighs most: the best of
--rounds runs of the bare calls and of morph, taken in turn so that the machine's load weighs on both.

--sd15-shaped: builds a diffusers folder with SD 1.5's exact shapes (UNet 860 M, VAE 84 M, CLIP
ViT-L text encoder 123 M parameters) and random float16 weights once (--cache), so every FLOP and
byte is the real model's, then renders 512 x 512, 25 steps, PNDM, guidance 7.5 and prints side by
side: the notebook loop, morph eager at batch 1 / 8 / auto, morph with compile: true, the bare
model (UNet x 25 with CFG + VAE decode, nothing else) eager and compiled, morph / ceiling, and the
peak GPU memory of each run.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from morph.config.jobs import validate

PROMPTS = ["a photo of a cat", "a drawing of a dog in kyoto"]


def job_config(frames, batch_size, device, out, model="tiny", size=64, steps=10, **extra):
    return validate({"name": "bench", "model": model, "prompts": PROMPTS, "frames": frames, "height": size,
                     "width": size, "num_inference_steps": steps, "batch_size": batch_size, "device": device,
                     "output": out, **extra})


def synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def pipeline_calls(config, per_call):
    """Frames/s of plain pipeline calls, `per_call` frames each, on morph's conditionings; nothing written."""
    from morph.job import prepare_job

    job = prepare_job(config)
    pipe, s, r = job.loaded.pipe, job.settings, job.renderer
    n = len(job.path)
    conds = job.path.conditionings(list(range(n))).to(pipe.device, pipe.unet.dtype)
    call = lambda c: pipe(prompt_embeds=c, negative_prompt_embeds=r.negative.expand(len(c), -1, -1),  # noqa: E731
                          latents=r.latent.expand(len(c), -1, -1, -1), height=s.height, width=s.width,
                          num_inference_steps=s.num_inference_steps, guidance_scale=s.guidance_scale,
                          output_type="np")
    call(conds[:per_call])  # warm-up: first-call allocations and kernel selection
    synchronize(pipe.device)
    started = time.perf_counter()
    for i in range(0, n, per_call):
        call(conds[i:i + per_call])
    synchronize(pipe.device)
    return n / (time.perf_counter() - started)


def morph_run(config):
    """morph's whole render loop: (frames/s, frames/s after the first batch, peak GPU memory in GiB or None)."""
    from morph.job import run_job

    cuda = torch.device(config.device).type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    manifest = run_job(config, quiet=True, fresh=True)  # every frame rendered, none taken from the store
    t = manifest["timings"]
    rest = manifest["rendered"] - manifest["batch_size"]
    steady = rest / (t["render_s"] - t["first_batch_s"]) if rest > 0 else None
    peak = torch.cuda.max_memory_allocated() / 1024**3 if cuda else None
    return manifest["timings"]["frames_per_s"], steady, peak, manifest


def peak_memory_mib(frames, device):
    """Run a whole job (256 x 256 frames, 2 steps) in a fresh process and return its peak RSS.

    At 256 px, holding 400 frames would take 75 MiB more than holding 40: a leak would show.
    """
    code = ("import resource, sys; from morph.job import run_job; "
            "sys.path.insert(0, 'benchmarks'); from bench_render import job_config; "
            f"run_job(job_config({frames}, 8, {device!r}, sys.argv[1], size=256, steps=2), quiet=True); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    with tempfile.TemporaryDirectory() as out:
        result = subprocess.run([sys.executable, "-c", code, out], capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def cpu_benchmark(args):
    figures = {"device": "cpu", "frames": args.frames, "size": 256}
    with tempfile.TemporaryDirectory() as out:
        naive = pipeline_calls(job_config(args.frames, 1, "cpu", out, size=256), 1)
        figures["naive_frames_per_s"] = round(naive, 2)
        print(f"(a) one pipeline call per frame: {naive:.2f} frames/s")
        for batch in (1, 4, 8, 16):
            config = job_config(args.frames, batch, "cpu", out, size=256)
            bare = pipeline_calls(config, batch)
            ours = morph_run(config)[0]
            figures[f"batch_{batch}"] = {"bare_frames_per_s": round(bare, 2), "morph_frames_per_s": ours,
                                         "overhead": round(bare / ours, 3)}
            print(f"(b) batch {batch:2d}: bare pipeline calls {bare:6.2f} frames/s, morph run {ours:6.2f} frames/s, "
                  f"morph time / bare time = {bare / ours:.3f}")
    for n in (40, 400):
        mib = peak_memory_mib(n, "cpu")
        figures[f"peak_rss_mib_N{n}"] = round(mib, 1)
        print(f"(c) peak memory of a whole run at 256 x 256, N={n}: {mib:.0f} MiB")
    return figures


def host_overhead(args) -> dict:
    """morph's render time over the bare pipeline calls' on the same frames (256 x 256, 2 steps, batch 8): the best of
    `args.rounds` runs of each, interleaved."""
    bare, ours, steady = [], [], []
    with tempfile.TemporaryDirectory() as out:
        config = job_config(args.frames, 8, "cpu", out, size=256, steps=2)
        for turn in range(args.rounds):
            bare.append(pipeline_calls(config, 8))
            fps, after_first, *_ = morph_run(config)
            ours.append(fps)
            steady.append(after_first or fps)
            print(f"round {turn + 1}: bare pipeline calls {bare[-1]:.2f} frames/s, morph run {ours[-1]:.2f} frames/s "
                  f"({steady[-1]:.2f} after its first batch)", flush=True)
    overhead, steady_overhead = max(bare) / max(ours), max(bare) / max(steady)
    print(f"(b) 256 x 256, 2 steps, batch 8, best of {args.rounds}: morph time / bare time = {overhead:.3f} "
          f"({steady_overhead:.3f} after morph's first batch)")
    return {"device": "cpu", "frames": args.frames, "size": 256, "num_inference_steps": 2, "batch_size": 8,
            "bare_frames_per_s": [round(b, 2) for b in bare], "morph_frames_per_s": ours,
            "morph_frames_per_s_after_first_batch": [round(s, 2) for s in steady],
            "overhead": round(overhead, 3), "overhead_after_first_batch": round(steady_overhead, 3)}


def build_sd15_shaped(folder: Path, device: str, tiny: bool = False) -> Path:
    """A diffusers folder with SD 1.5's shapes and random float16 weights (built on `device`, saved once); `tiny`:
    the built-in tiny model's instead (--smoke: the script itself tried on a CPU in a minute)."""
    if (folder / "model_index.json").exists():
        return folder
    if tiny:
        from morph.models.tiny import build_pipeline

        build_pipeline().to(dtype=torch.float16).save_pretrained(folder)
        return folder
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from morph.models.tiny import build_tokenizer

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)  # otherwise SD 1.5's defaults
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                            sample_size=512)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
            max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768, bos_token_id=0, eos_token_id=1,
            pad_token_id=1))
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                              steps_offset=1, set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(vae=vae.half(), text_encoder=text_encoder.half(), tokenizer=build_tokenizer(),
                                   unet=unet.half(), scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    partial = folder.with_name(folder.name + ".partial")
    pipe.save_pretrained(partial)
    partial.rename(folder)  # a folder that exists is complete
    return folder


def bare_model(model_folder, device, batch, size, steps, guidance, compiled):
    """Frames/s of the UNet x steps with CFG + VAE decode on one batch, nothing else: the ceiling."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(model_folder, dtype=torch.float16, safety_checker=None).to(device)
    unet, vae = pipe.unet, pipe.vae
    if compiled:
        unet.to(memory_format=torch.channels_last)
        vae.to(memory_format=torch.channels_last)
        unet, decode = torch.compile(unet, dynamic=False), torch.compile(vae.decoder, dynamic=False)
    else:
        decode = vae.decoder
    emb = torch.randn(2 * batch, 77, unet.config.cross_attention_dim, device=device, dtype=torch.float16)
    shape = (batch, 4, size // 8, size // 8)

    def one_batch():
        scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
        scheduler.set_timesteps(steps, device=device)
        x = torch.randn(shape, device=device, dtype=torch.float16) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            noise = unet(scheduler.scale_model_input(torch.cat([x, x]), t), t, encoder_hidden_states=emb).sample
            uncond, cond = noise.chunk(2)
            x = scheduler.step(uncond + guidance * (cond - uncond), t, x).prev_sample
        return decode(vae.post_quant_conv(x / vae.config.scaling_factor))

    with torch.inference_mode():
        one_batch()  # warm-up (and compilation)
        synchronize(device)
        started = time.perf_counter()
        repeats = 3
        for _ in range(repeats):
            one_batch()
        synchronize(device)
    return repeats * batch / (time.perf_counter() - started)


def gpu_benchmark(args):
    device = args.device or "cuda"
    folder = str(build_sd15_shaped(Path(args.cache).expanduser(), device, tiny=args.smoke))
    size, steps = args.size, args.steps
    name = torch.cuda.get_device_name() if torch.device(device).type == "cuda" else "cpu"
    shapes = "tiny (smoke)" if args.smoke else "SD-1.5-shaped"
    figures = {"device": name, "size": size, "num_inference_steps": steps, "model": f"{shapes}, random fp16"}
    print(f"{name}: {shapes} model, {size} x {size}, {steps} steps, PNDM, guidance 7.5")
    rows = []

    def save():
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")

    def measured(label, fps, steady=None, peak=None):
        """One row of the table, printed and (--json) saved as soon as it is measured: a run cut off keeps it."""
        rows.append((label, fps, steady, peak))
        figures[label] = {"frames_per_s": round(fps, 3), "after_first_batch": steady and round(steady, 3),
                          "peak_gib": peak and round(peak, 2)}
        print(f"  {label}: {fps:.2f} frames/s", flush=True)
        save()

    with tempfile.TemporaryDirectory() as out:
        common = dict(model=folder, size=size, steps=steps, guidance_scale=7.5)
        short, long = args.frames // 3 or 1, args.frames
        measured("notebook loop, one pipeline call per frame", pipeline_calls(job_config(short, 1, device, out,
                                                                                         **common), 1))
        ran = {}  # what each morph run measured: (frames/s after the first batch, else overall; its batch size)
        for label, frames, batch, extra in (("morph eager, batch 1", short, 1, {}),
                                            ("morph eager, batch 8", long, 8, {}),
                                            ("morph eager, batch auto", long, "auto", {}),
                                            ("morph compile: true, batch 8", long, 8, {"compile": True})):
            fps, steady, peak, manifest = morph_run(job_config(frames, batch, device, out, **common, **extra))
            measured(f"{label} (ran at {manifest['batch_size']})", fps, steady, peak)
            ran[label] = (round(steady or fps, 3), manifest["batch_size"])
        eager = bare_model(folder, device, 8, size, steps, 7.5, compiled=False)
        measured("bare model, batch 8, eager (ceiling)", eager)
        # the GPU check skips this second cold compile of the UNet (about a minute): morph's compiled row stays
        compiled = None if args.one_compiled_row else bare_model(folder, device, 8, size, steps, 7.5, compiled=True)
        if compiled:
            measured("bare model, batch 8, channels_last + compiled (ceiling)", compiled)
    best = max(("morph eager, batch 1", "morph eager, batch 8"), key=lambda label: ran[label][0])
    figures["summary"] = {  # the fields a results file records (benchmarks/gpu_results.py)
        "morph_eager_fps": ran["morph eager, batch 8"][0], "morph_eager_batch": 8,
        "bare_eager_fps": round(eager, 3), "bare_batch": 8,
        "morph_compiled_fps": ran["morph compile: true, batch 8"][0], "morph_compiled_batch": 8,
        "bare_compiled_fps": compiled and round(compiled, 3),
        "auto_batch_fps": ran["morph eager, batch auto"][0], "auto_batch_size": ran["morph eager, batch auto"][1],
        "best_fixed_fps": ran[best][0], "best_fixed_batch": ran[best][1]}
    save()
    print(f"{'what ran':<58} {'frames/s':>9} {'after 1st batch':>16} {'peak GiB':>9}")
    for label, fps, steady, peak in rows:
        print(f"{label:<58} {fps:>9.2f} {steady or float('nan'):>16.2f} {peak or float('nan'):>9.1f}")
    eager_morph, compiled_morph = rows[2][2] or rows[2][1], rows[4][2] or rows[4][1]
    print(f"morph eager / eager ceiling: {eager_morph / eager:.2f}" + (
        f"; morph compiled / compiled ceiling: {compiled_morph / compiled:.2f}" if compiled else ""))
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sd15-shaped", action="store_true", help="the GPU benchmark with SD 1.5's shapes")
    parser.add_argument("--frames", type=int, help="frames per run (default 40 on the CPU, 64 with --sd15-shaped)")
    parser.add_argument("--device", help="--sd15-shaped: the device (default cuda; cpu only to try the script)")
    parser.add_argument("--cache", default="~/.cache/morph/sd15-shaped", help="where the SD-1.5-shaped folder is kept")
    parser.add_argument("--size", type=int, default=512, help="--sd15-shaped: image size")
    parser.add_argument("--steps", type=int, default=25, help="--sd15-shaped: denoising steps")
    parser.add_argument("--json", help="--sd15-shaped: write the figures here, each row as soon as it is measured")
    parser.add_argument("--one-compiled-row", action="store_true",
                        help="--sd15-shaped: skip the bare model's compiled ceiling (morph's compile: true row stays)")
    parser.add_argument("--smoke", action="store_true",
                        help="--sd15-shaped with the tiny model's shapes: the steps tried on a CPU, not a measurement")
    parser.add_argument("--overhead", action="store_true", help="CPU: only morph / bare at 256 px, 2 steps, batch 8")
    parser.add_argument("--rounds", type=int, default=5, help="--overhead: runs of each, interleaved; the best counts")
    args = parser.parse_args()
    args.frames = args.frames or (64 if args.sd15_shaped else 40)
    if args.sd15_shaped and (args.device or "cuda").startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"bench_render.py: --sd15-shaped measures a CUDA GPU, and torch {torch.__version__} sees none; run "
                 "it on a GPU machine (or add --device cpu to try the script itself)")
    figures = gpu_benchmark(args) if args.sd15_shaped else host_overhead(args) if args.overhead else \
        cpu_benchmark(args)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
