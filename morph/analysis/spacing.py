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


def interpolate(x, xp, fp):
    """Piecewise-linear f at x [n] from samples at xp [S] (non-decreasing) with values fp [S]: [n]; flat past the
    ends."""
    x, xp, fp = (torch.as_tensor(v, dtype=torch.float64) for v in (x, xp, fp))
    right = torch.searchsorted(xp, x, right=True).clamp(1, xp.numel() - 1)
    x0, x1, f0, f1 = xp[right - 1], xp[right], fp[right - 1], fp[right]
    w = torch.where(x1 > x0, (x - x0) / torch.where(x1 > x0, x1 - x0, 1.0), 0.0).clamp(0, 1)
    return f0 + w * (f1 - f0)


def cumulative(change):
    """Cumulative change [S] at samples whose neighbours differ by change [S - 1], from 0."""
    change = torch.as_tensor(change, dtype=torch.float64)
    return torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(change, 0)])


def marks(position, change, stuck, steps, shares=None):
    """Positions [steps + 1] that cut the change along samples at position [S] (neighbour changes [S - 1]) into
    `steps` equal steps, or steps holding shares [steps] of it, by linear interpolation between samples. A stuck gap
    (indices into change) is a step of its own between its two samples, unless there are too few steps for that."""
    position, change = torch.as_tensor(position, dtype=torch.float64), torch.as_tensor(change, dtype=torch.float64)
    stuck = sorted(stuck)
    starts, ends = [0] + [g + 1 for g in stuck], stuck + [position.numel() - 1]
    pieces = [(a, b) for a, b in zip(starts, ends) if b > a]
    if steps - len(stuck) < len(pieces):
        return marks(position, change, [], steps, shares)
    piece_steps = share_steps([float(change[a:b].sum()) for a, b in pieces], steps - len(stuck),
                              [steps] * len(pieces)).tolist() if pieces else []
    shares = torch.full((steps,), 1.0 / steps, dtype=torch.float64) if shares is None else torch.as_tensor(shares)
    placed, k = [], 0
    for a, b in zip(starts, ends):
        n = piece_steps.pop(0) if b > a else 0
        aims = cumulative(shares[k:k + n].double())
        level = cumulative(change[a:b])
        if level[-1] > 0 and aims[-1] > 0:
            placed.append(interpolate(aims / aims[-1] * level[-1], level, position[a:b + 1]))
        else:
            placed.append(torch.linspace(float(position[a]), float(position[b]), n + 1, dtype=torch.float64))
        placed[-1][0], placed[-1][-1] = position[a], position[b]
        k += n + 1  # the piece's steps, then the stuck gap's
    return torch.cat(placed)


def growth(whole, parts, low=1.0, high=3.0):
    """The exponent p in [low, high] at which a gap's change `whole` is the sum of its parts' [k]: sum(parts ** (1/p))
    = whole ** (1/p), i.e. how change grows with distance (change ~ distance ** p); by bisection on p."""
    ratio = torch.as_tensor(parts, dtype=torch.float64) / whole
    excess = lambda p: float((ratio ** (1 / p)).sum()) - 1  # grows with p
    if excess(low) >= 0:
        return low
    if excess(high) <= 0:
        return high
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if excess(mid) < 0 else (low, mid)
    return (low + high) / 2


def crossing(t, cut_low, cut_high):
    """Which steps between frames at t [F] (increasing) reach into a gap (cut_low, cut_high), which holds a jump
    somewhere inside: the one step spanning it, or both steps either side of a frame that falls inside it: bool
    [F - 1]."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return (t[:-1] < cut_high) & (t[1:] > cut_low)
