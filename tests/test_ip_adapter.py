"""IP-Adapter references: a random adapter and image encoder for the tiny models (morph.testing.make_ip_adapter),
references walking between keyframes, one embedding and one strength per UNet row."""

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_job
from morph.config.yaml_file import load_config
from morph.errors import MorphError
from morph.job import check_job, prepare_job, run_job
from morph.models.ip_adapter import embed_images
from morph.models.ip_adapter_files import adapter_file, ip_adapter_files
from morph.models.ip_rows import guided_rows, scaled_rows
from morph.models.pipeline import load_model
from morph.prompts.references import borrowed
from morph.testing import make_ip_adapter

CAT, DOG = "a photo of a cat", "a drawing of a dog"
SMALL = {"frames": 3, "height": 32, "width": 32, "num_inference_steps": 2}  # what each test renders, kept small


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The tiny models' adapters and two reference pictures, made once for the module."""
    root = tmp_path_factory.mktemp("ip")
    rng = np.random.default_rng(0)
    for name in ("red", "noise"):
        pixels = np.zeros((40, 48, 3), np.uint8) + np.array([200, 30, 30], np.uint8) if name == "red" else \
            rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{name}.png")
    make_ip_adapter(root / "tiny")
    make_ip_adapter(root / "tiny-sdxl", model="tiny-sdxl")
    return root


def walk(tmp_path, made, scales=(None, None), references=("red", "noise"), model="tiny", pictures=None, own=({}, {}),
         **overrides):
    """A tiny walk from CAT to DOG whose keyframes take `references` (in `pictures`, default: made's) at `scales`
    (None: the top level's), and settings of their `own`."""
    pictures = pictures or made
    prompts = [{"prompt": p, **({"reference": str(pictures / f"{r}.png")} if r else {}),
                **({"ip_adapter_scale": s} if s is not None else {}), **settings}
               for p, r, s, settings in zip((CAT, DOG), references, scales, own)]
    overrides = {"name": "ip", **SMALL, "ip_adapter": {"path": str(made / model)}, **overrides}
    return load_config(tiny_job(tmp_path, model=model, prompts=prompts, **overrides))


def plain(tmp_path, **overrides):
    return load_config(tiny_job(tmp_path, "plain", prompts=[CAT, DOG], **{**SMALL, **overrides}))


def rendered(job, indices=(0, 1, 2)) -> torch.Tensor:
    return torch.stack([torch.from_numpy(image.copy()) for _, image, _ in job.frames(list(indices))]).float()


@pytest.fixture(scope="module")
def shelf():
    """A loader that keeps the model it loaded for the next job, as the studio's ModelShelf does: each tiny model
    loads once for the module, and every job leaves the pipeline as it found it for the next."""
    kept = {}

    def load(*args, **kwargs):
        kept.setdefault(args[0], load_model(*args, **kwargs))
        return kept[args[0]]

    return load, kept


@pytest.fixture(scope="module")
def plain_frames(tmp_path_factory, shelf):
    return rendered(prepare_job(plain(tmp_path_factory.mktemp("plain")), load=shelf[0]))


def test_strength_zero_renders_bit_for_bit_the_model_without_the_adapter_and_leaves_the_pipeline_as_it_was(
        tmp_path, made, plain_frames, shelf):
    load, kept = shelf
    zero = rendered(prepare_job(walk(tmp_path, made, scales=(0, 0)), load=load))
    after = rendered(prepare_job(plain(tmp_path), load=load))  # the same pipeline, the next job without the adapter
    assert torch.equal(zero, plain_frames) and torch.equal(after, plain_frames)
    unet = kept["tiny"].pipe.unet
    assert unet.encoder_hid_proj is None and not any(hasattr(p, "to_v_ip") for p in unet.attn_processors.values())


def test_a_batch_equals_its_frames_rendered_alone_each_with_its_own_reference(tmp_path, made, plain_frames, shelf):
    load, _ = shelf
    together = rendered(prepare_job(walk(tmp_path, made, scales=(1.0, 0.5), batch_size=3), load=load))
    alone = rendered(prepare_job(walk(tmp_path, made, scales=(1.0, 0.5), batch_size=1), load=load))
    assert (together - alone).abs().max() <= 2
    # each frame's own reference moves it: a frame given another's (diffusers #9813) would come out otherwise
    assert (together - plain_frames).abs().amax(dim=(1, 2, 3)).min() > 10
    assert (together[2] - together[0]).abs().max() > 10


def test_each_unet_row_gets_its_frames_embedding_and_strength_the_unconditional_rows_zeros(tmp_path, made,
                                                                                            monkeypatch, shelf):
    job = prepare_job(walk(tmp_path, made, scales=(1.0, 0.5), batch_size=3), load=shelf[0])
    [mechanism] = job.renderer.mechanisms
    seen = []
    projection = mechanism.layers.projection
    monkeypatch.setattr(projection, "forward", lambda embeds, own=projection.forward: seen.append(
        (embeds[0].clone(), mechanism.layers.values[0].scale.clone())) or own(embeds))
    rendered(job)
    walking = job.path.frame_inputs([0, 1, 2])
    embeds, scales = seen[0]
    assert len(seen) == job.settings.num_inference_steps and embeds.shape == (6, 1, walking["ip_embeds"].shape[-1])
    assert torch.equal(embeds[3:], walking["ip_embeds"]) and not embeds[:3].any()
    assert scales.tolist() == [1.0, 0.75, 0.5] * 2


def test_the_middle_frames_embedding_is_the_slerp_of_its_keyframes(tmp_path, made, shelf):
    job = prepare_job(walk(tmp_path, made), load=shelf[0])
    ends = embed_images(job.loaded.pipe, str(made / "tiny" / "image_encoder"),
                        [Image.open(made / "red.png").convert("RGB"),
                         Image.open(made / "noise.png").convert("RGB")]).double()
    embeds = job.path.frame_inputs([0, 1, 2])["ip_embeds"][:, 0].double()
    # to float32 rounding: a row's result may depend on the batch it was computed in (CPU kernels differ by machine)
    close = lambda x, y: torch.allclose(x, y, rtol=0, atol=1e-5)  # noqa: E731
    assert close(embeds[0], ends[0].float().double()) and close(embeds[2], ends[1].float().double())
    a, b, middle = ends[0], ends[1], embeds[1]
    angle = torch.acos(torch.dot(a, b) / (a.norm() * b.norm()))
    assert angle > 0.1  # two directions, so a lerp would be off the circle
    for end in (a, b):  # half way along the great circle, its length half way too
        assert torch.acos(torch.dot(middle, end) / (middle.norm() * end.norm())).item() == pytest.approx(
            angle.item() / 2, abs=1e-4)
    assert middle.norm().item() == pytest.approx(((a.norm() + b.norm()) / 2).item(), rel=1e-5)


def test_with_guidance_walking_too_a_batch_equals_its_frames_rendered_alone(tmp_path, made, shelf):
    load, _ = shelf
    guided = {"scales": (1.0, 0.5), "own": ({"guidance_scale": 2.0}, {"guidance_scale": 7.0})}
    job = prepare_job(walk(tmp_path, made, batch_size=3, **guided), load=load)
    assert job.path.frame_inputs([0, 1, 2])["guidance"].tolist() == [2.0, 4.5, 7.0]
    alone = rendered(prepare_job(walk(tmp_path, made, batch_size=1, **guided), load=load))
    assert (rendered(job) - alone).abs().max() <= 2


def test_hires_with_references_at_strength_zero_renders_hires_alone_and_references_move_it(tmp_path, made, shelf):
    load, _ = shelf
    hires = {"hires": {"strength": 0.5, "upscale": "latent"}}
    base = rendered(prepare_job(plain(tmp_path, **hires), load=load), [0])
    zero = rendered(prepare_job(walk(tmp_path, made, scales=(0, 0), **hires), load=load), [0])
    full = rendered(prepare_job(walk(tmp_path, made, **hires), load=load), [0])
    assert base.shape[1:3] == (64, 64) and torch.equal(zero, base) and (full - base).abs().max() > 10


def test_a_16_bit_reference_is_embedded_as_the_8_bit_picture_it_holds(tmp_path, made, shelf):
    grey = np.random.default_rng(1).integers(0, 256, (40, 48)).astype(np.uint8)
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "deep.png")  # read by PIL as I;16
    Image.fromarray(grey).save(tmp_path / "flat.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I;16")
    config = walk(tmp_path, made, references=("deep", "flat"), pictures=tmp_path)
    embeds = prepare_job(config, load=shelf[0]).path.along["ip_embeds"]
    # the same picture, to float32 rounding (rows of one batch); PIL's convert("RGB") would have made it nearly all white
    assert torch.allclose(embeds[0], embeds[1], rtol=0, atol=1e-5)


def test_an_adapter_that_fails_half_way_through_loading_leaves_the_kept_pipeline_as_it_was(tmp_path, made, shelf):
    from safetensors.torch import load_file, save_file

    state = load_file(made / "tiny" / "ip-adapter.safetensors")
    save_file({**state, "image_proj.norm.weight": torch.ones(3)}, tmp_path / "ip-adapter.safetensors")
    load, kept = shelf
    config = walk(tmp_path, made, ip_adapter={"path": str(tmp_path / "ip-adapter.safetensors"),
                                              "image_encoder": str(made / "tiny" / "image_encoder")})
    with pytest.raises(MorphError, match="does not fit the model's UNet"):  # its attention layers already in place
        prepare_job(config, load=load)
    unet = kept["tiny"].pipe.unet
    assert unet.encoder_hid_proj is None and not any(hasattr(p, "to_v_ip") for p in unet.attn_processors.values())


def test_sdxl_takes_references_at_strength_zero_as_the_model_without_them(tmp_path, made, shelf):
    load, _ = shelf
    base = rendered(prepare_job(plain(tmp_path, model="tiny-sdxl"), load=load), [0, 2])
    zero = rendered(prepare_job(walk(tmp_path, made, scales=(0, 0), model="tiny-sdxl"), load=load), [0, 2])
    full = rendered(prepare_job(walk(tmp_path, made, model="tiny-sdxl"), load=load), [0, 2])
    assert torch.equal(zero, base) and (full - base).abs().amax(dim=(1, 2, 3)).min() > 10


def test_frames_record_their_references_and_the_store_renders_again_what_a_reference_changes(tmp_path, made, shelf):
    for name in ("red", "noise"):
        (tmp_path / f"{name}.png").write_bytes((made / f"{name}.png").read_bytes())
    config = walk(tmp_path, made, scales=(1.0, 0.5), pictures=tmp_path, frames=4)
    first = run_job(config, frames="0-2", quiet=True, load=shelf[0])  # a selection: no video or storm map to make
    assert first["frames"][1]["ip_adapter_scales"] == [1.0, 0.5] and len(set(first["frames"][1]["references"])) == 2
    assert set(first["ip_adapter"]) == {"adapter", "image_encoder"}
    assert run_job(config, frames="0-2", quiet=True, load=shelf[0])["rendered"] == 0
    Image.open(made / "red.png").transpose(Image.FLIP_LEFT_RIGHT).save(tmp_path / "noise.png")  # same name, other
    # each frame's key names both its ends
    assert run_job(config, frames="0-2", quiet=True, load=shelf[0])["rendered"] == 3


def test_a_keyframe_without_a_reference_fades_the_nearest_one_out():
    assert borrowed(["a", None, None, "b", None]) == ["a", "a", "a", "b", "b"]
    assert borrowed([None, "b", None]) == ["b", "b", "b"]


def test_rows_are_guided_and_scaled_per_row():
    values = torch.ones(4, 2, 3)
    scaled = scaled_rows(values, torch.tensor([0.0, 0.5, 2.0, 1.0]))
    assert scaled[:, 0, 0].tolist() == [0.0, 0.5, 2.0, 1.0] and torch.equal(scaled[0], torch.zeros(2, 3))
    with pytest.raises(ValueError, match="4 rows of values and \\(2,\\) scales"):
        scaled_rows(values, torch.ones(2))
    cond, uncond = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0])
    assert guided_rows(uncond, cond, True).tolist() == [0.0, 0.0, 1.0, 2.0]
    assert guided_rows(uncond, cond, False).tolist() == [1.0, 2.0]


def test_the_adapter_is_found_in_a_folder_a_file_or_a_cached_hub_id(made, tmp_path, monkeypatch):
    file = str(made / "tiny" / "ip-adapter.safetensors")
    assert adapter_file(str(made / "tiny")) == file and adapter_file(file) == file
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo, local_files_only: str(made) if repo == "someone/ip" and local_files_only else
                        (_ for _ in ()).throw(huggingface_hub.errors.LocalEntryNotFoundError("not cached")))
    assert adapter_file("someone/ip/tiny/ip-adapter.safetensors") == file
    with pytest.raises(MorphError, match="'someone/ip' holds 2 IP-Adapter files \\(tiny/ip-adapter.safetensors, "
                                         "tiny-sdxl/ip-adapter.safetensors\\); name one, e.g. someone/ip/tiny/ip-"):
        adapter_file("someone/ip")
    with pytest.raises(MorphError, match="'someone/other' is neither a local file or folder nor in the Hugging Face "
                                         "cache; download it on a connected machine with `hf download someone/other`"):
        adapter_file("someone/other")


def test_an_adapter_for_another_family_or_encoder_is_refused_in_one_line(tmp_path, made, shelf):
    config = walk(tmp_path, made, model="tiny-sdxl", ip_adapter={"path": str(made / "tiny")})
    with pytest.raises(MorphError, match="was made for a UNet whose cross-attention reads 32 channels, and the "
                                         "model's reads 80"):
        prepare_job(config, load=shelf[0])
    make_ip_adapter(tmp_path / "wide", embed_width=24)
    with pytest.raises(MorphError, match="embeds images in 24 channels, and the adapter reads 16"):
        check_job(walk(tmp_path, made, ip_adapter={"path": str(made / "tiny" / "ip-adapter.safetensors"),
                                                  "image_encoder": str(tmp_path / "wide" / "image_encoder")}))
    assert ip_adapter_files(plain(tmp_path)) is None
