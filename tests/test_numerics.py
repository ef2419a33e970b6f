"""Numerical faults: half-precision VAE overflow decoded again in float32, bad latents reported, bad conditionings refused."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import morph.prompts.encode
import morph.render.batch
from morph.cli import cli
from morph.config.yaml_file import load_config
from morph.errors import MorphError
from morph.golden import PRESETS
from morph.job import run_job
from morph.analysis.metrics import compare
from morph.media.video import read_png

real_decode = morph.render.batch.decode


def png(config, i):
    return read_png(config.output_dir / "frames" / f"{i:05d}.png")


def strict_json(path):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_frame_the_half_precision_vae_spoils_is_decoded_again_in_float32(write_config, monkeypatch):
    def overflowing(vae, latents):
        images = real_decode(vae, latents)
        if vae.dtype == torch.float16:
            images[1] = float("nan")  # what an fp16 VAE overflow looks like
        return images

    half = load_config(write_config(name="half", dtype="float16", frames=4))
    full = load_config(write_config(name="full", dtype="float32", frames=4))
    spoiled = load_config(write_config(name="spoiled", dtype="float16", frames=4))
    run_job(half, quiet=True)
    run_job(full, quiet=True)
    monkeypatch.setattr(morph.render.batch, "decode", overflowing)
    manifest = run_job(spoiled, quiet=True)
    assert manifest["redecoded_float32"] == [1] and manifest["broken_frames"] == []  # frame 1 of each batch of 4
    assert np.array_equal(png(spoiled, 0), png(half, 0)) and np.array_equal(png(spoiled, 2), png(half, 2))
    redone = compare(torch.from_numpy(png(spoiled, 1)), torch.from_numpy(png(full, 1)))
    assert PRESETS["cross-device"].passes(redone), redone
    assert png(spoiled, 1).max() > 0  # not the black frame NaN would have become


def test_frames_that_stay_bad_are_reported_and_the_manifest_stays_strict_json(write_config, monkeypatch):
    def always_nan(vae, latents):
        return real_decode(vae, latents) * float("nan")

    monkeypatch.setattr(morph.render.batch, "decode", always_nan)
    config = write_config(name="bad", dtype="float16", frames=3)
    result = CliRunner().invoke(cli, ["run", str(config), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "frames [0, 1, 2] are NaN or black even in float32" in result.output
    manifest = strict_json(load_config(config).output_dir / "manifest.json")
    assert manifest["broken_frames"] == [0, 1, 2] and manifest["redecoded_float32"] == [0, 1, 2]


def test_a_conditioning_that_overflowed_is_refused_before_rendering(write_config, monkeypatch):
    real_terms = morph.prompts.encode.PromptEncoder.terms

    def overflowing(self, terms):
        out = real_terms(self, terms)
        return out * float("inf") if "a drawing of a dog in kyoto" in terms else out

    monkeypatch.setattr(morph.prompts.encode.PromptEncoder, "terms", overflowing)
    with pytest.raises(MorphError, match=r"prompts\[1\]: its encoded tensor holds NaN or inf"):
        run_job(load_config(write_config()), quiet=True)


def test_the_manifest_of_a_normal_run_is_strict_json(write_config):
    config = load_config(write_config(frames=2))
    run_job(config, quiet=True)
    assert strict_json(config.output_dir / "manifest.json")["redecoded_float32"] == []
