"""`morph explain`: why a rendered walk jumped where it did, attributed to the words of its prompts, from its output
folder (analysis/attribution.py does the work; `analysis.explain: true` does the same after a run)."""

from pathlib import Path

from .analysis.attribution import attribute, biggest_steps, publish
from .analysis.respace import use_placement
from .config.common_keys import OUTER_UNEXPLAINED
from .config.jobs import validate
from .errors import MorphError
from .files import read_walk
from .output.manifest import write_manifest
from .output.report import write_report
from .render.store import FrameStore, OutputLock


def chosen_steps(output: Path, steps: list[int], top: int) -> tuple[dict, list[int]]:
    """The walk's manifest and the steps to explain (`steps`, else the `top` biggest), checked before any model
    loads: a folder without a whole walk's storm map, an outer attention walk, or a step outside the walk, is one
    line."""
    manifest = read_walk(output, "an explanation")
    if (manifest["config"].get("attention") or {}).get("mode") == "outer":  # the manifest writes {mode, ...}
        raise MorphError(f"{output}: {OUTER_UNEXPLAINED}; render the walk with attention: inner to explain it")
    distances = (manifest.get("analysis") or {}).get("distances")
    if not distances:
        raise MorphError(f"{output}: its manifest has no storm map (a walk of fewer than 3 frames has none); "
                         "there is no step to explain")
    for step in steps:
        if not 0 <= step < len(distances):
            raise MorphError(f"--step {step}: the walk's steps are 0 to {len(distances) - 1} (step i is frame i -> "
                             "i + 1)")
    return manifest, list(dict.fromkeys(steps)) or biggest_steps(distances, top)


def explain_output(output: Path, steps: list[int], top: int, verbose: bool = False) -> list[dict]:
    """Attribute steps of the walk in `output` (chosen_steps), through its frame store; the records go into its
    manifest (analysis.attribution) and report.html, the renders into explain/."""
    manifest, steps = chosen_steps(output, steps, top)
    from .job import prepare_job  # torch and diffusers: only once the folder and the steps are known to be good

    # a step's groups are measured as its distance was: `morph analyze --metric` may have measured the walk again
    settings = {**(manifest["config"].get("analysis") or {}), "metric": manifest["analysis"]["metric"]}
    config = validate({**manifest["config"], "output": str(output), "analysis": settings},
                      default_name=manifest["name"])
    with OutputLock(output):
        job = prepare_job(config, verbose=verbose)
        use_placement(job, manifest)  # the frames the video shows, which the distances were measured between
        store = FrameStore(output)
        records = attribute(job, store, steps, manifest["analysis"]["distances"])
        publish(records, store, output)
        manifest["analysis"]["attribution"] = records
        manifest["report"] = str(write_report(output, manifest))
        write_manifest(output, manifest)
    return records
