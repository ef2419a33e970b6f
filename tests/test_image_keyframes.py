"""Image keyframes: a picture DDIM-inverted into its keyframe's starting latent, redrawn by the keyframe's frame,
walked from, kept in the store; pictures read and fitted; what cannot be inverted refused."""

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import morph.render.image_keyframes
import morph.render.inversion
from morph.config.yaml_file import load_config
from morph.errors import MorphError
from morph.job import run_job
from morph.media.picture import fitted, read_picture
from morph.media.video import read_png
from morph.render.image_keyframes import _check_spacing
from morph.render.inversion import psnr

TOY = {"model": "toy", "height": 64, "width": 64, "num_inference_steps": 10, "guidance_scale": 1.0, "device": "cpu",
       "batch_size": 3}


def toy_job(folder, name, prompts, frames, **keys):
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **TOY, "prompts": prompts, "frames": frames,
                                    "output": str(folder / name), **keys}))
    return load_config(path)


@pytest.fixture(scope="module")
def image_walk(tmp_path_factory):
    """A red circle the toy drew (seed 5), then a walk (seed 0) from it (as an image keyframe, inverted at guidance 1)
    to a text keyframe, run twice: (folder, the picture, the walk's manifest, [inversions in each run, frames the second
    rendered])."""
    folder = tmp_path_factory.mktemp("images")
    # drawn from another seed than the walk's: only the inversion can bring the walk's frame 0 back to it
    drawn = run_job(toy_job(folder, "drawn", ["a large red circle", "a small blue square"], 2, seed=5), quiet=True)
    Image.open(f"{drawn['frames_dir']}/00000.png").save(folder / "red.png")
    real, calls = morph.render.image_keyframes.invert, []

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    morph.render.image_keyframes.invert = counted
    try:
        walk = toy_job(folder, "walk", [{"prompt": "a large red circle", "image": "red.png"}, "a small blue square"], 3)
        manifest = run_job(walk, quiet=True)
        first = len(calls)
        again = run_job(walk, quiet=True)  # the inversion read from the store, and so every frame's key the same
    finally:
        morph.render.image_keyframes.invert = real
    return folder, read_png(folder / "red.png"), manifest, [first, len(calls) - first, again["rendered"]]


def test_the_keyframe_frame_redraws_a_picture_the_toy_drew(image_walk):
    folder, picture, manifest, _ = image_walk
    frame = read_png(f"{manifest['frames_dir']}/00000.png")
    assert psnr(frame, picture) >= 32
    recorded = manifest["image_keyframes"]
    assert [r["keyframe"] for r in recorded["keyframes"]] == [0] and recorded["keyframes"][0]["fit"] == "crop"
    assert len(recorded["psnr"]) == 1 and recorded["psnr"][0] >= 32
    assert recorded["inversion_s"] > 0  # reading, fitting and inverting the picture, and redrawing it
    assert manifest["scheduler"] == "DDIMScheduler"


def test_the_walk_leaves_the_picture_for_the_text_keyframe(image_walk):
    _, picture, manifest, _ = image_walk
    start, middle, end = (read_png(f"{manifest['frames_dir']}/{i:05d}.png").astype(int) for i in range(3))
    assert np.abs(middle - start).mean() > 2 and np.abs(middle - end).mean() > 2
    assert np.abs(end - picture).mean() > 2  # the text keyframe starts from its seed's noise, not the picture's


def test_a_rerun_reads_the_inversion_from_the_store(image_walk):
    folder, _, _, calls = image_walk
    assert calls == [1, 0, 0]
    assert len(list((folder / "walk" / ".store").glob("*.safetensors"))) == 1


def test_image_keyframes_render_with_ddim_and_a_plain_walk_keeps_its_scheduler(image_walk):
    folder, _, _, _ = image_walk
    plain = load_config(folder / "walk.yaml", prompts=["a large red circle", "a small blue square"])
    assert plain.scheduler_choice() == (None, {})  # without images the model's own scheduler, keys unchanged
    assert load_config(folder / "walk.yaml").scheduler_choice() == ("DDIMScheduler", {})


def _saved(folder, name, array, mode=None, **options):
    path = folder / name
    Image.fromarray(array, mode).save(path, **options)
    return path


def test_pictures_morph_converts_lose_nothing(tmp_path):
    grey16 = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    read = np.asarray(read_picture(_saved(tmp_path, "deep.png", grey16), 10**6, "image"))
    assert read.shape == (64, 64, 3) and np.array_equal(read[..., 0], np.round(grey16 / 257).astype(np.uint8))
    opaque = np.full((8, 8, 4), 255, np.uint8)
    opaque[..., 0] = 40
    assert np.asarray(read_picture(_saved(tmp_path, "opaque.png", opaque), 10**6, "image"))[0, 0].tolist() == \
        [40, 255, 255]


@pytest.mark.parametrize("name, make, fragment", [
    ("see-through.png", lambda p: Image.new("RGBA", (8, 8), (1, 2, 3, 0)).save(p), "has transparent pixels"),
    ("print.jpg", lambda p: Image.new("CMYK", (8, 8)).save(p), "is CMYK"),
    ("moving.gif", lambda p: Image.new("L", (8, 8)).save(p, save_all=True, append_images=[Image.new("L", (8, 8), 255)]),
     "holds 2 frames"),
    ("notes.png", lambda p: p.write_text("not a picture"), "is not an image"),
    ("big.png", lambda p: Image.new("1", (200, 200)).save(p), "more than limits.max_image_pixels (1000)"),
])
def test_pictures_morph_refuses_say_why(tmp_path, name, make, fragment):
    make(tmp_path / name)
    with pytest.raises(MorphError, match=re.escape(fragment)):
        read_picture(tmp_path / name, 1000, "prompts[0].image")


def test_crop_covers_the_frame_and_pad_fits_inside_it():
    wide = Image.fromarray(np.full((10, 40, 3), 200, np.uint8))
    assert (fitted(wide, 16, 16, "crop") == 200).all()
    padded = fitted(wide, 16, 16, "pad")
    assert padded.shape == (16, 16, 3) and (padded[0] == 0).all() and (padded[8] == 200).all()


def test_a_keyframe_its_frame_redraws_badly_is_a_one_line_warning(write_config, tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)  # nothing the tiny model can draw
    Image.fromarray(noise).save(tmp_path / "noise.png")
    config = load_config(write_config(prompts=["a cat", {"prompt": "a dog", "image": "noise.png", "fit": "pad"}],
                                      frames=2, guidance_scale=1.0))
    with pytest.warns(UserWarning, match=r"prompts\[1\]\.image: its frame redraws the picture at only") as caught:
        manifest = run_job(config, quiet=True)
    assert ["\n" in str(w.message) for w in caught] == [False]
    assert manifest["image_keyframes"]["psnr"][0] < 20


@pytest.fixture
def counted_inversions(monkeypatch):
    """invert counted: the noise of each call, in order."""
    real, noises = morph.render.image_keyframes.invert, []

    def counted(*args, **kwargs):
        noises.append(real(*args, **kwargs))
        return noises[-1]

    monkeypatch.setattr(morph.render.image_keyframes, "invert", counted)
    return noises


def _picture(folder):
    wide = np.random.default_rng(1).integers(0, 256, (48, 80, 3), dtype=np.uint8)  # crop and pad differ
    Image.fromarray(wide).save(folder / "wide.png")
    return "wide.png"


def test_the_inversion_is_kept_by_what_decides_it_and_a_measurement_keys_no_frame(write_config, tmp_path,
                                                                                   counted_inversions, monkeypatch):
    image = _picture(tmp_path)
    prompts = [{"prompt": "a cat", "image": image}, {"prompt": "a cat", "image": image, "fit": "pad"},
               {"prompt": "a dog", "image": image}]
    job = write_config(prompts=prompts, frames=3, guidance_scale=1.0)
    first = run_job(load_config(job), quiet=True)
    # fit and prompt each move the key
    assert len(counted_inversions) == 3
    for kept in (tmp_path / "out").rglob("*.safetensors"):
        kept.unlink()  # inverted again, and measured otherwise (as on another rank): no frame's key moves
    monkeypatch.setattr(morph.render.image_keyframes, "psnr", lambda a, b: 55.0)
    again = run_job(load_config(job), quiet=True)
    assert len(counted_inversions) == 6 and again["rendered"] == 0 and again["image_keyframes"]["psnr"] == [55.0] * 3
    assert again["image_keyframes"]["keyframes"] == first["image_keyframes"]["keyframes"]
    steps = run_job(load_config(write_config(prompts=prompts, frames=3, guidance_scale=1.0,
                                             inversion={"num_inference_steps": 2})), quiet=True)
    assert len(counted_inversions) == 9 and steps["rendered"] == 3


def test_a_keyframe_is_inverted_at_its_own_lora_strengths(write_config, tmp_path, lora_file, counted_inversions):
    image = _picture(tmp_path)
    style = lora_file(parts=("unet",))
    run_job(load_config(write_config(name="plain", prompts=[{"prompt": "a cat", "image": image}, "a dog"],
                                     frames=2, guidance_scale=1.0)), quiet=True)
    run_job(load_config(write_config(name="styled", loras=[{"path": str(style), "name": "style", "scale": 1.0}],
                                     prompts=[{"prompt": "a cat", "image": image, "loras": {"style": 0}}, "a dog"],
                                     frames=2, guidance_scale=1.0)), quiet=True)
    plain, at_zero = counted_inversions
    assert torch.allclose(plain, at_zero, atol=1e-5)  # strength 0 is the model without it, as its frame renders


@pytest.mark.parametrize("options, named", [({"timestep_spacing": "linspace"}, "timestep_spacing linspace"),
                                            ({"thresholding": True}, "timestep_spacing leading and thresholding")])
def test_a_model_scheduler_ddim_inversion_cannot_run_is_one_line(options, named):
    model = SimpleNamespace(scheduler=SimpleNamespace(config=options))  # the model's own options, loaded
    with pytest.raises(MorphError, match=rf"^prompts\[2\]\.image: the model's scheduler has {named}, which DDIM"):
        _check_spacing(model, 2)


def test_noise_that_is_not_finite_is_refused_in_one_line(write_config, tmp_path, monkeypatch):
    monkeypatch.setattr(morph.render.inversion, "_denoise", lambda *args, **kwargs: torch.full((1, 4, 8, 8), torch.nan))
    job = write_config(prompts=[{"prompt": "a cat", "image": _picture(tmp_path)}, "a dog"], frames=2)
    with pytest.raises(MorphError, match=r"^prompts\[0\]\.image: DDIM inversion of the picture gave non-finite noise"):
        run_job(load_config(job), quiet=True)


def test_a_camera_picture_is_read_upright_and_an_mpo_as_its_first_picture(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned a quarter clockwise
    wide = np.zeros((4, 8, 3), np.uint8)
    wide[:, 0] = 255  # the left column, which upright is the top row
    Image.fromarray(wide).save(tmp_path / "turned.png", exif=exif)
    upright = np.asarray(read_picture(tmp_path / "turned.png", 10**6, "image"))
    assert upright.shape == (8, 4, 3) and (upright[0] == 255).all() and (upright[1:] == 0).all()
    Image.new("RGB", (16, 16), (200, 0, 0)).save(tmp_path / "camera.jpg", "MPO", save_all=True,
                                                 append_images=[Image.new("RGB", (16, 16), (0, 0, 200))])
    assert Image.open(tmp_path / "camera.jpg").n_frames == 2
    first = np.asarray(read_picture(tmp_path / "camera.jpg", 10**6, "image")).astype(int)
    assert np.abs(first - [200, 0, 0]).max() < 8
