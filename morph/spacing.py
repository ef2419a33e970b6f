"""Even spacing along a walk: where to add samples, which samples become frames. Imports only torch.

Within one segment, samples sit at increasing t [S] (both ends included) and d [S - 1] holds the
change between neighbouring samples. Frames are picked among the samples, so every frame of the
video is a render that already exists.
"""

import torch

MIN_GAP = 1e-4  # two samples closer in t than this that still differ a lot: a true discontinuity


def gaps_to_split(t, d, step, min_gap=MIN_GAP):
    """Gaps between samples t [S] whose change d [S - 1] exceeds `step`: (splittable [G], discontinuities [J]),
    gap indices, the splittable ones biggest change first; a gap narrower than min_gap cannot be split."""
    t, d = torch.as_tensor(t, dtype=torch.float64), torch.as_tensor(d, dtype=torch.float64)
    large = d > step
    narrow = (t[1:] - t[:-1]) <= min_gap
    splittable = torch.nonzero(large & ~narrow).flatten()
    order = torch.argsort(d[splittable], descending=True, stable=True)
    return splittable[order], torch.nonzero(large & narrow).flatten()


def step_cost(change, target):
    """Cost [S, W] of steps whose change [S, W] should be `target`: the squared miss (inf stays inf)."""
    return (change.double() - target) ** 2


def shares_of(t, steps):
    """Each segment's share of its change per step [n] (summing to 1), from frames placed at t [F] in segments
    of `steps` [K] (t from 0 at a segment's first frame to 1 at its last): a list of K tensors."""
    t = torch.as_tensor(t, dtype=torch.float64)
    shares, first = [], 0
    for n in steps:
        segment_t = torch.cat([torch.zeros(1, dtype=torch.float64), t[first + 1:first + n + 1]])
        shares.append(torch.diff(segment_t))
        first += n
    return shares


def pick_steps(cost, steps):
    """Indices [steps + 1] of the samples to keep as frames, first and last included, with the least total cost.
    cost [S, W]: of the step from sample j - w - 1 to sample j (inf where there is none, or it is not allowed);
    or a function of k = 1 .. steps giving that for the k-th step (steps aimed at different changes)."""
    cost_of = cost if callable(cost) else (lambda k, fixed=cost.double(): fixed)
    size, window = cost_of(1).shape
    if size - 1 < steps:
        raise ValueError(f"{size} samples cannot give {steps} steps")
    best = torch.full((size,), float("inf"), dtype=torch.float64)
    best[0] = 0.0
    back = torch.zeros((steps + 1, size), dtype=torch.long)
    for k in range(1, steps + 1):
        options = torch.full((size, window), float("inf"), dtype=torch.float64)
        for w in range(min(window, size - 1)):  # a step of w + 1 samples ending at every j
            options[w + 1:, w] = best[:size - w - 1] + cost_of(k)[w + 1:, w]
        best, back[k] = options.min(dim=1)
    picked = [size - 1]
    for k in range(steps, 0, -1):
        picked.append(picked[-1] - int(back[k, picked[-1]]) - 1)
    if picked[-1] != 0 or not torch.isfinite(best[-1]):
        raise ValueError(f"no {steps} allowed steps join the first and last sample")
    return torch.tensor(picked[::-1], dtype=torch.long)


def share_steps(change, total, cap):
    """Steps [K] for segments with change [K] so that steps follow change: each between 1 and cap [K], summing to
    total (largest remainders get the leftover steps; no change anywhere: as evenly as possible)."""
    change, cap = torch.as_tensor(change, dtype=torch.float64), torch.as_tensor(cap, dtype=torch.long)
    if not cap.ge(1).all() or not cap.numel() <= total <= int(cap.sum()):
        raise ValueError(f"{total} steps cannot be shared within caps {cap.tolist()}")
    weights = change if change.sum() > 0 else torch.ones_like(change)
    capped = torch.zeros(change.numel(), dtype=torch.bool)
    while True:  # a segment whose share exceeds its cap gets the cap; the others share the rest again
        free = total - int(cap[capped].sum())
        ideal = torch.where(capped, cap.double(), 0.0)
        w = weights[~capped] if weights[~capped].sum() > 0 else torch.ones(int((~capped).sum()), dtype=torch.float64)
        ideal[~capped] = 1 + (free - int((~capped).sum())) * w / w.sum()
        over = ~capped & (ideal > cap)
        if not over.any():
            break
        capped |= over
    steps = ideal.floor().long()
    room = torch.where(steps < cap, ideal - steps, torch.tensor(-1.0, dtype=torch.float64))
    steps[torch.argsort(room, descending=True, stable=True)[:total - int(steps.sum())]] += 1
    return steps


def crossing(t, cut_low, cut_high):
    """Which steps between frames at t [F] (increasing) span a gap (cut_low, cut_high): bool [F - 1]."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return (t[:-1] <= cut_low) & (t[1:] >= cut_high)
