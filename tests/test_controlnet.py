"""ControlNets: strength 0 is the model without one, a constant strength is diffusers' own ControlNet pipeline, a
strength per frame inside one batch, a walk, the control image (fit, canny), families, the store's keys."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from morph.config.jobs import validate
from morph.config.yaml_file import load_config
from morph.errors import MorphError
from morph.job import run_job
from morph.media.video import read_png
from morph.models.controlnet_files import ControlNetFile, Family, check_fits, read_controlnet
from morph.models.pipeline import load_model
from morph.prompts.encode import prompt_encoder
from morph.prompts.latent import shared_latent
from morph.render.batch import RenderSettings, render_batch
from morph.render.control_image import canny, control_image, fitted
from morph.render.controlnet import controlnets
from morph.render.controlnet_math import acts
from morph.render.mechanisms import unet_mechanisms
from morph.testing import make_controlnet

SETTINGS = RenderSettings(32, 32, 2, 7.5, 0)  # small and few steps: the tests render a dozen batches
CAT = "a photo of a cat"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A square to hold, a ControlNet folder and a second ControlNet as one .safetensors file, all for tiny."""
    folder = tmp_path_factory.mktemp("controlnets")
    square = np.zeros((64, 64, 3), np.uint8)
    square[16:48, 16:48] = 255
    Image.fromarray(square).save(folder / "square.png")
    return {"image": str(folder / "square.png"), "net": str(make_controlnet(folder / "net")),
            "file": str(make_controlnet(folder / "lines.safetensors", layout="file", seed=1))}


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny", torch.device("cpu"), torch.float32, None, False)


def config(files, *entries, **keys):
    """A tiny walk with ControlNets, each entry {path, ...} over the square image."""
    return validate({"model": "tiny", "prompts": [CAT, CAT],
                     "controlnets": [{"image": files["image"], **entry} for entry in entries], **keys})


def render(tiny, mechanisms=(), rows=None, n=3):
    """The tiny model's latents-to-pixels render of `n` cats in one batch, ControlNet strengths `rows` [n, m]."""
    encoder = prompt_encoder(tiny.pipe, None)
    conds = torch.stack([encoder.text(CAT)] * n)
    return render_batch(tiny.pipe, conds, encoder.negative(""), shared_latent(tiny.pipe, 0, 32, 32), SETTINGS,
                        mechanisms=mechanisms, walking={} if rows is None else {"controlnets": rows}).images.float()


def test_strength_zero_renders_exactly_the_model_without_it_and_never_runs_it(files, tiny, monkeypatch):
    mechanism = controlnets(config(files, {"path": files["net"], "scale": 0}), tiny, None)
    monkeypatch.setattr(mechanism.controls[0], "net", None)  # not called: a call would fail
    assert torch.equal(render(tiny, (mechanism,), n=2), render(tiny, n=2))


def test_a_job_without_controlnets_has_no_mechanism_and_keeps_its_config_hash(files, tiny):
    plain = validate({"model": "tiny", "prompts": [CAT, CAT]})
    assert unet_mechanisms(plain, tiny, None) == () and "controlnets" not in plain.pixel_keys()
    assert plain.pixel_hash() != config(files, {"path": files["net"]}).pixel_hash()


def test_constant_strengths_equal_diffusers_own_controlnet_pipeline_with_two_controlnets_and_their_steps(files, tiny):
    """Two ControlNets (a folder and a single file) at 0.5 and 1.0, the second acting on the last half of the steps:
    diffusers' StableDiffusionControlNetPipeline with a MultiControlNetModel gives the same latents."""
    from diffusers import StableDiffusionControlNetPipeline

    mechanism = controlnets(config(files, {"path": files["net"], "scale": 0.5},
                                   {"path": files["file"], "scale": 1.0, "start": 0.5}), tiny, None)
    encoder = prompt_encoder(tiny.pipe, None)
    conds, latent = torch.stack([encoder.text(CAT)] * 2), shared_latent(tiny.pipe, 0, 32, 32).expand(2, -1, -1, -1)
    common = dict(prompt_embeds=conds, negative_prompt_embeds=encoder.negative("").expand(2, -1, -1), latents=latent,
                  height=32, width=32, num_inference_steps=SETTINGS.num_inference_steps, guidance_scale=7.5,
                  output_type="latent")
    ours = mechanism.denoise(tiny.pipe, lambda: tiny.pipe(**common).images, conds, None, {}, SETTINGS)
    stock = StableDiffusionControlNetPipeline.from_pipe(tiny.pipe, controlnet=[c.net for c in mechanism.controls])
    image = Image.open(files["image"])
    theirs = stock(**common, image=[image, image], controlnet_conditioning_scale=[0.5, 1.0],
                   control_guidance_start=[0.0, 0.5], control_guidance_end=[1.0, 1.0]).images
    plain = tiny.pipe(**common).images
    assert (ours - theirs).abs().max() < 1e-5 < (ours - plain).abs().max()
    assert "forward" not in vars(tiny.pipe.unet)  # the UNet is as it was


def test_frames_of_one_batch_at_different_strengths_equal_each_rendered_alone(files, tiny):
    mechanism = controlnets(config(files, {"path": files["net"]}), tiny, None)
    rows = torch.tensor([[0.0], [0.5], [1.0]], dtype=torch.float64)
    together = render(tiny, (mechanism,), rows)
    alone = torch.cat([render(tiny, (mechanism,), rows[i:i + 1], n=1) for i in range(3)])
    assert (together - alone).abs().max() <= 2
    assert (together[1] - together[0]).abs().max() > 10 and (together[2] - together[1]).abs().max() > 10


@pytest.mark.parametrize("step, start, end, expected", [
    (0, 0.0, 1.0, True), (3, 0.0, 1.0, True), (1, 0.25, 1.0, True), (0, 0.3, 1.0, False), (1, 0.0, 0.5, True),
    (2, 0.0, 0.5, False)])
def test_a_controlnet_acts_in_the_steps_diffusers_gives_it(step, start, end, expected):
    assert acts(step, 4, start, end) is expected


def test_a_walk_of_strength_starts_as_the_model_and_changes_the_middle_frame_and_a_held_0_is_the_model(
        files, write_config):
    net = {"path": files["net"], "name": "edges", "image": files["image"]}
    small = {"height": 32, "width": 32, "num_inference_steps": 2}

    def job(name, *strengths, **keys):
        return run_job(load_config(write_config(name=name, frames=3, **small, **keys, prompts=[
            {"prompt": CAT, "controlnets": {"edges": s}} if keys else CAT for s in strengths])), quiet=True)

    walk, held, plain = job("walk", 0, 2, controlnets=[net]), job("held", 0, 0, controlnets=[net]), job("plain", 0, 0)
    assert [f["controlnet_scales"] for f in walk["frames"]] == [{"edges": 0.0}, {"edges": 1.0}, {"edges": 2.0}]
    assert set(walk["controlnets"]) == {"edges"} and "scale" not in walk["controlnets"]["edges"]  # the records key it
    frames = [pixels(walk, i) for i in range(3)]
    assert torch.equal(frames[0], pixels(plain, 0))
    assert (frames[1] - frames[0]).abs().max() > 10 and (frames[2] - frames[1]).abs().max() > 10
    # every keyframe at 0 (the top level's 1 set by none): the strength does not walk, and is still each frame's own
    assert [f["controlnet_scales"] for f in held["frames"]] == [{"edges": 0.0}] * 3
    assert all(torch.equal(pixels(held, i), pixels(plain, i)) for i in range(3))


def test_a_hires_pass_starts_from_controlled_base_frames_and_runs_without_the_controlnets(files, tmp_path,
                                                                                         monkeypatch):
    """ControlNets act in the first pass alone, a fresh run's and a run reusing its stored base frames (which met
    the base-size control image with the larger latents, before)."""
    import morph.render.controlnet

    steps = []  # (step, steps) of every step a ControlNet was asked about
    monkeypatch.setattr(morph.render.controlnet, "acts", lambda step, n, *a: steps.append((step, n)) or acts(step, n, *a))

    def job(output, strength, **keys):
        return run_job(validate({"model": "tiny", "prompts": [CAT, CAT], "frames": 2, "height": 32, "width": 32,
                                 "num_inference_steps": 2, "device": "cpu", "output": str(tmp_path / output),
                                 "hires": {"strength": strength}, **keys}), quiet=True)

    held = [{"path": files["net"], "image": files["image"]}]
    fresh, raised = job("walk", 0.5, controlnets=held), job("walk", 0.75, controlnets=held)
    assert steps == [(0, 2), (1, 2)] and fresh["rendered"] == raised["rendered"] == 2  # one base batch, 2 steps
    plain = job("plain", 0.75)
    assert pixels(raised, 0).shape == pixels(plain, 0).shape == (64, 64, 3)
    assert (pixels(raised, 0) - pixels(plain, 0)).abs().max() > 10  # from the controlled base frames


def pixels(manifest: dict, i: int) -> torch.Tensor:
    return torch.from_numpy(read_png(f"{manifest['frames_dir']}/{manifest['frames'][i]['file']}")).float()


def test_the_key_holds_the_weights_the_image_content_and_the_settings(files, tiny, tmp_path):
    image = tmp_path / "image.png"
    Image.open(files["image"]).save(image)

    def identity(**entry):
        return json.dumps(controlnets(validate({"model": "tiny", "prompts": [CAT, CAT], "controlnets": [
            {"path": files["net"], "image": str(image), **entry}]}), tiny, None).identity(), sort_keys=True)

    before = identity()
    assert identity() == before and identity(scale=0.5) != before and identity(end=0.5) != before
    assert identity(preprocess="canny") != before != identity(path=files["file"])
    Image.fromarray(np.full((64, 64, 3), 9, np.uint8)).save(image)  # the same name, other pixels
    assert identity() != before


def test_canny_marks_the_edges_of_a_drawn_square_and_nothing_else():
    pytest.importorskip("cv2")
    image = np.zeros((40, 40, 3), np.uint8)
    image[10:30, 10:30] = 200
    edges = canny(image, 100, 200)
    assert edges.shape == (40, 40, 3) and set(np.unique(edges)) == {0, 255}
    ys, xs = np.nonzero(edges[:, :, 0])
    # every edge pixel on the square's border (the last row or column inside, or the first outside) ...
    assert all(min(abs(y - 9.5), abs(y - 29.5)) <= 0.5 and 9 <= x <= 30 or
               min(abs(x - 9.5), abs(x - 29.5)) <= 0.5 and 9 <= y <= 30 for y, x in zip(ys, xs))
    # ... and each side traced along its length
    for side in (edges[8:12, 12:28, 0], edges[28:32, 12:28, 0], edges[12:28, 8:12, 0], edges[12:28, 28:32, 0]):
        assert (side.max(axis=0 if side.shape[0] == 4 else 1) == 255).all()


def test_a_control_image_is_read_upright_as_its_exif_orientation_says(tmp_path):
    tall = np.zeros((20, 10, 3), np.uint8)
    tall[:5] = 255  # white on top as stored; orientation 6: shown turned 90 degrees clockwise, white on the right
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(tall).save(tmp_path / "phone.png", exif=exif)
    shown = (control_image(str(tmp_path / "phone.png"), 20, 10)[0, 0] * 255).round()  # [10, 20]
    assert (shown[:, -4:] == 255).all() and (shown[:, :14] == 0).all()


def test_a_control_image_of_another_shape_is_covered_and_its_centre_cut_not_stretched():
    wide = np.zeros((10, 40, 3), np.uint8)
    wide[:, 17:23] = 255  # a white band, 6 of 40 columns
    square = np.asarray(fitted(Image.fromarray(wide), 20, 20))
    assert square.shape == (20, 20, 3)
    # the band at twice its size: columns 4 to 16 of 20 (stretched, it would be 3 columns; letterboxed, 1.5 rows high)
    assert (square[:, 5:15] > 190).all() and (square[:, :3] < 30).all() and (square[:, -3:] < 30).all()


@pytest.mark.parametrize("model, family", [("tiny", "SD 1.x"), ("tiny-sd2", "SD 2.x"), ("tiny-sdxl", "SDXL")])
def test_a_controlnets_family_is_read_from_its_config_or_its_file_and_another_is_refused(tmp_path, model, family):
    folder, file = make_controlnet(tmp_path / "net", model=model), make_controlnet(tmp_path / "n.safetensors",
                                                                                   model=model, layout="file")
    assert read_controlnet("c", "c", str(folder)).family == read_controlnet("c", "c", str(file)).family
    assert read_controlnet("c", "c", str(folder)).family.words().startswith(family)
    other = "tiny-sdxl" if model == "tiny" else "tiny"
    with pytest.raises(MorphError, match=rf"controlnets\[0\]: 'c' is a ControlNet for {family} .* and model "
                                         rf"'{other}' is "):
        from morph.models.controlnet_files import read_controlnets

        image = tmp_path / "i.png"
        Image.new("RGB", (8, 8)).save(image)
        read_controlnets(validate({"model": other, "prompts": [CAT, CAT],
                                   "controlnets": [{"path": str(folder), "name": "c", "image": str(image)}]}))


@pytest.mark.parametrize("prefix", ["control_model.", ""])
def test_a_file_in_the_original_layout_is_read_by_its_tensor_names(tmp_path, prefix):
    """A header-only stand-in of an original SD 2.x ControlNet (linear projections), its keys under control_model. or
    bare (one saved apart from its model)."""
    block = f"{prefix}input_blocks.1.1"
    save_file({f"{prefix}input_hint_block.0.weight": torch.zeros(16, 3, 3, 3),
               f"{prefix}time_embed.0.weight": torch.zeros(1280, 320), f"{block}.proj_in.weight": torch.zeros(320, 320),
               f"{block}.transformer_blocks.0.attn2.to_k.weight": torch.zeros(320, 1024),
               **{f"{prefix}zero_convs.{i}.0.weight": torch.zeros(c, c, 1, 1) for i, c in enumerate([320, 640])}},
              tmp_path / "sd2.safetensors")
    family = read_controlnet("c", "c", str(tmp_path / "sd2.safetensors")).family
    assert family.words() == "SD 2.x (its cross-attention reads 1024 channels)" and family.residuals == (320, 640)


def test_a_controlnet_of_the_family_whose_blocks_differ_is_refused_naming_its_residuals():
    own = ControlNetFile("c", "c", Family(32, False, False, (32, 32, 32, 64)))
    check_fits("controlnets[0]", own, "m", Family(32, False, False, (32, 32, 32, 64)))
    with pytest.raises(MorphError, match=r"for another SD 1.x model: its residuals have \[32, 32, 32, 64\] channels, "
                                         r"and those of model 'm' \[32, 32, 64\]"):
        check_fits("controlnets[0]", own, "m", Family(32, False, False, (32, 32, 64)))
