"""Attention interpolation on eight toy walks (not even_spacing_walks.py's six): slerp, inner and outer, each at
uniform and even spacing, at the same frame budget; one table per walk and the medians.

    python benchmarks/attention_walks.py            # every walk at the config's defaults: 26 minutes on 2 cores
    python benchmarks/attention_walks.py --walks hues,trio --frames 16 --no-even          # a reduced set
    python benchmarks/attention_walks.py --modes inner --settings until=0.5 fuse_self=true  # settings compared
    python benchmarks/attention_walks.py --modes inner --settings interpolation=lerp  # the walk's lerp, not slerp

Per walk and method: smoothness and max/median of the neighbour changes at uniform spacing, and at even spacing
without the steps across discontinuities (uniform's without them too); consistency (the mean neighbour change);
keyframe drift (how far the keyframes' own frames move from slerp's: the largest pixel difference, in 1/255); render
time against plain slerp (uniform, batch 8). Targets (issue 36): median smoothness at uniform >= slerp's + 0.10 and
largest step <= half of slerp's; with even spacing >= 0.90; time <= 1.5 x slerp. Run it with nothing else on the
machine.
"""

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from even_spacing_walks import calm, job  # noqa: E402  the same toy settings (25 steps, guidance 5, batch 8)

from morph.config.jobs import validate  # noqa: E402
from morph.job import run_job  # noqa: E402
from morph.media.video import read_png  # noqa: E402

WALKS = [  # name, keyframes, frames, seed
    ("hues", ["a yellow circle", "a purple circle"], 30, 3),
    ("turn", ["a blue triangle", "a red square"], 45, 21),
    ("grow", ["a small green circle", "a large green circle"], 60, 23),
    ("trio", ["a red triangle", "a green circle", "a blue square"], 75, 29),
    ("return", ["a purple square", "a small yellow triangle", "a purple square"], 90, 31),
    ("quartet", ["a orange circle", "a blue triangle", "a large red square", "a small green circle"], 120, 37),
    ("shift", ["a large purple triangle", "a small orange circle"], 180, 41),
    ("march", ["a small blue square", "a yellow circle", "a large red triangle", "a green square"], 240, 43),
]
def attention_job(name, prompts, frames, seed, out: Path, spacing, attention):
    """even_spacing_walks' toy job, with `attention` (None: plain slerp); its `interpolation`, if any, is the job's."""
    attention = dict(attention) if attention else None
    walk = {"interpolation": attention.pop("interpolation")} if attention and "interpolation" in attention else {}
    return validate({**job(name, prompts, frames, seed, out, spacing).to_dict(), "attention": attention, **walk})


def keyframe_drift(folder: Path, plain: Path, manifest: dict) -> float:
    """The largest pixel difference (in 1/255) between the keyframes' own frames here and in the plain walk."""
    ends = [r["file"] for r in manifest["frames"] if r["t"] in (0.0, 1.0)]
    return max(float(np.abs(read_png(folder / "frames" / f).astype(int) - read_png(plain / "frames" / f)).max())
               for f in ends)


def measure(walk, folder: Path, methods: dict, even: bool) -> dict:
    """Per method (name -> attention, None for slerp): uniform and even figures, consistency, keyframe drift, render
    seconds."""
    name, prompts, frames, seed = walk
    figures = {}
    for method, attention in methods.items():
        uniform_out = folder / f"{name}-{method}-uniform"
        manifest = run_job(attention_job(name, prompts, frames, seed, uniform_out, "uniform", attention), quiet=True)
        summary = manifest["analysis"]["summary"]
        figures[method] = {"uniform": summary, "consistency": summary["mean"],
                           "render_s": manifest["timings"]["render_s"],
                           "drift": keyframe_drift(uniform_out, folder / f"{name}-slerp-uniform", manifest)}
        if even:
            even_out = folder / f"{name}-{method}-even"
            shutil.copytree(uniform_out, even_out)  # even's samples reuse the uniform frames
            manifest = run_job(attention_job(name, prompts, frames, seed, even_out, "even", attention), quiet=True)
            figures[method]["even"] = calm(manifest["spacing"]["even"])
            figures[method]["uniform_calm"] = calm(manifest["spacing"]["uniform"])
    return figures


def setting(text: str) -> dict:
    """'until=0.5,fuse_self=true,interpolation=lerp' -> {until: 0.5, fuse_self: True, interpolation: lerp} ('' : the
    config's defaults)."""
    pairs = [item.split("=") for item in text.split(",") if item]
    read = {"fuse_self": lambda v: v == "true", "interpolation": str}
    return {k: read.get(k, float)(v) for k, v in pairs}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--walks", default=",".join(w[0] for w in WALKS), help="these walks only, by name, comma-separated")
    parser.add_argument("--frames", type=int, default=None, help="every walk this many frames (a reduced set)")
    parser.add_argument("--no-even", action="store_true", help="uniform spacing only")
    parser.add_argument("--modes", default="inner,outer", help="the attention modes measured, comma-separated")
    parser.add_argument("--settings", nargs="+", type=setting, default=[{}],
                        metavar="until=U,fuse_self=B,interpolation=I",
                        help="attention settings to compare, inner and outer each (default: the config's)")
    args = parser.parse_args()
    methods = {"slerp": None}
    for options in args.settings:
        label = ",".join(f"{k}={v}" for k, v in options.items())
        methods.update({f"{mode}({label})" if label else mode: {"mode": mode, **options}
                        for mode in args.modes.split(",")})
    walks = [(name, prompts, args.frames or frames, seed) for name, prompts, frames, seed in WALKS
             if name in args.walks.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for walk in walks:
            rows.append((walk, measure(walk, Path(folder), methods, not args.no_even)))
            print_walk(*rows[-1], even=not args.no_even)
    print(f"medians over {len(rows)} walks")
    for method in methods:
        median = lambda pick: statistics.median(pick(f[method], f["slerp"]) for _, f in rows)  # noqa: E731
        line = (f"{method}: uniform smoothness {median(lambda m, s: m['uniform']['smoothness']):.3f}, "
                f"largest step / slerp's {median(lambda m, s: m['uniform']['max'] / s['uniform']['max']):.2f}, "
                f"max/median {median(lambda m, s: m['uniform']['max_over_median']):.3g}, "
                f"consistency {median(lambda m, s: m['consistency']):.4f}, "
                f"keyframe drift {median(lambda m, s: m['drift']):.0f}/255, "
                f"time / slerp {median(lambda m, s: m['render_s'] / s['render_s']):.2f}")
        if not args.no_even:
            line += (f", uniform smoothness without discontinuities "
                     f"{median(lambda m, s: m['uniform_calm']['smoothness']):.3f}, "
                     f"even smoothness {median(lambda m, s: m['even']['smoothness']):.3f}")
        print(line, flush=True)


def print_walk(walk, figures: dict, even: bool) -> None:
    name, prompts, frames, seed = walk
    print(f"{name} ({len(prompts)} keyframes, {frames} frames, seed {seed})")
    for method, f in figures.items():
        u = f["uniform"]
        line = (f"  {method}: uniform {u['smoothness']:.3f}, max {u['max']:.4f}, max/median {u['max_over_median']:.3g}; "
                f"consistency {f['consistency']:.4f}; drift {f['drift']:.0f}/255; "
                f"time x{f['render_s'] / figures['slerp']['render_s']:.2f}")
        if even:
            line += (f"; without discontinuities: uniform {f['uniform_calm']['smoothness']:.3f}, "
                     f"even {f['even']['smoothness']:.3f}, max/median {f['even']['max_over_median']:.3g}")
        print(line, flush=True)


if __name__ == "__main__":
    main()
