"""spacing: even. The walk's uniform frames are rendered first (they are the "before"); samples are added
between neighbours that still differ by more than an even step, biggest gaps first, one batch at a time,
within max_extra_renders; then the video's frames are picked among all the samples at equal steps of the
cumulative change. Every frame is a render that exists in the store: none is rendered twice, none blended.

A gap that bisection narrows below spacing.MIN_GAP while it still differs by more than a step is a true
discontinuity (the picture flips between two almost equal conditionings): it is reported, not split further,
and its change is left out of the even steps, because no spacing can spread it.
"""

import math
from dataclasses import dataclass

import torch

from .analysis import distance_function
from .manifest import FrameLog
from .produce import FramePlan, plan_frames, produce, stored_plan
from .spacing import crossing, gaps_to_split, pick_steps, share_steps, shares_of, step_cost
from .storm import downscale, summarize


@dataclass
class Sample:
    position: float  # where it sits within its segment, 0..1 (a keyframe shared by two segments: 1 and 0)
    segment: int  # the segment and t it was rendered as (its store identity)
    t: float
    key: str


@dataclass
class EvenSpacing:
    """What spacing: even did: the frames it picked (job.path and the plan's keys), and its figures."""

    plan: FramePlan
    uniform: list[float]  # change between neighbouring frames of the uniform walk with the same frame count
    uniform_positions: list[float]  # where those frames sit along the walk (segment + t)
    samples: int  # renders spent in all: the frame count plus the refinement
    rendered: int  # how many of them this run rendered (the rest were in the store)
    reused: int  # frames of the video that were in the store before this run
    discontinuities: list[dict]  # {segment, from_t, to_t, change}
    max_extra_renders: int
    budget: str
    metric: str

    def record(self, positions: list[float], distances: list[float]) -> dict:
        """The manifest's spacing section, with the picked frames' positions and neighbour changes [F - 1]."""
        return {
            "spacing": "even", "metric": self.metric, "budget": self.budget, "max_extra_renders": self.max_extra_renders,
            "renders": self.samples, "extra_renders": self.samples - len(positions), "rendered": self.rendered,
            "discontinuities": self.discontinuities,
            "uniform": {"distances": self.uniform, **self._figures(self.uniform_positions, self.uniform)},
            "even": self._figures(positions, distances),
        }

    def _figures(self, positions: list[float], distances: list[float]) -> dict:
        d = torch.tensor(distances, dtype=torch.float64)
        across = torch.zeros(d.numel(), dtype=torch.bool)
        for gap in self.discontinuities:
            across |= crossing(positions, gap["segment"] + gap["from_t"], gap["segment"] + gap["to_t"])
        calm = d[~across]
        return {"summary": summarize(d), "steps_across_discontinuities": int(across.sum()),
                "summary_without_discontinuities": summarize(calm) if across.any() and calm.numel() else None}


class _Samples:
    """Every segment's samples in order, their frames downscaled for measuring, and the changes measured."""

    def __init__(self, store, metric: str):
        self.store, self.distance = store, distance_function(metric)
        self.segments: list[list[Sample]] = []
        self._frames, self._changes = {}, {}

    def change(self, a: Sample, b: Sample) -> float:
        if (a.key, b.key) not in self._changes:
            self._changes[a.key, b.key] = self.distance(self._frame(a.key), self._frame(b.key))
        return self._changes[a.key, b.key]

    def _frame(self, key: str):
        if key not in self._frames:
            self._frames[key] = downscale(torch.from_numpy(self.store.read(key)))
        return self._frames[key]

    def changes(self, segment: int) -> list[float]:
        samples = self.segments[segment]
        return [self.change(a, b) for a, b in zip(samples, samples[1:])]

    def insert(self, segment: int, sample: Sample) -> None:
        samples = self.segments[segment]
        samples.insert(next(i for i, s in enumerate(samples) if s.position > sample.position), sample)


class _Renderer:
    """Renders samples at chosen places through the job's renderer and store, counting and logging them."""

    def __init__(self, job, store, shard, fresh: bool, progress):
        self.job, self.store, self.shard, self.fresh, self.progress = job, store, shard, fresh, progress
        self.uniform, self.rendered, self.new = job.path, 0, set()  # new: keys rendered by this run
        self.flags = {}  # key -> the FrameLog lists it belongs to

    def render(self, segment: list[int], t: list[float]) -> list[str]:
        """Keys of frames at segment [n], t [n], rendered where the store lacks them."""
        self.job.use_path(self.uniform.placed(segment, t))
        plan = plan_frames(self.job, list(range(len(segment))), self.store, self.fresh)
        self.progress.total = (self.progress.total or 0) + len(plan.missing)
        self.progress.refresh()
        log = FrameLog()
        self.rendered += produce(self.job, plan, self.store, self.shard, log, on_frame=lambda: self.progress.update(1))
        self.new.update(plan.keys[i] for i in plan.missing)
        for name in ("nsfw", "redecoded", "broken"):
            for i in getattr(log, name):
                self.flags.setdefault(plan.keys[i], []).append(name)
        return plan.keys

    def log_into(self, log: FrameLog, keys: list[str]) -> None:
        """The flags of the picked frames, by their index in the video."""
        for i, key in enumerate(keys):
            for name in self.flags.get(key, []):
                getattr(log, name).append(i)


def _steps_and_targets(samples: _Samples, stuck: list[set[int]], uniform_steps: list[int], budget: str):
    """Steps per segment and the even change per step each segment aims at (discontinuities left out)."""
    change = [sum(d for g, d in enumerate(samples.changes(s)) if g not in stuck[s])
              for s in range(len(samples.segments))]
    if budget == "walk":
        steps = share_steps(change, sum(uniform_steps), [len(seg) - 1 for seg in samples.segments]).tolist()
        step = sum(change) / sum(steps)
        return steps, [step] * len(steps)
    return uniform_steps, [c / n for c, n in zip(change, uniform_steps)]


def _pick(samples: _Samples, segment: int, stuck: set[int], steps: int, target: float, shares=None):
    """Indices [steps + 1] of the segment's samples to keep: a step may skip samples (up to a window), never
    a discontinuity, which is one step between the samples either side of it and costs nothing (it cannot be
    made even). Changes between samples further apart are measured, not summed: change is not additive.
    The target step is then moved to the mean of the steps picked, twice, since skipping shrinks it.
    `shares` [steps] (summing to 1; music): step k aims at shares[k] of the segment's change instead."""
    seg = samples.segments[segment]
    size = len(seg)
    window = max(4, 2 * math.ceil((size - 1) / steps))
    change = torch.full((size, window), math.inf, dtype=torch.float64)
    free = torch.zeros((size, window), dtype=torch.bool)  # steps across a discontinuity
    for j in range(1, size):
        for w in range(min(window, j)):
            across = any(g in stuck for g in range(j - w - 1, j))
            if not across:
                change[j, w] = samples.change(seg[j - w - 1], seg[j])
            elif w == 0:
                free[j, w] = True
    aims = torch.full((steps,), 1 / steps, dtype=torch.float64) if shares is None else shares
    scale = target * steps  # the segment's change, spread over its steps by `aims`
    for _ in range(3):
        picked = pick_steps(lambda k: torch.where(free, 0.0, step_cost(change, scale * float(aims[k - 1]))), steps)
        kept = change[picked[1:], picked[1:] - picked[:-1] - 1]
        if torch.isfinite(kept).any():
            scale = float(kept[torch.isfinite(kept)].sum() / aims[torch.isfinite(kept)].sum())
    return picked


def even_spacing(job, store, shard, fresh: bool, log: FrameLog, progress) -> EvenSpacing:
    """Render the samples spacing: even needs, pick the frames, point `job` at them; see the module's docstring.
    A walk timed to music (job.music) has its samples picked so that the change follows the music's share of
    each segment instead of being equal."""
    config, uniform = job.config, job.path
    count, metric, budget = len(uniform), config.analysis.metric, config.spacing.budget
    max_extra_renders = config.spacing.extra_renders(count)
    shares = shares_of(job.music[1], config.steps()) if job.music else None
    renderer = _Renderer(job, store, shard, fresh, progress)
    samples = _Samples(store, metric)

    # 1. The uniform walk of the same frame count: the first samples, and the "before"
    keys = renderer.render(uniform.segment.tolist(), uniform.t.tolist())
    first = [Sample(0.0, 0, 0.0, keys[0])] + [Sample(float(uniform.t[i]), int(uniform.segment[i]), float(uniform.t[i]),
                                                     keys[i]) for i in range(1, count)]
    uniform_steps = []
    for i, sample in enumerate(first[1:], start=1):
        if sample.segment == len(samples.segments):  # a new segment starts at the keyframe before it
            keyframe = first[i - 1]
            samples.segments.append([Sample(0.0, keyframe.segment, keyframe.t, keyframe.key)])
            uniform_steps.append(0)
        samples.segments[-1].append(sample)
        uniform_steps[-1] += 1
    before = [samples.change(a, b) for a, b in zip(first, first[1:])]

    # 2. Bisect the biggest gaps that still exceed their segment's even step, one batch of samples at a time
    remaining = max_extra_renders
    stuck = [set() for _ in samples.segments]
    while True:
        _, targets = _steps_and_targets(samples, stuck, uniform_steps, budget)
        wanted = []
        for s, step in enumerate(targets):
            seg, d = samples.segments[s], samples.changes(s)
            split, narrow = gaps_to_split([x.position for x in seg], d, step)
            stuck[s] = {int(g) for g in narrow}
            wanted += [(d[g], s, (seg[g].position + seg[g + 1].position) / 2) for g in split.tolist()]
        if not wanted or remaining <= 0:
            break
        wanted = sorted(wanted, reverse=True)[:min(renderer.job.renderer.batch_size, remaining)]
        keys = renderer.render([s for _, s, _ in wanted], [t for _, _, t in wanted])
        for (_, s, t), key in zip(wanted, keys):
            samples.insert(s, Sample(t, s, t, key))
        remaining -= len(wanted)

    # 3. Pick each segment's frames: the steps whose changes come closest to even
    steps, targets = _steps_and_targets(samples, stuck, uniform_steps, budget)
    picked = [samples.segments[0][0]]
    for s, seg in enumerate(samples.segments):
        picked += [seg[j] for j in _pick(samples, s, stuck[s], steps[s], targets[s],
                                         shares[s] if shares else None).tolist()[1:]]
    job.use_path(uniform.placed([p.segment for p in picked], [p.t for p in picked]))
    plan = stored_plan(job, [p.key for p in picked])
    renderer.log_into(log, plan.keys)
    discontinuities = [{"segment": s, "from_t": seg[g].position, "to_t": seg[g + 1].position,
                        "change": samples.change(seg[g], seg[g + 1])}
                       for s, seg in enumerate(samples.segments) for g in sorted(stuck[s])]
    total = sum(len(seg) - 1 for seg in samples.segments) + 1
    reused = sum(key not in renderer.new for key in plan.keys)
    return EvenSpacing(plan, before, [uniform.position(i) for i in range(count)], total, renderer.rendered, reused,
                       discontinuities, max_extra_renders, budget, metric)

