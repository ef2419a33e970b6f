"""Pure tensor math on prompt conditionings. Imports only torch.

Shapes: L token slots, D channels (77 x 768 for SD 1.x; read from the model, never assumed).
A batch of conditionings is [B, L, D]; t is [B].
"""

import torch


def lerp(a, b, t):
    """Linear interpolation of [B, L, D] tensors at t [B], in float64; exact at t = 0 and t = 1."""
    a64, b64, t64 = a.double(), b.double(), t.double().view(-1, 1, 1)
    out = (a64 + t64 * (b64 - a64)).to(a.dtype)
    return _pin_endpoints(out, a, b, t)


def slerp(a, b, t, eps=1e-6, tiny=1e-30):
    """Spherical interpolation per token row of [B, L, D] at t [B]: direction on a great circle, length linear.

    Nearly parallel rows, and rows shorter than `tiny`, follow lerp (then the same path, within
    float error). Exactly opposite rows have no single great circle: they turn through the plane
    of a and the coordinate axis least aligned with a, so the path is deterministic.
    """
    a64, b64, t64 = a.double(), b.double(), t.double().view(-1, 1, 1)
    norm_a, norm_b = a64.norm(dim=-1, keepdim=True), b64.norm(dim=-1, keepdim=True)
    short = (norm_a < tiny) | (norm_b < tiny)
    unit_a = a64 / torch.where(short, torch.ones_like(norm_a), norm_a)
    unit_b = b64 / torch.where(short, torch.ones_like(norm_b), norm_b)
    cos = (unit_a * unit_b).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.acos(cos)
    sin_omega = torch.sin(omega)
    flat = sin_omega < eps
    opposite = flat & (cos < 0) & ~short
    safe_sin = torch.where(flat, torch.ones_like(sin_omega), sin_omega)
    general = (torch.sin((1 - t64) * omega) * unit_a + torch.sin(t64 * omega) * unit_b) / safe_sin
    half_turn = torch.cos(torch.pi * t64) * unit_a + torch.sin(torch.pi * t64) * _perpendicular(unit_a)
    direction = torch.where(opposite, half_turn, general)
    spherical = direction * ((1 - t64) * norm_a + t64 * norm_b)
    linear = a64 + t64 * (b64 - a64)
    out = torch.where((flat & ~opposite) | short, linear, spherical).to(a.dtype)
    return _pin_endpoints(out, a, b, t)


def slerp_noise(a, b, t):
    """Starting noise between two seeds' noise [B, C, H, W] at t [B]: slerp of the whole tensor as one vector,
    so it keeps a Gaussian's norm (lerp would shrink it by up to 1/sqrt(2) mid-way); exact at t = 0 and 1."""
    flat = slerp(a.flatten(1)[:, None], b.flatten(1)[:, None], t)
    return flat.view(a.shape)


def _perpendicular(unit):
    """Unit vectors [..., D] orthogonal to unit [..., D]: the least aligned coordinate axis, made orthogonal."""
    axis = torch.nn.functional.one_hot(unit.abs().argmin(dim=-1), unit.shape[-1]).to(unit.dtype)
    ortho = axis - (axis * unit).sum(-1, keepdim=True) * unit
    return ortho / ortho.norm(dim=-1, keepdim=True)


def _pin_endpoints(out, a, b, t):
    """Return a and b bit-exactly where t is 0 or 1 ([B, L, D])."""
    t = t.view(-1, 1, 1)
    return torch.where(t == 0, a, torch.where(t == 1, b, out))


INTERPOLATE = {"lerp": lerp, "slerp": slerp}


def weighted_sum(tensors, weights):
    """Sum of [L, D] tensors with float weights, in float64, cast back: [L, D]."""
    total = sum(w * x.double() for x, w in zip(tensors, weights, strict=True))
    return total.to(tensors[0].dtype)


def add_scaled(base, direction, k):
    """base [B, L, D] + k [B] * direction [L, D], in float64, cast back: [B, L, D]."""
    out = base.double() + k.double().view(-1, 1, 1).to(base.device) * direction.double()
    return out.to(base.dtype)
