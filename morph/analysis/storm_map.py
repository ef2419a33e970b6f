"""The storm map of a rendered walk: distances between neighbouring frames, measured as a run's frames arrive
(RunningStorms) or read back from its lossless PNG frames (`morph analyze`), and the pictures that show them:
storm.png (the distance curve) and filmstrip.png (the biggest jumps)."""

import functools
import queue
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import MorphError
from ..files import write_atomic
from .sheet import contact_sheet
from .storm import DISTANCES, Distance, blinks, downscale, storm_zones, summarize
from ..media.video import read_png, write_png

METRICS = ("ssim", "pixel", "lpips")
JUMPS_SHOWN = 3  # rows of the filmstrip


@dataclass
class Analysis:
    metric: str
    distances: list[float]  # d[i]: frames i and i + 1
    threshold: float  # a step above it is stormy: storm_factor x the median distance
    summary: dict
    storms: list[tuple[int, int]]  # (first step, last step) of each storm zone
    blinks: list[int]  # frames that jump away and straight back
    plot: str | None = None  # storm.png, once drawn
    filmstrip: str | None = None  # filmstrip.png, once drawn

    def to_dict(self) -> dict:
        return asdict(self)


@functools.cache  # built once: the studio's check line asks for it on every keystroke
def _lpips_distance():
    try:
        import lpips

        model = lpips.LPIPS(net="alex", verbose=False).eval()
    except Exception as e:  # not installed, or its weights cannot be had offline
        raise MorphError(f"metric: lpips needs the lpips package and its weights ({type(e).__name__}); "
                         "`pip install lpips` on a connected machine, or use ssim or pixel") from None

    def between(a, b):
        with torch.no_grad():
            return float(model(a, b))

    return Distance(lambda frame: frame.permute(2, 0, 1)[None].float() / 127.5 - 1, between)


def measure_name(metric: str) -> str:
    """How a metric's change reads in plots and reports: ssim's is 1 - SSIM."""
    return "1 - SSIM" if metric == "ssim" else metric


def distance_function(metric: str) -> Distance:
    """The change between two downscaled uint8 frames [h, w, 3] under `metric`: ssim, pixel or lpips."""
    if metric not in METRICS:
        raise MorphError(f"metric: {metric!r} is not allowed; expected one of: {', '.join(METRICS)}")
    return _lpips_distance() if metric == "lpips" else DISTANCES[metric]


class RunningStorms:
    """The distances of a walk's frames measured as they arrive, in order, on a thread of its own: `write(image)` for
    each uint8 frame [H, W, 3], then `analysis(storm_factor)` (it waits for the last frame to be measured). Use
    as a context manager: leaving it stops the thread. Each distance needs only the two frames before it
    (downscaled); nothing is measured, nor the metric loaded, before the third frame, since a storm map needs three."""

    def __init__(self, metric: str = "ssim", depth: int = 8):
        self.metric, self.frames = metric, 0  # frames: how many were written
        self.neighbours: list[float] = []  # d[i]: frames i and i + 1
        self.skips: list[float] = []  # s[i]: frames i and i + 2
        self._recent: list = []  # the last frames, downscaled (prepared for the metric once measuring): two
        self._measured = 0
        # the writer's order thread hands a frame over and goes on: measuring it at 512 px takes milliseconds that
        # would otherwise hold back the MP4, the platform files and, through the order, the encoders. The queue
        # holds downscaled frames (ANALYSIS_SIZE), never a batch's full-size pixels
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._closed = self._abandoned = False

    def write(self, image) -> None:
        if self._closed:  # a frame after the analysis would be lost: morph's bug
            raise RuntimeError("internal error: a frame was written to the storm map after its analysis")
        self._raise_if_failed()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="morph-storm-map", daemon=True)
            self._thread.start()
        self._queue.put(downscale(torch.from_numpy(image)))
        self.frames += 1

    def _work(self) -> None:
        while (small := self._queue.get()) is not None:
            if self._error is None and not self._abandoned:  # otherwise drain: write() must never block for good
                try:
                    self._measure(small)
                except BaseException as e:  # raised on the writing thread, at its next write or at the analysis
                    self._error = e

    def _measure(self, small) -> None:
        self._recent.append(small)
        self._measured += 1
        if self._measured < 3:
            return
        if self._measured == 3:
            self._distance = distance_function(self.metric)
            _preload_plotting()
            self._recent[:2] = map(self._distance.prepare, self._recent[:2])
            self.neighbours.append(self._distance.between(*self._recent[:2]))
        self._recent[-1] = self._distance.prepare(self._recent[-1])  # once per frame, for both its distances
        before, previous, frame = self._recent
        self.neighbours.append(self._distance.between(previous, frame))
        self.skips.append(self._distance.between(before, frame))
        del self._recent[0]

    def close(self) -> None:
        """Measure every frame written, stop the thread, and raise the error measuring had, if any; no frame may
        follow."""
        self._stop()
        self._raise_if_failed()

    def _stop(self) -> None:
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:  # leaving on another error (a failed render, Ctrl-C): report it, measure no more
            self._abandoned = True
        self._stop()
        if exc_type is None:
            self._raise_if_failed()

    def analysis(self, storm_factor: float = 3.0, frames: int | None = None) -> Analysis:
        """The storm zones and blinks of the frames written so far (at least 3; exactly `frames`, when given)."""
        self.close()
        if frames is not None and frames != self.frames:  # a frame not fed or fed twice: morph's bug, not the user's
            raise RuntimeError(f"internal error: the storm map measured {self.frames} frames of a walk of {frames}")
        if self.frames < 3:
            distance_function(self.metric)  # an unknown metric is named first
            raise MorphError(f"a storm map needs at least 3 frames; this render has {self.frames}")
        d_t, s_t = torch.tensor(self.neighbours, dtype=torch.float64), torch.tensor(self.skips, dtype=torch.float64)
        threshold = storm_factor * float(d_t.median())
        return Analysis(self.metric, list(self.neighbours), threshold, summarize(d_t), storm_zones(d_t, threshold),
                        blinks(d_t, s_t, threshold))


def analyze_frames(files: list[Path], metric: str = "ssim", storm_factor: float = 3.0) -> Analysis:
    """Distances between neighbouring frames (and frames two apart, for blinks), streaming through the PNGs."""
    with RunningStorms(metric) as running:  # the next PNG decodes while the last is measured
        for path in files:
            running.write(read_png(path))
        return running.analysis(storm_factor)


def uniform_curve(distances: list[float], estimated: bool) -> tuple[list[float], str]:
    """The uniform walk's neighbour changes [F - 1] with their label in storm.png (spacing: even's "before")."""
    return distances, "the same frame count, uniform spacing" + (" (estimated, not rendered)" if estimated else "")


@functools.cache  # once per process
def _preload_plotting() -> None:
    """Import pyplot on a thread of its own: storm.png follows the last frame, and the import takes 0.4 s here. Not a
    daemon: a process that ends meanwhile waits for the import rather than stopping it half-done."""
    try:
        # said outright: a thread started by the storm map's own (a daemon) would be a daemon too
        threading.Thread(target=_plotting, name="morph-storm-plot-import", daemon=False).start()
    except RuntimeError:  # no thread to be had: storm_plot imports it when it draws
        pass


def _plotting():
    """matplotlib's pyplot, drawing into images only (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def storm_plot(analysis: Analysis, fps: int, keyframes: list[tuple[int, str]], path: Path,
               before: tuple[list[float], str] | None = None) -> None:
    """storm.png: see storm_figure."""
    plt = _plotting()
    fig = storm_figure(analysis, fps, keyframes, before)
    write_atomic(path, lambda partial: fig.savefig(partial, dpi=STORM_DPI, format="png"))
    plt.close(fig)


STORM_DPI = 100


def storm_figure(analysis: Analysis, fps: int, keyframes: list[tuple[int, str]],
                 before: tuple[list[float], str] | None = None):
    """The figure of storm.png: the distance of every step against video time, storm zones shaded, blinks and
    keyframes marked; below, the cumulative change against the walk's position. `before`: uniform_curve, drawn in
    grey. The legend sits right of the plot, where it hides neither a curve nor a keyframe's label."""
    plt = _plotting()
    d = analysis.distances
    time = [(i + 0.5) / fps for i in range(len(d))]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(13, 6.5), height_ratios=[3, 2], constrained_layout=True)
    measure = measure_name(analysis.metric)
    if before is not None:
        top.plot(time, before[0], color="#999999", linewidth=1.0, label=before[1])
        bottom.plot(range(len(before[0]) + 1), torch.cumsum(torch.tensor([0.0, *before[0]]), 0).tolist(),
                    color="#999999")
    top.plot(time, d, color="#1f4e79", linewidth=1.2, label=f"change to the next frame ({measure})")
    top.axhline(analysis.threshold, color="#c0392b", linestyle="--", linewidth=0.8,
                label=f"storm threshold ({analysis.threshold:.3g})")
    for first, last in analysis.storms:
        top.axvspan(first / fps, (last + 1) / fps, color="#e74c3c", alpha=0.18, linewidth=0)
    if analysis.blinks:
        top.plot([i / fps for i in analysis.blinks], [max(d[i - 1], d[i]) for i in analysis.blinks], "v",
                 color="#8e44ad", markersize=8, label="blink: a frame that jumps away and back")
    for frame, name in keyframes:
        for axis in (top, bottom):
            axis.axvline(frame / fps if axis is top else frame, color="grey", linewidth=0.6)
        last = frame == len(d)  # the last keyframe's label goes to the left of its line, inside the plot
        top.annotate(name[:30], (frame / fps, 1.0), xycoords=("data", "axes fraction"), fontsize=8,
                     ha="right" if last else "left", va="top", xytext=(-3 if last else 3, -3),
                     textcoords="offset points")
    top.set_xlabel("video time (s); red: storm zones")
    top.set_ylabel("change between neighbouring frames")
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)
    cumulative = torch.cumsum(torch.tensor([0.0, *d]), 0).tolist()
    bottom.plot(range(len(cumulative)), cumulative, color="#1f4e79")
    bottom.set_xlabel("frame (grey lines: keyframes)")
    bottom.set_ylabel("cumulative change")
    s = analysis.summary
    fig.suptitle(f"where the picture changes: smoothness {s['smoothness']:.2f} (1 = even), max/median "
                 f"{s['max_over_median'] or float('inf'):.1f}, {len(analysis.storms)} storm zone(s), "
                 f"{len(analysis.blinks)} blink(s)")
    return fig


def filmstrip(analysis: Analysis, files: list[Path]):
    """The frames around the biggest jumps: one row per jump, frames i - 1, i, i + 1, i + 2."""
    d = torch.tensor(analysis.distances)
    jumps = sorted(torch.topk(d, min(JUMPS_SHOWN, d.numel())).indices.tolist())
    rows, labels = [], []
    for i in jumps:
        around = [min(max(j, 0), len(files) - 1) for j in (i - 1, i, i + 1, i + 2)]
        rows.append([files[j] for j in around])
        labels.append(f"{i} -> {i + 1}: {analysis.distances[i]:.3g}")
    return contact_sheet(rows, "the biggest jumps (rows: frames i -> i+1 and the change)", labels,
                         ["frame i-1", "frame i", "frame i+1", "frame i+2"])


def format_summary(analysis: Analysis) -> str:
    """The short table `morph analyze` prints."""
    s = analysis.summary
    rows = [("metric", analysis.metric), ("steps", str(len(analysis.distances))),
            ("mean / median / max", f"{s['mean']:.4g} / {s['median']:.4g} / {s['max']:.4g}"),
            ("max / median", f"{s['max_over_median']:.1f}" if s["max_over_median"] else "inf (median is 0)"),
            ("smoothness (1 - Gini)", f"{s['smoothness']:.3f}"),
            ("change in the worst 10 % of steps", f"{100 * s['worst_10_percent_share']:.0f} %"),
            ("storm zones (steps i: frame i -> i+1)",
             ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in analysis.storms) or "none"),
            ("blinks (frames)", ", ".join(map(str, analysis.blinks)) or "none")]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}} {value}" for name, value in rows)


def keyframes_of(records: list[dict], sources: list[str]) -> list[tuple[int, str]]:
    """(frame, prompt) of every keyframe of a walk, from its frame records: the first frame and each segment's last."""
    return [(0, sources[0])] + [(i, sources[r["segment"] + 1]) for i, r in enumerate(records) if r["t"] == 1.0]


def storm_map(output: Path, files: list[Path], fps: int, keyframes: list[tuple[int, str]], analysis: Analysis,
              before: tuple[list[float], str] | None = None) -> Analysis:
    """Write storm.png and filmstrip.png of a walk's `analysis` (RunningStorms', or analyze_frames' of its `files`)
    into `output` (`before`: see storm_plot)."""
    analysis.plot, analysis.filmstrip = str(output / "storm.png"), str(output / "filmstrip.png")
    storm_plot(analysis, fps, keyframes, Path(analysis.plot), before)
    write_png(Path(analysis.filmstrip), np.asarray(filmstrip(analysis, files)))  # faster than PIL at its zlib level 6
    return analysis
