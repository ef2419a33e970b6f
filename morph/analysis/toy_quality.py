"""Measure how well the toy model draws what it is told: ``python -m morph.analysis.toy_quality``.

Renders every colour x shape x size caption (54 captions) from seeds never used in training,
with the settings of configs/toy_demo.yaml, and measures each picture with `scenes.measure`:
the share whose dominant colour is the one named, the share whose shape class (fill ratio of the
foreground's bounding box) is the one named, and the share of (colour, shape) pairs where
"small" renders smaller than "large". The same measure is first checked on drawn ground truth.
"""

import argparse
import json
import time

import numpy as np
import torch

from ..prompts.encode import prompt_encoder
from ..models.pipeline import load_model
from ..prompts.latent import shared_latent
from ..render.batch import RenderSettings, render_batch
from ..models.toy.scenes import COLOURS, SHAPES, SIZES, caption, draw, measure

HELD_OUT_SEED = 10_000  # training draws from seed 0's generator; these latents come from other seeds
SETTINGS = {"num_inference_steps": 25, "guidance_scale": 5.0}


def held_out_captions() -> list[tuple[str, str, str | None]]:
    return [(c, s, z) for c in COLOURS for s in SHAPES for z in (None, *SIZES)]


def render_captions(pipe, captions: list[str], seeds: list[int], steps: int, guidance: float) -> list[np.ndarray]:
    """One uint8 picture [64, 64, 3] per caption, each from its own seed's starting latent."""
    encoder = prompt_encoder(pipe)
    negative = encoder.text("")
    settings = RenderSettings(64, 64, steps, guidance, 0)
    images = []
    for text, seed in zip(captions, seeds):
        latent = shared_latent(pipe, seed, 64, 64)
        images.append(render_batch(pipe, encoder.text(text)[None], negative, latent, settings).images[0].cpu().numpy())
    return images


def ground_truth_accuracy() -> dict:
    """The measure applied to drawn scenes of every caption: it should be right every time."""
    right_colour = right_shape = total = 0
    for colour, shape, size in held_out_captions():
        low, high = SIZES[size or "large"]
        image = draw(shape, colour, 0.5, 0.5, (low + high) / 2).permute(1, 2, 0)
        m = measure(image)
        right_colour += m["colour"] == colour
        right_shape += m["shape"] == shape
        total += 1
    return {"colour": right_colour / total, "shape": right_shape / total}


def evaluate(model: str = "toy") -> dict:
    """Render the held-out captions and score them; returns the figures (also printed by main)."""
    pipe = load_model(model, torch.device("cpu"), torch.float32, None, False).pipe
    cases = held_out_captions()
    texts = [caption(c, s, z) for c, s, z in cases]
    images = render_captions(pipe, texts, [HELD_OUT_SEED + i for i in range(len(cases))],
                             SETTINGS["num_inference_steps"], SETTINGS["guidance_scale"])
    measured = [measure(image) for image in images]
    colour_ok = [m["colour"] == c for m, (c, _, _) in zip(measured, cases)]
    shape_ok = [m["shape"] == s for m, (_, s, _) in zip(measured, cases)]
    area = {(c, s, z): m["area"] for m, (c, s, z) in zip(measured, cases)}
    size_ok = [area[(c, s, "small")] < area[(c, s, "large")] for c in COLOURS for s in SHAPES]
    return {
        "captions": len(cases),
        "colour_accuracy": sum(colour_ok) / len(cases),
        "shape_accuracy": sum(shape_ok) / len(cases),
        "small_smaller_than_large": sum(size_ok) / len(size_ok),
        "mean_area_small": float(np.mean([area[k] for k in area if k[2] == "small"])),
        "mean_area_large": float(np.mean([area[k] for k in area if k[2] == "large"])),
        "ground_truth": ground_truth_accuracy(),
        "misses": [texts[i] + f" -> {measured[i]['colour']} {measured[i]['shape']}"
                   for i in range(len(cases)) if not (colour_ok[i] and shape_ok[i])],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy", help="a diffusers folder trained on the toy world (default: toy)")
    args = parser.parse_args()
    started = time.perf_counter()
    figures = evaluate(args.model)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
