"""spacing: even beyond the demo it was tuned on: six varied toy walks, uniform against even, one table.

    python benchmarks/even_spacing_walks.py [--budget segment|walk]     # about 10 minutes on 2 cores

Each walk (two to four keyframes, other seeds, colours, shapes and sizes, 30 to 240 frames) is rendered
uniform into a fresh folder, then even into a copy of it (so even's "before" is the measured uniform walk and
its samples reuse the uniform frames). Per walk it prints smoothness and max/median of both, with and
without the steps across discontinuities, the extra renders even used and the discontinuities found; then
the medians over the walks. Run it with nothing else on the machine.
"""

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

from morph.config.jobs import validate
from morph.job import run_job

WALKS = [  # name, keyframes, frames, seed
    ("colours", ["a red circle", "a blue circle"], 30, 1),
    ("shapes", ["a green square", "a green triangle"], 60, 5),
    ("sizes", ["a small yellow circle", "a large yellow circle", "a small purple square"], 90, 7),
    ("loop", ["a orange triangle", "a blue square", "a orange triangle"], 120, 11),
    ("four", ["a red square", "a large green circle", "a small blue triangle", "a purple square"], 150, 13),
    ("long", ["a small red triangle", "a large orange square"], 240, 17),
]


def job(name: str, prompts: list[str], frames: int, seed: int, out: Path, spacing):
    return validate({"name": name, "model": "toy", "prompts": prompts, "frames": frames, "seed": seed,
                     "num_inference_steps": 25, "guidance_scale": 5.0, "batch_size": 8, "device": "cpu",
                     "output": str(out), "spacing": spacing})


def calm(figures: dict) -> dict:
    """The figures without the steps across discontinuities, where there are any."""
    return figures["summary_without_discontinuities"] or figures["summary"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=["segment", "walk"], default="segment")
    budget = parser.parse_args().budget
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, prompts, frames, seed in WALKS:
            uniform_out, even_out = Path(folder) / f"{name}-uniform", Path(folder) / f"{name}-even"
            run_job(job(name, prompts, frames, seed, uniform_out, "uniform"), quiet=True)
            shutil.copytree(uniform_out, even_out)
            spacing = {"mode": "even", "budget": budget}
            manifest = run_job(job(name, prompts, frames, seed, even_out, spacing), quiet=True)
            record = manifest["spacing"]
            rows.append((name, len(prompts), frames, record["uniform"], record["even"], record["extra_renders"],
                         len(record["discontinuities"])))
    print(f"spacing: even, budget: {budget} (default extra renders: half the frame count)")
    print("| walk | keyframes | frames | uniform smoothness, max/median | even | without discontinuities: uniform "
          "| even | extra renders | discontinuities |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, keys, frames, uniform, even, extra, jumps in rows:
        cells = [f"{s['smoothness']:.3f}, {s['max_over_median']:.3g}"
                 for s in (uniform["summary"], even["summary"], calm(uniform), calm(even))]
        print(f"| {name} | {keys} | {frames} | {' | '.join(cells)} | {extra} | {jumps} |")
    for label, pick in (("with", lambda f: f["summary"]), ("without", calm)):
        print(f"median smoothness {label} discontinuities: uniform "
              f"{statistics.median(pick(u)['smoothness'] for _, _, _, u, _, _, _ in rows):.3f}, even "
              f"{statistics.median(pick(e)['smoothness'] for _, _, _, _, e, _, _ in rows):.3f}")


if __name__ == "__main__":
    main()
