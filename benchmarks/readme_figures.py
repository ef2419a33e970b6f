"""The figures docs/storms.md quotes for the storm map and `spacing: even` on the toy demo, measured again.

    python benchmarks/readme_figures.py [CONFIG]      # default configs/toy_demo.yaml; about 3 minutes on 2 cores

Renders CONFIG (a walk) into fresh folders, one run at a time: uniform; even (budget per segment);
even with `budget: walk`; and even rendered into a copy of the uniform output, whose "before" is then
measured rather than estimated. Prints the storm zones of the uniform walk, the spacing table as the
docs/storms.md has it (smoothness and max/median, with and without the steps across discontinuities, renders,
wall time), the discontinuities found, and how the estimated "before" compares with the rendered one.
Run it with nothing else on the machine: the wall times are the run's own.
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from morph.config.yaml_file import load_config
from morph.job import run_job


def run(config, out: Path, spacing) -> tuple[dict, float]:
    started = time.perf_counter()
    manifest = run_job(config.model_copy(update={"output": str(out), "spacing": spacing}), quiet=True)
    return manifest, time.perf_counter() - started


def figures(summary: dict | None) -> str:
    return f"{summary['smoothness']:.3f}, {summary['max_over_median']:.3g}" if summary else "n/a"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default="configs/toy_demo.yaml")
    config = load_config(parser.parse_args().config, device="cpu")
    even = type(config.spacing)(mode="even")
    walk = type(config.spacing)(mode="even", budget="walk")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        uniform, uniform_s = run(config, root / "uniform", type(config.spacing)())
        shutil.copytree(root / "uniform", root / "measured")
        measured, _ = run(config, root / "measured", walk)  # the uniform frames are in its store: a measured "before"
        rows = [("`uniform`", uniform["analysis"]["summary"], measured["spacing"]["uniform"], uniform["rendered"],
                 uniform_s)]
        for label, spacing, name in (("`even` (budget per segment)", even, "even"),
                                     ("`even`, `budget: walk`", walk, "walk")):
            manifest, seconds = run(config, root / name, spacing)
            rows.append((label, manifest["analysis"]["summary"], manifest["spacing"]["even"],
                         manifest["spacing"]["renders"], seconds))
            estimated = manifest["spacing"]["uniform"]
    zones = ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in uniform["analysis"]["storms"])
    print(f"storm zones of the uniform walk (steps): {zones}")
    print(f"uniform walk: smoothness {uniform['analysis']['summary']['smoothness']:.3f}, max/median "
          f"{uniform['analysis']['summary']['max_over_median']:.3g}, worst 10 % of steps hold "
          f"{100 * uniform['analysis']['summary']['worst_10_percent_share']:.0f} % of the change")
    print("| | smoothness | max / median | the same, without the steps across discontinuities | renders | wall |")
    print("|---|---|---|---|---|---|")
    for label, summary, spacing, renders, seconds in rows:
        print(f"| {label} | {summary['smoothness']:.3f} | {summary['max_over_median']:.3g} | "
              f"{figures(spacing['summary_without_discontinuities'])} | {renders} | {seconds:.1f} s |")
    for gap in measured["spacing"]["discontinuities"]:
        print(f"discontinuity: segment {gap['segment']}, t {gap['from_t']:.5f} - {gap['to_t']:.5f}, "
              f"change {gap['change']:.3f} ({100 * gap['change'] / sum(uniform['analysis']['distances']):.0f} % "
              "of the uniform walk's total)")
    rendered, guessed = np.array(uniform["analysis"]["distances"]), np.array(estimated["distances"])
    close = np.mean(np.abs(guessed / np.maximum(rendered, 1e-12) - 1) <= 0.25)
    print(f"estimated 'before' (budget: walk run): {100 * close:.0f} % of its steps within 25 % of the rendered "
          f"walk's; max/median {estimated['summary']['max_over_median']:.3g} against "
          f"{uniform['analysis']['summary']['max_over_median']:.3g} rendered")


if __name__ == "__main__":
    main()
