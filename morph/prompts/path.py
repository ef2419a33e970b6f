"""The walk: which keyframe segment and which t each frame sits at. Imports only torch.

Conditionings are computed per batch from the keyframes, so memory does not grow with the
number of frames.
"""

import copy

import torch

from .ops import INTERPOLATE, add_scaled, slerp, slerp_noise


def frame_schedule(steps):
    """Segment index [F] (long) and t within it [F] (float64) for every frame; keyframes land on frames."""
    segment = [0]
    t = [0.0]
    for s, n in enumerate(steps):
        segment += [s] * n
        t += [j / n for j in range(1, n + 1)]
    return torch.tensor(segment, dtype=torch.long), torch.tensor(t, dtype=torch.float64)


def conditionings(keyframes, segment, t, interpolation):
    """Conditionings [B, L, D] for frames at segment [B], t [B] between keyframes [K, L, D]."""
    a = keyframes[segment]
    b = keyframes[(segment + 1).clamp_max(keyframes.shape[0] - 1)]
    return INTERPOLATE[interpolation](a, b, t.to(keyframes.device))


def linspace(start, end, steps):
    """steps evenly spaced values from start to end, both included: [steps] float64 (one value: start)."""
    if steps == 1:
        return torch.tensor([float(start)], dtype=torch.float64)
    return torch.linspace(float(start), float(end), steps, dtype=torch.float64)


class WalkPath:
    """Frames along keyframes [K, L, D]: frame i sits at (segment[i], t[i]).

    `along`: what else walks between the keyframes, each only where keyframes differ: "negative"
    [K, L, D] (interpolated like the prompts), "latent" [K, C, h, w] (the seeds' noise, slerped),
    "guidance" [K] (linear), "loras" [K, n] (each LoRA's strength, linear; named by `lora_names`), "controlnets"
    [K, m] (each ControlNet's strength, linear; named by `controlnet_names`), "ip_embeds" [K, 1, E] (an IP-Adapter's reference embeddings,
    slerped) and "ip_scale" [K] (their strengths, linear).
    `labels`: per keyframe, what the frame records name (seeds, negatives, LoRA strengths).
    """

    def __init__(self, keyframes, steps, interpolation, along=None, labels=None):
        self.keyframes, self.interpolation = keyframes, interpolation
        self.segment, self.t = frame_schedule(steps)
        self.along, self.labels = along or {}, labels or {}
        self.eases = None  # per segment, the easing its t went through (None: linear throughout)
        self.lora_names = []  # the LoRAs whose strengths along["loras"] holds, in its column order
        self.controlnet_names = []  # the ControlNets whose strengths along["controlnets"] holds, likewise

    def __len__(self):
        return len(self.t)

    def placed(self, segment, t):
        """The same walk with frames at segment [F] (long), t [F] (float64) instead: spacing other than uniform."""
        path = copy.copy(self)
        path.segment, path.t = torch.as_tensor(segment, dtype=torch.long), torch.as_tensor(t, dtype=torch.float64)
        return path

    def position(self, i):
        """Where frame i sits along the whole walk: segment + t, from 0 to the number of segments."""
        return int(self.segment[i]) + float(self.t[i])

    def sources(self):
        """The tensors every frame is computed from: the keyframes, [L, D] each."""
        return list(self.keyframes)

    def conditionings(self, indices):
        """Conditionings [B, L, D] for frame indices [B]."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return conditionings(self.keyframes, self.segment[index], self.t[index], self.interpolation)

    def frame_inputs(self, indices):
        """Per frame, what walks along with the prompts: {negative [B, L, D], latent [B, C, h, w], guidance [B],
        loras [B, n], controlnets [B, m], ip_embeds [B, 1, E], ip_scale [B]}, and where each frame sits: segment [B]
        (long), t [B] (float64)."""
        index = torch.as_tensor(indices, dtype=torch.long)
        segment, t = self.segment[index], self.t[index]
        start, end = segment, (segment + 1).clamp_max(self.keyframes.shape[0] - 1)
        inputs = {"segment": segment, "t": t}
        if "negative" in self.along:
            negative = self.along["negative"]
            inputs["negative"] = INTERPOLATE[self.interpolation](negative[start], negative[end], t.to(negative.device))
        if "latent" in self.along:
            inputs["latent"] = slerp_noise(self.along["latent"][start], self.along["latent"][end], t)
        if "ip_embeds" in self.along:  # an IP-Adapter's image embeddings [K, 1, E]
            inputs["ip_embeds"] = slerp(self.along["ip_embeds"][start], self.along["ip_embeds"][end], t)
        for name in ("guidance", "loras", "controlnets", "ip_scale"):  # linear between keyframes
            if name in self.along:
                v, w = self.along[name][start], self.along[name][end]
                inputs[name] = v + (t if v.dim() == 1 else t[:, None]) * (w - v)
        return inputs

    def describe(self, i):
        record = {"index": i, "segment": int(self.segment[i]), "t": float(self.t[i]), "file": f"{i:05d}.png"}
        ends = (int(self.segment[i]), min(int(self.segment[i]) + 1, self.keyframes.shape[0] - 1))
        record.update({name: [values[k] for k in ends] for name, values in self.labels.items()})
        inputs = self.frame_inputs([i])
        if "guidance" in inputs:
            record["guidance_scale"] = float(inputs["guidance"][0])
        if "loras" in inputs:
            record["lora_scales"] = dict(zip(self.lora_names, inputs["loras"][0].tolist()))
        if "controlnets" in inputs:
            record["controlnet_scales"] = dict(zip(self.controlnet_names, inputs["controlnets"][0].tolist()))
        if self.eases:
            record["ease"] = self.eases[int(self.segment[i])]
        return record


class GridPath:
    """Cells (row i, column j) = rows walked from start to end [L, D] at t_i, plus k_j * add [L, D]; row-major."""

    def __init__(self, start, end, add, row_t, column_k, interpolation, names=("rows.from", "rows.to", "columns.add")):
        self.start, self.end, self.add, self.interpolation = start, end, add, interpolation
        self.row_t, self.column_k = row_t, column_k
        self.names = names  # how the manifest writes the three prompts in each cell's expression

    def __len__(self):
        return len(self.row_t) * len(self.column_k)

    def sources(self):
        """The tensors every cell is computed from: start, end and add, [L, D] each."""
        return [self.start, self.end, self.add]

    def cell(self, i):
        return divmod(i, len(self.column_k))

    def frame_inputs(self, indices):
        """Nothing walks along with a grid's prompts."""
        return {}

    def conditionings(self, indices):
        """Conditionings [B, L, D] for cell indices [B] (row-major)."""
        rows, cols = zip(*(self.cell(i) for i in indices))
        batch = len(indices)
        t = self.row_t[list(rows)].to(self.start.device)
        bases = INTERPOLATE[self.interpolation](self.start.expand(batch, -1, -1), self.end.expand(batch, -1, -1), t)
        return add_scaled(bases, self.add, self.column_k[list(cols)])

    def describe(self, i):
        row, col = self.cell(i)
        t, k = float(self.row_t[row]), float(self.column_k[col])
        return {"index": i, "row": row, "column": col, "t": t, "k": k,
                "expression": f"{self.interpolation}({self.names[0]}, {self.names[1]}, t={t:.6g}) + {k:.6g} * "
                              f"({self.names[2]})",
                "file": f"r{row:02d}_c{col:02d}.png"}
