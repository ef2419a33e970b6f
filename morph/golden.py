"""Regression renders: save chosen frames of a job as goldens, re-render them later and compare."""

import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .config.frame_list import parse_frame_spec
from .config.jobs import JobConfig
from .errors import MorphError
from .files import write_atomic
from .job import prepare_job
from .output.manifest import environment
from .analysis.metrics import compare, heat_map
from .media.video import read_png, write_png

DEFAULT_FRAMES = 16
GOLDEN_FILE = "golden.json"


@dataclass(frozen=True)
class Tolerance:
    name: str
    max_abs_diff: int | None = None  # largest allowed per-pixel difference (0..255)
    min_psnr: float | None = None  # dB
    min_ssim: float | None = None

    def passes(self, figures: dict) -> bool:
        if figures["max_abs_diff"] == 0:
            return True
        return ((self.max_abs_diff is None or figures["max_abs_diff"] <= self.max_abs_diff)
                and (self.min_psnr is None or figures["psnr"] >= self.min_psnr)
                and (self.min_ssim is None or figures["ssim"] >= self.min_ssim))


# Why these numbers: docs/golden.md, "Regression renders against golden frames".
PRESETS = {
    "exact": Tolerance("exact", max_abs_diff=0),
    "same-device": Tolerance("same-device", max_abs_diff=8, min_psnr=45.0, min_ssim=0.995),
    "cross-device": Tolerance("cross-device", min_psnr=35.0, min_ssim=0.97),
}


@dataclass
class FrameCheck:
    index: int
    t: float
    figures: dict
    passed: bool
    image: np.ndarray  # the new render, kept for --update and the report
    reference: np.ndarray  # the golden it was compared with


@dataclass
class CheckResult:
    frames: list[FrameCheck]
    tolerance: Tolerance
    environment: dict  # where the new renders were made (device, dtype, versions)
    model: dict
    notes: list[str] = field(default_factory=list)  # environment mismatches and other things worth saying
    report_dir: Path | None = None

    @property
    def passed(self) -> bool:
        return all(f.passed for f in self.frames)


def golden_dir(config: JobConfig, directory: str | Path | None = None) -> Path:
    """Where a job's goldens live: `directory`, or golden/<name>/ next to the config file."""
    if directory:
        return Path(directory)
    return Path(config.source or ".").parent / "golden" / config.name


def pick_frames(count: int, spec: str | None = None, every: int | None = None) -> list[int]:
    """The frames to keep: a spec, every K-th, or about 16 spread evenly; first and last always included."""
    if spec:
        return parse_frame_spec(spec, count)
    if every:
        return sorted(set(range(0, count, every)) | {count - 1})
    return sorted({round(x) for x in np.linspace(0, count - 1, min(DEFAULT_FRAMES, count))})


def _sha256(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


def save_golden(config: JobConfig, indices: list[int], directory: Path, verbose: bool = False) -> dict:
    """Render `indices` and store them as lossless PNGs with golden.json. They are rendered into a folder of their
    own first and moved in only once all are: a failed save leaves the old goldens as they were."""
    job = prepare_job(config, verbose=verbose)
    new = directory.with_name(f".{directory.name}.new")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    try:
        golden = _render_goldens(job, config, indices, new)
        directory.mkdir(parents=True, exist_ok=True)
        kept = {f["file"] for f in golden["frames"]}
        for frame in kept:
            os.replace(new / frame, directory / frame)
        os.replace(new / GOLDEN_FILE, directory / GOLDEN_FILE)
        for stale in directory.glob("*.png"):  # the old goldens' frames that the new ones do not have
            if stale.name not in kept:
                stale.unlink()
    finally:
        shutil.rmtree(new, ignore_errors=True)
    return golden


def _render_goldens(job, config: JobConfig, indices: list[int], directory: Path) -> dict:
    frames = []
    for i, image, _ in job.frames(indices):
        describe = job.path.describe(i)
        write_png(directory / describe["file"], image)
        frames.append({"index": i, "t": describe["t"], "file": describe["file"], "sha256": _sha256(image)})
    golden = {
        "name": config.name,
        "config_hash": config.pixel_hash(),
        "config": config.pixel_keys(),
        "batch_size": job.renderer.batch_size,
        "model": _model_record(job),
        **environment(job.loaded.pipe),
        "frames": frames,
    }
    _write_golden_file(directory, golden)
    return golden


def _write_golden_file(directory: Path, golden: dict) -> None:
    write_atomic(directory / GOLDEN_FILE, lambda path: path.write_text(json.dumps(golden, indent=2)))


def _model_record(job) -> dict:
    return {"name": job.loaded.model, "location": job.loaded.location, "revision": job.loaded.revision}


def load_golden(directory: Path) -> dict:
    path = directory / GOLDEN_FILE
    if not path.exists():
        raise MorphError(f"no goldens at {directory} ({GOLDEN_FILE} missing); make them with `morph golden save CONFIG`")
    return json.loads(path.read_text())


def config_changes(golden: dict, config: JobConfig) -> list[str]:
    """'key: old -> new' for every pixel-deciding key that differs from the goldens' config. A key the goldens
    do not have (added to morph after they were made) that is at its default changes nothing."""
    new, fields = config.pixel_keys(), type(config).model_fields
    old = {**{k: v for k, v in new.items() if k in fields and v == fields[k].get_default(call_default_factory=True)},
           **golden["config"]}
    return [f"{k}: {json.dumps(old.get(k))} -> {json.dumps(new.get(k))}"
            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def choose_tolerance(golden: dict, env: dict, config: JobConfig, preset: str | None) -> tuple[Tolerance, list[str]]:
    """The preset asked for, else the config's, else same-device or cross-device by the environments compared."""
    notes = []
    golden_device, device = golden["device"].split(":")[0], env["device"].split(":")[0]
    moved = (golden_device, golden["dtype"]) != (device, env["dtype"])
    if moved:
        notes.append(f"environment differs: goldens made on {golden['device']} {golden['dtype']}, "
                     f"this check runs on {env['device']} {env['dtype']}")
    for lib, version in env["versions"].items():
        if golden["versions"].get(lib) != version and lib in ("torch", "diffusers", "transformers"):
            notes.append(f"{lib} {golden['versions'].get(lib)} -> {version}")
    name = preset or config.golden.tolerance or ("cross-device" if moved else "same-device")
    overrides = {k: getattr(config.golden, k) for k in ("max_abs_diff", "min_psnr", "min_ssim")
                 if getattr(config.golden, k) is not None}
    tolerance = replace(PRESETS[name], **overrides)
    if overrides:
        tolerance = replace(tolerance, name=f"{name} + config overrides")
    return tolerance, notes


def check_golden(config: JobConfig, directory: Path, preset: str | None = None, force: bool = False,
                 report_dir: Path | None = None, verbose: bool = False) -> CheckResult:
    """Re-render only the golden frames and judge each against its golden PNG."""
    golden = load_golden(directory)
    changes = config_changes(golden, config)
    if changes and not force:
        raise MorphError(f"the config differs from the one the goldens were made with ({'; '.join(changes)}); "
                         "re-save the goldens, or pass --force to compare anyway")
    count = config.frame_count()
    indices = [f["index"] for f in golden["frames"]]
    if max(indices) >= count:
        raise MorphError(f"the goldens include frame {max(indices)}, but this job has only {count} frames")
    job = prepare_job(config.model_copy(update={"batch_size": golden.get("batch_size", config.batch_size)}),
                      verbose=verbose)
    env = environment(job.loaded.pipe)
    tolerance, notes = choose_tolerance(golden, env, config, preset)
    notes = [f"config changed (forced): {c}" for c in changes] + notes
    by_index = {f["index"]: f for f in golden["frames"]}
    checks = []
    for i, image, _ in job.frames(indices):
        reference = read_png(directory / by_index[i]["file"])
        if reference.shape != image.shape:
            figures = {"max_abs_diff": 255, "mean_abs_diff": 255.0, "psnr": 0.0, "ssim": 0.0}  # size changed
        else:
            figures = compare(torch.from_numpy(reference), torch.from_numpy(image))
        checks.append(FrameCheck(i, by_index[i]["t"], figures, tolerance.passes(figures), image, reference))
    result = CheckResult(checks, tolerance, env, _model_record(job), notes)
    result.report_dir = _write_report(result, directory, report_dir or config.output_dir / "golden-report")
    return result


def _write_report(result: CheckResult, directory: Path, report_dir: Path) -> Path:
    """report.json, and golden | new | amplified difference side by side for every failing frame."""
    report_dir.mkdir(parents=True, exist_ok=True)
    for stale in report_dir.glob("*.png"):
        stale.unlink()
    for check in result.frames:
        if check.passed or check.reference.shape != check.image.shape:
            continue
        heat = heat_map(torch.from_numpy(check.reference), torch.from_numpy(check.image)).numpy()
        write_png(report_dir / f"{check.index:05d}_golden_new_diff.png",
                  np.concatenate([check.reference, check.image, heat], axis=1))
    report = {
        "passed": result.passed,
        "tolerance": vars(result.tolerance),
        "notes": result.notes,
        "golden_dir": str(directory),
        "frames": [{"index": c.index, "t": c.t, **{k: (None if isinstance(v, float) and math.isinf(v) else v)
                                                    for k, v in c.figures.items()}, "passed": c.passed}
                   for c in result.frames],
    }
    (report_dir / "report.json").write_text(json.dumps(report, indent=2))
    return report_dir


def update_golden(config: JobConfig, directory: Path, result: CheckResult) -> None:
    """Accept the renders of a check as the new goldens."""
    golden = load_golden(directory)
    by_index = {f["index"]: f for f in golden["frames"]}
    for check in result.frames:
        write_png(directory / by_index[check.index]["file"], check.image)
        by_index[check.index]["sha256"] = _sha256(check.image)
    golden.update(config_hash=config.pixel_hash(), config=config.pixel_keys(), model=result.model,
                  **result.environment)
    _write_golden_file(directory, golden)


def format_table(result: CheckResult) -> str:
    """The terminal table: frame, t, max and mean abs diff, PSNR, SSIM, verdict."""
    lines = [f"{'frame':>6} {'t':>7} {'max':>4} {'mean':>7} {'PSNR dB':>8} {'SSIM':>7}  verdict"]
    for c in result.frames:
        f = c.figures
        verdict = "identical" if f["max_abs_diff"] == 0 else "pass" if c.passed else "REGRESSED"
        lines.append(f"{c.index:>6} {c.t:>7.4f} {f['max_abs_diff']:>4} {f['mean_abs_diff']:>7.3f} "
                     f"{f['psnr']:>8.2f} {f['ssim']:>7.4f}  {verdict}")
    return "\n".join(lines)
