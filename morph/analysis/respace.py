"""spacing: even. Frames go where the picture has changed by equal steps, each a real render (none blended):

1. a coarse uniform pass (a quarter of the frames) shows roughly where the change is;
2. a few typical gaps are bisected to measure how change grows with distance along t (1 - SSIM: about as
   distance ** 1.5), so that change ** (1 / growth) can be added up along the walk;
3. gaps holding a storm are bisected, biggest first, one batch at a time;
4. the frames are placed at equal steps of that cumulative length, and rendered where no sample is near; then
   frames whose steps still miss the mean are placed again between their neighbours, on the changes now measured
   frame to frame, while max_extra_renders lasts;
5. the video's frames are picked among all the samples by the measured change of every step.

Samples count against the budget whether this run rendered them or found them in the store, so a run that is
resumed, or run again, makes the same choices; no sample renders twice.

A gap whose change stays in one half through PERSISTENT bisections in a row, or that bisection narrows below
spacing.MIN_GAP while it still holds more than a step, is a true discontinuity (the picture flips between two
almost equal conditionings): it is reported, not split further, and its change is left out of the even steps,
because no spacing can spread it.
"""

import math
from dataclasses import dataclass

import torch

from ..errors import MorphError
from ..render.produce import FramePlan, plan_frames, stored_plan
from .samples import Sample, SampleRenderer, Samples, render_into
from .spacing import (crossing, cumulative, gaps_to_split, growth, interpolate, marks, pick_steps, share_steps,
                      shares_of, step_cost)
from .storm import summarize

COARSE = 4  # the first pass renders a quarter of each segment's steps: enough to see where the change is
SPLIT = 2 * COARSE  # gaps this many even steps long (twice a coarse gap's) are bisected before frames go in them
SNAP = 0.2  # a sample within this fraction of a step of where a frame should be is used instead of a new render
ROUNDS = 6  # placing frames, then placing them again along the curve their renders measured
TOLERANCE = 0.1  # of the mean step: steps further off than this are placed again
CONCENTRATED = 0.8  # a half of a bisected gap holding this much of its length may hold a discontinuity
# halvings in a row that kept the change concentrated: a discontinuity. Continuous change splits about evenly once a
# gap is narrower than the bump it crosses; after 4 halvings of a coarse gap (COARSE steps) the gap is a quarter of a
# frame's step wide, finer than any frame placed there could resolve
PERSISTENT = 4
NEAR = 0.1  # an estimated uniform step is measured between samples this close (in steps) to its ends
TIES = 1e-12  # steps that change the picture equally are told apart by how even they are in t
CALIBRATION = 4  # typical coarse gaps bisected to measure how change grows with distance


@dataclass
class EvenSpacing:
    """What spacing: even did: the frames it picked (job.path and the plan's keys), and its figures."""

    plan: FramePlan
    uniform: list[float]  # change between neighbouring frames of the uniform walk with the same frame count
    uniform_estimated: bool  # not measured: that walk's frames were not in the store
    uniform_positions: list[float]  # where those frames sit along the walk (segment + t)
    samples: int  # renders spent in all: the frame count plus the refinement
    rendered: int  # how many of them this run rendered (the rest were in the store)
    reused: int  # frames of the video that were in the store before this run
    discontinuities: list[dict]  # {segment, from_t, to_t, change}
    max_extra_renders: int
    budget: str
    metric: str
    growth: float  # change grows about as distance ** growth along t (measured; see _calibrate)

    def record(self, positions: list[float], distances: list[float]) -> dict:
        """The manifest's spacing section, with the picked frames' positions and neighbour changes [F - 1]."""
        return {
            "spacing": "even", "metric": self.metric, "budget": self.budget,
            "max_extra_renders": self.max_extra_renders, "renders": self.samples, "extra_renders": self.samples - len(positions), "rendered": self.rendered,
            "growth": self.growth, "discontinuities": self.discontinuities,
            "uniform": {"distances": self.uniform, "estimated": self.uniform_estimated,
                        **self._figures(self.uniform_positions, self.uniform)},
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


def _shortfall(samples: Samples, steps: list[int]) -> list[int]:
    """How many samples each segment lacks for its steps' frames."""
    return [max(0, n + 1 - len(seg)) for n, seg in zip(steps, samples.segments)]


def _steps_and_lengths(samples: Samples, uniform_steps: list[int], budget: str, caps=None):
    """Steps per segment, and the length of one even step in each (discontinuities left out): the config's steps,
    or with budget: walk, the walk's steps shared in proportion to the segments' lengths, within caps [K]."""
    curves = [samples.curve(s) for s in range(len(samples.segments))]
    jumps = [len(j) for _, _, j in curves]
    length = [float(lengths.sum() - lengths[j].sum()) for _, lengths, j in curves]
    steps = uniform_steps
    if budget == "walk":  # each discontinuity keeps a step of its own; the other steps follow length
        caps = caps or [sum(uniform_steps)] * len(jumps)
        free = share_steps(length, sum(uniform_steps) - sum(jumps), [c - j for c, j in zip(caps, jumps)])
        steps = (free + torch.tensor(jumps)).tolist()
    return steps, [x / max(1, n - j) for x, n, j in zip(length, steps, jumps)]


def _pick(samples: Samples, segment: int, steps: int, length: float, shares=None):
    """Indices [steps + 1] of the segment's samples to keep: a step may skip samples (up to a window), never
    a discontinuity, which is one step between the samples either side of it and costs nothing (it cannot be
    made even). Changes between samples further apart are measured, not summed: change is not additive.
    The target step is then moved to the mean of the steps picked, twice, since skipping shrinks it.
    `length`: of one even step (see _curve). `shares` [steps] (summing to 1; music): step k aims at shares[k]
    of the segment's change instead."""
    seg, stuck = samples.segments[segment], samples.stuck(segment)
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
    scale = length ** samples.growth * steps  # the segment's change, spread over its steps by `aims`
    position = torch.tensor([x.position for x in seg], dtype=torch.float64)
    span = torch.full((size, window), math.inf, dtype=torch.float64)  # in t, of the step ending at each sample
    for w in range(min(window, size - 1)):
        span[w + 1:, w] = position[w + 1:] - position[:size - w - 1]
    for _ in range(3):
        picked = pick_steps(lambda k: torch.where(free, 0.0, step_cost(change, scale * float(aims[k - 1])) +
                                                  TIES * (span - float(aims[k - 1])) ** 2), steps)
        kept = change[picked[1:], picked[1:] - picked[:-1] - 1]
        if torch.isfinite(kept).any():
            scale = float(kept[torch.isfinite(kept)].sum() / aims[torch.isfinite(kept)].sum())
    return picked


def _placed(samples: Samples, segment: int, steps: int, shares):
    """Where the segment's frames go: equal steps of the cumulative length along all its samples."""
    position, lengths, jumps = samples.curve(segment)
    return marks(position, lengths, jumps, steps, shares), (position, lengths, jumps)


def _replaced(samples: Samples, segment: int, picked: list[int], shares):
    """Where frames picked among the segment's samples go instead: between frames whose steps are both within
    TOLERANCE of the mean (and keyframes, and discontinuities' sides), the others evenly along the picked ones."""
    position, lengths, jumps = samples.curve(segment, picked)
    even = [g for g in range(len(lengths)) if g not in jumps]
    off = (lengths / lengths[even].mean() - 1).abs() > TOLERANCE
    off[jumps] = False
    anchors = [j for j in range(len(picked))
               if j in (0, len(picked) - 1) or j in jumps or j - 1 in jumps or not (off[j - 1] or off[j])]
    places = []
    for a, b in zip(anchors, anchors[1:]):
        if b - a > 1:
            aims = None if shares is None else shares[a:b]
            places.append(marks(position[a:b + 1], lengths[a:b], [], b - a, aims)[1:-1])
    return torch.cat(places) if places else torch.zeros(0, dtype=torch.float64), (position, lengths, jumps)


def _unsampled(samples: Samples, segment: int, places, curve, steps: int) -> list[tuple]:
    """(miss, segment, place) of the places that have no sample of their own within SNAP steps (of the segment's
    `steps`), along the curve (positions, lengths, jumps) they were placed on; miss is how far along it the
    nearest sample is. Each sample serves one place; where nothing changes, the nearest in t."""
    position, lengths, jumps = curve
    level = cumulative(lengths)
    step = float(lengths.sum() - lengths[jumps].sum()) / max(1, steps - len(jumps))
    at = torch.tensor([x.position for x in samples.segments[segment]], dtype=torch.float64)
    miss = (interpolate(places, position, level)[:, None] - interpolate(at, position, level)).abs()  # [P, S]
    apart = (torch.as_tensor(places, dtype=torch.float64)[:, None] - at).abs()
    exact = apart == 0  # keyframes, discontinuities' sides: samples already, never rendered again
    wanted, taken = [], set(torch.nonzero(exact)[:, 1].tolist())
    for p, place in enumerate(places.tolist()):
        if exact[p].any():
            continue
        nearest = int(torch.where(miss[p] <= miss[p].min() + 1e-12, apart[p], math.inf).argmin())
        if nearest not in taken and miss[p, nearest] <= SNAP * step:
            taken.add(nearest)
        else:
            wanted.append((float(miss[p, nearest]), segment, place))
    return wanted


def _calibrate(samples: Samples, renderer: SampleRenderer) -> int:
    """Set samples.growth and return the samples it took: bisect the CALIBRATION coarse gaps whose change is
    nearest their segment's median, and find the exponent at which their halves add up to them (the median of
    those; 1 when nothing changes)."""
    typical = []
    for s in range(len(samples.segments)):
        d = torch.tensor(samples.changes(s), dtype=torch.float64)
        typical += [(abs(float(d[g] - d.median())), s, g) for g in range(len(d)) if d[g] > 0]
    chosen = sorted(typical)[:CALIBRATION]
    gaps = [(s, samples.segments[s][g], samples.segments[s][g + 1]) for _, s, g in chosen]
    render_into(samples, renderer, [(0, s, (a.position + b.position) / 2) for s, a, b in gaps])
    found = []
    for s, a, b in gaps:
        middle = samples.segments[s][samples.segments[s].index(a) + 1]
        found.append(growth(samples.change(a, b), [samples.change(a, middle), samples.change(middle, b)]))
    samples.growth = float(torch.tensor(found).median()) if found else 1.0
    return len(gaps)


def _estimated(samples: Samples, segment: int, ends) -> list[float]:
    """The change between frames at positions ends [E] of a segment [E - 1]: measured between samples within NEAR
    of a step from both ends; otherwise the cumulative length between them (to the power growth) plus the change
    of any discontinuity in between, which does not grow with distance."""
    seg = samples.segments[segment]
    position, lengths, jumps = samples.curve(segment)
    calm = lengths.clone()
    calm[jumps] = 0.0
    level = interpolate(ends, position, cumulative(calm))
    nearest = (ends[:, None] - position).abs().argmin(1)
    estimate = []
    for i, (a, b) in enumerate(zip(ends.tolist(), ends[1:].tolist())):
        ja, jb = int(nearest[i]), int(nearest[i + 1])
        if ja != jb and max(abs(float(position[ja]) - a), abs(float(position[jb]) - b)) <= NEAR * (b - a):
            estimate.append(samples.change(seg[ja], seg[jb]))
        else:
            inside = [g for g in jumps if a <= position[g] < b]
            estimate.append(float(level[i + 1] - level[i]) ** samples.growth +
                            sum(float(lengths[g]) ** samples.growth for g in inside))
    return estimate


def _uniform_before(samples: Samples, renderer: SampleRenderer) -> tuple[list[float], bool]:
    """The change between neighbouring frames of the walk before spacing [F - 1] (uniform, or timed to music), and
    whether it is estimated: measured when its frames are in the store (a uniform run into the same output),
    otherwise estimated along the cumulative length of all the samples (it is not rendered for the comparison)."""
    walk = renderer.uniform
    renderer.job.use_path(walk)
    plan = plan_frames(renderer.job, list(range(len(walk))), renderer.store, False)
    if not plan.missing:
        frames = [Sample(float(t), int(s), float(t), key) for s, t, key in zip(walk.segment, walk.t, plan.keys)]
        return [samples.change(a, b) for a, b in zip(frames, frames[1:])], False
    zero = torch.zeros(1, dtype=torch.float64)
    return [change for s in range(len(samples.segments))
            for change in _estimated(samples, s, torch.cat([zero, walk.t[1:][walk.segment[1:] == s]]))], True


def even_spacing(job, store, shard, fresh: bool, progress) -> EvenSpacing:
    """Render the samples spacing: even needs, pick the frames, point `job` at them; see the module's docstring.
    A walk timed to music (job.music) has its frames placed so that the change follows the music's share of
    each segment instead of being equal."""
    config, uniform = job.config, job.path
    count, metric, budget = len(uniform), config.analysis.metric, config.spacing.budget
    max_extra_renders = config.spacing.extra_renders(count)
    uniform_steps = config.steps()
    shares = shares_of(job.music[1], uniform_steps) if job.music else [None] * len(uniform_steps)
    renderer = SampleRenderer(job, store, shard, fresh, progress)
    samples = Samples(store, metric)

    # 1. A coarse uniform pass: the change along t, roughly
    coarse = [max(1, math.ceil(n / COARSE)) for n in uniform_steps]
    segment = [0] + [s for s, n in enumerate(coarse) for _ in range(n)]
    t = [0.0] + [j / n for n in coarse for j in range(1, n + 1)]
    keys = renderer.render(segment, t)
    for i in range(1, len(t)):
        if segment[i] == len(samples.segments):  # a segment starts at the keyframe before it
            samples.segments.append([Sample(0.0, segment[i - 1], t[i - 1], keys[i - 1])])
        samples.segments[-1].append(Sample(t[i], segment[i], t[i], keys[i]))
    remaining = count + max_extra_renders - len(keys)

    # 2. How change grows with distance along t (1 - SSIM: faster than linearly), so that it can be added up
    if remaining > count + CALIBRATION:
        remaining -= _calibrate(samples, renderer)

    # 3. Bisect the gaps that hold a storm, biggest first, one batch at a time, keeping renders for half the frames
    #    (a discontinuity found is worth more than a frame placed in it). A half that still holds most of its gap's
    #    change is followed down; a gap whose change stayed concentrated through PERSISTENT halvings in a row, or
    #    narrowed below MIN_GAP while it holds more than a step, is a discontinuity
    narrowing = {}  # (key, key) of such halves: how many halvings in a row kept the change
    while True:
        _, lengths = _steps_and_lengths(samples, uniform_steps, budget)
        wanted = []
        for s, step in enumerate(lengths):
            seg, (position, d, _) = samples.segments[s], samples.curve(s)
            split, narrow = gaps_to_split(position, d, step)
            held = [g for g in split.tolist() if narrowing.get((seg[g].key, seg[g + 1].key), 0) >= PERSISTENT]
            samples.jumps |= {(s, seg[g].key) for g in narrow.tolist() + held}
            wanted += [(float(d[g]), s, seg[g], seg[g + 1]) for g in split.tolist()
                       if g not in held and (d[g] > SPLIT * step or (seg[g].key, seg[g + 1].key) in narrowing)]
        spend = min(len(wanted), renderer.job.renderer.batch_size,
                    remaining - max(count // 2, sum(_shortfall(samples, uniform_steps))))
        if spend <= 0:
            break
        chosen = sorted(wanted, key=lambda w: w[0], reverse=True)[:spend]
        render_into(samples, renderer, [(0, s, (a.position + b.position) / 2) for _, s, a, b in chosen])
        for whole, s, a, b in chosen:
            middle = samples.segments[s][samples.segments[s].index(a) + 1]
            depth = narrowing.get((a.key, b.key), 0) + 1
            narrowing.update({(x.key, y.key): depth for x, y in ((a, middle), (middle, b))
                              if samples.change(x, y) ** (1 / samples.growth) >= CONCENTRATED * whole})
        remaining -= spend

    # 4. Place the frames at equal steps of the cumulative change and render the places no sample is near; then
    #    place them again along the frames picked among those renders, where change is measured step by step
    steps, lengths = _steps_and_lengths(samples, uniform_steps, budget)
    for placing in range(ROUNDS):
        if placing and any(_shortfall(samples, steps)):  # out of renders before every frame had a sample
            break
        wanted = []
        for s in range(len(samples.segments)):
            places, curve = _replaced(samples, s, _pick(samples, s, steps[s], lengths[s], shares[s]).tolist(),
                                      shares[s]) if placing else _placed(samples, s, steps[s], shares[s])
            wanted += _unsampled(samples, s, places, curve, steps[s])
        if not wanted or remaining <= 0:
            break
        # a segment short of samples for its frames gets its places first
        short, first = _shortfall(samples, steps), []
        for want in sorted(wanted, reverse=True):
            first.append((short[want[1]] > 0, want))
            short[want[1]] -= 1
        wanted = [want for _, want in sorted(first, key=lambda x: x[0], reverse=True)[:remaining]]
        render_into(samples, renderer, wanted)
        remaining -= len(wanted)

    # 5. Pick each segment's frames among all the samples: the steps whose measured changes come closest to even
    caps = [len(seg) - 1 for seg in samples.segments]
    if any(n > c for n, c in zip(steps, caps)):  # too few renders to place every frame
        steps, lengths = _steps_and_lengths(samples, uniform_steps, budget, caps)
    picked = [samples.segments[0][0]]
    for s, seg in enumerate(samples.segments):
        picked += [seg[j] for j in _pick(samples, s, steps[s], lengths[s], shares[s]).tolist()[1:]]
    before, estimated = _uniform_before(samples, renderer)
    job.use_path(uniform.placed([p.segment for p in picked], [p.t for p in picked]))
    plan = stored_plan(job, [p.key for p in picked])
    discontinuities = [{"segment": s, "from_t": seg[g].position, "to_t": seg[g + 1].position,
                        "change": samples.change(seg[g], seg[g + 1])}
                       for s, seg in enumerate(samples.segments) for g in sorted(samples.stuck(s))]
    total = sum(len(seg) - 1 for seg in samples.segments) + 1
    reused = sum(key not in renderer.new for key in plan.keys)
    return EvenSpacing(plan, before, estimated, [uniform.position(i) for i in range(count)], total, renderer.rendered,
                       reused, discontinuities, max_extra_renders, budget, metric, samples.growth)


def use_placement(job, manifest: dict) -> None:
    """Point `job`, prepared again from the config of the walk `manifest` describes, at the frames its video shows:
    preparing builds the uniform walk, and where spacing: even placed the frames instead is known only from its
    renders, which the manifest's frame records keep (each frame's segment and t)."""
    if (manifest.get("spacing") or {}).get("spacing") == "even":
        frames = manifest["frames"]
        if len(frames) != len(job.path):  # a manifest edited, or written for another walk: no frame is known
            raise MorphError(f"manifest.json: its frames hold {len(frames)} records and its config's walk "
                             f"{len(job.path)} frames; render the walk again (morph run)")
        job.use_path(job.path.placed([r["segment"] for r in frames], [r["t"] for r in frames]))
