"""The samples spacing: even renders along a walk: where each sits, its frame measured against its neighbours,
and how it is rendered through the job's renderer and the frame store (respace.py decides where they go)."""

from collections import OrderedDict
from dataclasses import dataclass

import torch

from .storm_map import distance_function
from ..render.produce import plan_frames, produce
from .storm import downscale

ROUNDING = 1e-9  # a smaller change is the arithmetic's, between identical frames
PREPARED = 64  # frames kept prepared for the metric (about 1 MiB each for ssim at 128 px)


@dataclass
class Sample:
    position: float  # where it sits within its segment, 0..1 (a keyframe shared by two segments: 1 and 0)
    segment: int  # the segment and t it was rendered as (its store identity)
    t: float
    key: str


class Samples:
    """Every segment's samples in order, their frames downscaled for measuring, and the changes measured."""

    def __init__(self, store, metric: str):
        self.store, self.distance = store, distance_function(metric)
        self.segments: list[list[Sample]] = []
        self.jumps: set[tuple[int, str]] = set()  # (segment, key of the sample before it) of every discontinuity
        self.growth = 1.0  # change grows about as distance ** growth along t; measured by respace._calibrate
        self._frames, self._changes, self._prepared = {}, {}, OrderedDict()

    def change(self, a: Sample, b: Sample) -> float:
        if (a.key, b.key) not in self._changes:
            change = self.distance.between(self._frame(a.key), self._frame(b.key))
            self._changes[a.key, b.key] = change if change > ROUNDING else 0.0
        return self._changes[a.key, b.key]

    def _frame(self, key: str):
        """The sample's frame prepared for the metric. Every sample's downscaled frame is kept; the prepared ones
        (SSIM's statistics: 20 times the bytes) only for the last PREPARED used, since neighbours are compared."""
        if key in self._prepared:
            self._prepared.move_to_end(key)
            return self._prepared[key]
        if key not in self._frames:
            self._frames[key] = downscale(torch.from_numpy(self.store.read(key)))
        self._prepared[key] = self.distance.prepare(self._frames[key])
        if len(self._prepared) > PREPARED:
            self._prepared.popitem(last=False)
        return self._prepared[key]

    def changes(self, segment: int) -> list[float]:
        samples = self.segments[segment]
        return [self.change(a, b) for a, b in zip(samples, samples[1:])]

    def stuck(self, segment: int) -> set[int]:
        """The segment's gaps (indices into its changes) that are discontinuities."""
        return {g for g, sample in enumerate(self.segments[segment][:-1]) if (segment, sample.key) in self.jumps}

    def insert(self, segment: int, sample: Sample) -> None:
        samples = self.segments[segment]
        samples.insert(next(i for i, s in enumerate(samples) if s.position > sample.position), sample)

    def curve(self, segment: int, base: list[int] | None = None):
        """Positions [B] of the base samples (indices into the segment; default all of them), the lengths [B - 1]
        between neighbours among them, change ** (1 / growth), which adds up along t, and the indices of those steps
        that are discontinuities."""
        seg, stuck = self.segments[segment], self.stuck(segment)
        base = list(range(len(seg))) if base is None else base
        position = torch.tensor([seg[j].position for j in base], dtype=torch.float64)
        change = torch.tensor([self.change(seg[a], seg[b]) for a, b in zip(base, base[1:])], dtype=torch.float64)
        return position, change ** (1 / self.growth), [g for g, a in enumerate(base[:-1]) if a in stuck]


class SampleRenderer:
    """Renders samples at chosen places through the job's renderer and store, counting them."""

    def __init__(self, job, store, shard, fresh: bool, progress):
        self.job, self.store, self.shard, self.fresh, self.progress = job, store, shard, fresh, progress
        self.uniform, self.rendered, self.new = job.path, 0, set()  # new: keys rendered by this run

    def render(self, segment: list[int], t: list[float]) -> list[str]:
        """Keys of frames at segment [n], t [n], rendered where the store lacks them."""
        return self.render_path(self.uniform.placed(segment, t))

    def render_path(self, path) -> list[str]:
        """Keys of every frame of `path` (anything the job renders as a path), rendered where the store lacks them;
        the job is left pointing at `path`."""
        self.job.use_path(path)
        plan = plan_frames(self.job, list(range(len(path))), self.store, self.fresh)
        self.progress.total = (self.progress.total or 0) + len(plan.missing)
        self.progress.refresh()
        self.rendered += produce(self.job, plan, self.store, self.shard, on_frame=lambda: self.progress.update(1))
        self.new.update(plan.keys[i] for i in plan.missing)
        return plan.keys


def render_into(samples: Samples, renderer: SampleRenderer, wanted: list[tuple]) -> None:
    """Render samples at wanted (priority, segment, position) places and add them to their segments."""
    keys = renderer.render([s for _, s, _ in wanted], [t for _, _, t in wanted])
    for (_, s, t), key in zip(wanted, keys):
        samples.insert(s, Sample(t, s, t, key))
