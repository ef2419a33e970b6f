"""The toy world: one coloured shape on a light background, drawn from a caption, on the fly.

Captions read "a [small|large] <colour> <shape>". Drawing is in torch and seeded, so the same
generator state draws the same batch on any machine.
"""

import torch

COLOURS = {
    "red": (0.90, 0.10, 0.10),
    "green": (0.10, 0.75, 0.15),
    "blue": (0.10, 0.25, 0.90),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.55, 0.15, 0.75),
    "orange": (1.00, 0.55, 0.05),
}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": (0.14, 0.20), "large": (0.30, 0.40)}  # half-extent as a fraction of the image side
BACKGROUND = 0.92
# Fill ratio of a shape's bounding box: circle pi/4, square 1, triangle 1/2. The thresholds sit
# between them and are checked on drawn ground truth in the tests.
FILL_THRESHOLDS = (0.64, 0.90)


def caption(colour: str, shape: str, size: str | None = None) -> str:
    return f"a {size} {colour} {shape}" if size else f"a {colour} {shape}"


def sample_scenes(n: int, generator: torch.Generator, size: int = 64):
    """n random scenes: images [n, 3, size, size] in -1..1 and their captions."""
    colours = list(COLOURS)
    c = torch.randint(len(colours), (n,), generator=generator)
    s = torch.randint(len(SHAPES), (n,), generator=generator)
    z = torch.randint(3, (n,), generator=generator)  # 0: no size word, 1: small, 2: large
    u = torch.rand(n, 4, generator=generator)
    sizes = torch.where(z == 0, 1 + (u[:, 3] >= 0.5).long(), z)  # no size word: small or large at random
    bounds = torch.tensor([SIZES["small"], SIZES["small"], SIZES["large"]])[sizes]
    half = bounds[:, 0] + (bounds[:, 1] - bounds[:, 0]) * u[:, 0]
    cx, cy = (half + (1 - 2 * half) * u[:, k] for k in (1, 2))
    masks = shape_masks(s, cx, cy, half, size)
    rgb = torch.tensor([COLOURS[k] for k in colours])[c].view(n, 3, 1, 1)
    images = BACKGROUND * (1 - masks[:, None]) + rgb * masks[:, None]
    captions = [caption(colours[int(c[i])], SHAPES[int(s[i])], (None, "small", "large")[int(z[i])])
                for i in range(n)]
    return images * 2 - 1, captions


def shape_masks(shape, cx, cy, half, size: int) -> torch.Tensor:
    """Soft (anti-aliased) masks [n, size, size] in 0..1; shape [n] indexes SHAPES, cx, cy, half [n] in 0..1."""
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    dx, dy = x - cx.view(-1, 1, 1), y - cy.view(-1, 1, 1)
    half = half.view(-1, 1, 1)
    circle = torch.sqrt(dx**2 + dy**2) - half
    square = torch.maximum(dx.abs(), dy.abs()) - half
    # an upward triangle: apex at the top centre of its box, base along the bottom
    triangle = torch.maximum(dy - half, (dx.abs() * 2 - (dy + half)) / 5**0.5)
    distance = torch.stack([circle, square, triangle], dim=1)[torch.arange(len(cx)), shape]
    return torch.sigmoid(-distance * size * 2)


def draw(shape: str, colour: str, cx: float, cy: float, half: float, size: int = 64) -> torch.Tensor:
    """One scene [3, size, size] in 0..1."""
    mask = shape_masks(torch.tensor([SHAPES.index(shape)]), torch.tensor([cx]), torch.tensor([cy]),
                       torch.tensor([half]), size)[0]
    rgb = torch.tensor(COLOURS[colour]).view(3, 1, 1)
    return BACKGROUND * (1 - mask) + rgb * mask


def measure(image) -> dict:
    """What a picture [H, W, 3] (uint8 or 0..1 float) shows: dominant colour, shape class, foreground area.

    Foreground: pixels far from the background grey. Colour: the palette entry nearest their
    mean. Shape: the fill ratio of their bounding box.
    """
    img = torch.as_tensor(image).float()
    if img.max() > 1.5:
        img = img / 255
    foreground = (img - BACKGROUND).abs().max(dim=-1).values > 0.25
    area = float(foreground.float().mean())
    if foreground.sum() < 4:
        return {"colour": None, "shape": None, "area": area}
    mean = img[foreground].mean(dim=0)
    colour = min(COLOURS, key=lambda k: float(((torch.tensor(COLOURS[k]) - mean) ** 2).sum()))
    ys, xs = torch.nonzero(foreground, as_tuple=True)
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    fill = float(foreground.sum() / box)
    shape = "triangle" if fill < FILL_THRESHOLDS[0] else "circle" if fill < FILL_THRESHOLDS[1] else "square"
    return {"colour": colour, "shape": shape, "area": area, "fill": fill}
