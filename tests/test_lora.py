"""LoRAs: loaded in either key layout, a strength per frame inside one batch, text-encoder LoRAs per keyframe,
families, the frame store's keys, and bad input."""

import json
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from morph.cli import cli
from morph.config.yaml_file import load_config
from morph.prompts.encode import prompt_encoder
from morph.errors import MorphError
from morph.job import prepare_job, run_job
from morph.models.lora_files import check_fits, read_lora
from morph.models.pipeline import load_model
from morph.prompts.latent import shared_latent
from morph.render.batch import RenderSettings, render_batch

CONFIGS_DIR = Path(__file__).parents[1] / "configs"
SETTINGS = RenderSettings(64, 64, 3, 7.5, 0)
CAT = "a photo of a cat"


def loaded(path=None, scale=1.0, model="tiny", more=()):
    """`model` with the LoRA at `path` named style (at `scale`), and `more` LoRAs as (name, path, scale)."""
    named = ([("style", path, scale)] if path else []) + list(more)
    loras = [read_lora(f"loras[{i}]", name, str(file)) for i, (name, file, _) in enumerate(named)]
    return load_model(model, torch.device("cpu"), torch.float32, None, False, loras=loras,
                      lora_scales=[scale for *_, scale in named])


def render(model, texts, rows=None):
    """The model's renders of `texts` in one batch, at LoRA strengths `rows` [B, n] (None: the loaded scale)."""
    encoder = prompt_encoder(model.pipe, model.loras)
    conds = torch.stack([encoder.text(t) for t in texts])
    latent = shared_latent(model.pipe, 0, 64, 64)
    return render_batch(model.pipe, conds, encoder.negative(""), latent, SETTINGS, loras=model.loras,
                        lora_rows=rows).images.float()


def test_strength_zero_renders_exactly_the_model_without_the_lora(lora_file):
    assert torch.equal(render(loaded(lora_file(), 0.0), [CAT] * 2), render(loaded(), [CAT] * 2))


def test_kohya_and_diffusers_layouts_load_the_same_lora(lora_file):
    diffusers, kohya = lora_file("d"), lora_file("k", layout="kohya")
    parts = [read_lora("l", name, str(path)).parts for name, path in (("d", diffusers), ("k", kohya))]
    assert parts == [["unet", "text_encoder"]] * 2
    ours = render(loaded(diffusers, 0.7), [CAT])
    assert torch.equal(ours, render(loaded(kohya, 0.7), [CAT]))
    assert (ours - render(loaded(), [CAT])).abs().max() > 10  # the LoRA changes the picture


def test_a_constant_strength_equals_diffusers_own_set_adapters(lora_file):
    path = lora_file()
    stock = loaded()
    stock.pipe.load_lora_weights(str(path), adapter_name="style")
    stock.pipe.set_adapters(["style"], [0.7])
    assert (render(loaded(path, 0.7), [CAT, "a red circle"]) - render(stock, [CAT, "a red circle"])).abs().max() <= 1


def test_frames_of_one_batch_at_different_strengths_equal_each_rendered_alone(lora_file):
    model = loaded(lora_file(parts=("unet",)))  # a UNet LoRA: the strengths act per row of the batch
    rows = torch.tensor([[0.0], [1.0], [2.0]], dtype=torch.float64)
    together = render(model, [CAT] * 3, rows)
    alone = torch.cat([render(model, [CAT], rows[i:i + 1]) for i in range(3)])
    assert (together - alone).abs().max() <= 2
    assert (together[1] - together[0]).abs().max() > 10 and (together[2] - together[1]).abs().max() > 10


@pytest.mark.filterwarnings("ignore:Already found a `peft_config`")  # the stock path's second adapter
def test_two_loras_one_on_convolutions_too_walk_per_row_and_match_diffusers_at_constant_strengths(lora_file):
    style, locon = lora_file("style", parts=("unet",)), lora_file("locon", parts=("unet",), seed=1, rank=2,
                                                                    convolutions=True)
    model = loaded(style, 0.7, more=[("locon", locon, -0.4)])
    stock = loaded()
    for name, path in (("style", style), ("locon", locon)):
        stock.pipe.load_lora_weights(str(path), adapter_name=name)
    stock.pipe.set_adapters(["style", "locon"], [0.7, -0.4])
    assert (render(model, [CAT, "a red circle"]) - render(stock, [CAT, "a red circle"])).abs().max() <= 1
    rows = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.5, -1.0]], dtype=torch.float64)
    together = render(model, [CAT] * 4, rows)
    alone = torch.cat([render(model, [CAT], rows[i:i + 1]) for i in range(4)])
    assert (together - alone).abs().max() <= 2
    assert torch.equal(together[0], render(loaded(), [CAT] * 4)[0])  # both at 0: the model without them
    assert min((together[i] - together[0]).abs().max() for i in (1, 2, 3)) > 10


def test_a_compiled_unet_walks_a_lora_without_recompiling_and_within_a_level_of_eager(write_config, lora_file):
    """The strengths reach the layers as plain tensors, a compiled graph's inputs: a new batch is no new graph."""
    walk = dict(num_inference_steps=2, loras=[{"path": str(lora_file()), "name": "style"}],
                prompts=[{"prompt": CAT, "loras": {"style": 0}}, {"prompt": "a red circle", "loras": {"style": 1}}])
    eager = run_job(load_config(write_config(name="eager", **walk)), quiet=True)
    torch._dynamo.reset()  # graphs another test compiled for other weights would count as recompiles
    with torch._dynamo.config.patch(error_on_recompile=True):
        compiled = run_job(load_config(write_config(name="compiled", compile=True, **walk)), quiet=True)
    assert compiled["compiled"] is True and len(compiled["frames"]) == 6
    assert max((pixels(eager, i) - pixels(compiled, i)).abs().max() for i in range(6)) <= 1
    assert (pixels(eager, 5) - pixels(eager, 0)).abs().max() > 10


@pytest.mark.parametrize("layer, x", [(torch.nn.Linear(6, 5), torch.randn(4, 7, 6)),
                                      (torch.nn.Linear(6, 5), torch.randn(4, 6)),
                                      (torch.nn.Conv2d(6, 5, 3, padding=1), torch.randn(4, 6, 4, 4))])
def test_a_row_scaled_layer_is_pefts_layer_at_each_rows_strength_over_both_halves(layer, x):
    from peft import LoraConfig, inject_adapter_in_model

    from morph.models.lora import _row_scaled

    peft_layer = inject_adapter_in_model(LoraConfig(r=2, lora_alpha=4, target_modules=["0"], init_lora_weights=False),
                                         torch.nn.Sequential(layer))[0]
    scaled = _row_scaled("unet.0", peft_layer, ["default"])
    frames = torch.tensor([0.0, 1.5])  # a batch of two frames under CFG: rows [0, 1] unconditional, [2, 3] conditional
    scaled.scale(frames[:, None].expand(2, 2))
    with torch.no_grad():
        ours = scaled(x)
        for row, strength in enumerate(frames.repeat(2).tolist()):
            peft_layer.set_scale("default", strength)
            assert torch.allclose(ours[row], peft_layer(x[row:row + 1])[0], atol=1e-6), row
        assert torch.equal(ours[0], layer(x)[0])  # strength 0: the layer alone


def test_out_of_memory_setting_a_batchs_strengths_leaves_them_as_they_were_and_backs_off(lora_file, monkeypatch):
    """The per-row copies of A for a walking strength are a batch's memory too: running out there must not leave that
    batch's strengths set, or every smaller batch puts them back on its way out and runs out again, down to 1."""
    from morph.models.lora import RowScaled
    from morph.render.batch import BatchRenderer

    model = loaded(lora_file(parts=("unet",)))
    layers = [layer for group in model.loras._layers["unet"].values() for layer in group]
    defaults = [layer.down_scaled.clone() for layer in layers]
    scale = RowScaled.scale

    def room_for_two_frames(self, strength):  # the last layer's copies are the ones that do not fit
        if self is layers[-1] and strength.dim() == 2 and strength.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        scale(self, strength)

    monkeypatch.setattr(RowScaled, "scale", room_for_two_frames)
    rows = torch.tensor([[0.0], [0.5], [1.0], [1.5]], dtype=torch.float64)
    with pytest.raises(torch.OutOfMemoryError), model.loras.rows(rows):
        pass
    assert all(torch.equal(layer.down_scaled, d) for layer, d in zip(layers, defaults))  # every layer, not just some
    encoder = prompt_encoder(model.pipe, model.loras)
    conds = torch.stack([encoder.text(CAT)] * 4)
    renderer = BatchRenderer(model.pipe, lambda idx: conds[idx], encoder.negative(""),
                             shared_latent(model.pipe, 0, 64, 64), SETTINGS, 4,
                             inputs_for=lambda idx: {"loras": rows[idx]}, loras=model.loras)
    with pytest.warns(UserWarning, match="out of GPU memory in a batch of 4 frames; continuing with batch_size 2"):
        rendered = list(renderer.batches([[0, 1, 2, 3]]))
    assert [chunk for chunk, _ in rendered] == [[0, 1], [2, 3]]
    expected = torch.cat([render(model, [CAT] * 2, rows[:2]), render(model, [CAT] * 2, rows[2:])])
    assert torch.equal(torch.cat([batch.images for _, batch in rendered]).float(), expected)


def test_a_lora_layer_that_cannot_walk_is_refused_in_one_line():
    from peft import LoraConfig, inject_adapter_in_model

    from morph.models.lora import _row_scaled

    peft_layer = inject_adapter_in_model(LoraConfig(r=2, target_modules=["0"], lora_bias=True),
                                         torch.nn.Sequential(torch.nn.Linear(6, 5)))[0]
    with pytest.raises(MorphError, match=r"^loras: default change unet\.0 \(Linear\) in a way morph cannot give a "
                                         r"strength per frame; only plain LoRAs on Linear and Conv2d layers walk$"):
        _row_scaled("unet.0", peft_layer, ["default"])


def test_a_text_encoder_lora_encodes_each_keyframe_at_its_own_strength(lora_file):
    model, plain = loaded(lora_file(parts=("text_encoder",))), prompt_encoder(loaded().pipe)
    encoder = prompt_encoder(model.pipe, model.loras)
    with encoder.lora_scales([0.0]):
        assert torch.equal(encoder.text(CAT), plain.text(CAT))
    with encoder.lora_scales([1.0]):
        full = encoder.text(CAT)
    assert not torch.allclose(full, plain.text(CAT), atol=1e-3)
    assert torch.equal(encoder.text(CAT), full)  # outside: the loaded scale, 1


def test_a_walk_of_strength_changes_the_middle_frame_and_records_every_frames_strength(write_config, lora_file):
    path = lora_file()
    walk = run_job(load_config(write_config(
        name="walk", frames=3, loras=[{"path": str(path), "name": "style"}],
        prompts=[{"prompt": CAT, "loras": {"style": 0}}, {"prompt": CAT, "loras": {"style": 2}}])), quiet=True)
    plain = run_job(load_config(write_config(name="plain", frames=3, prompts=[CAT, CAT])), quiet=True)
    assert [f["lora_scales"] for f in walk["frames"]] == [{"style": 0.0}, {"style": 1.0}, {"style": 2.0}]
    assert walk["frames"][1]["loras"] == [{"style": 0.0}, {"style": 2.0}]
    assert walk["loras"][0]["name"] == "style" and walk["loras"][0]["parts"] == ["unet", "text_encoder"]
    assert re.fullmatch(r"[0-9a-f]{32}", walk["loras"][0]["weights"])
    frames = [pixels(walk, i) for i in range(3)]
    assert torch.equal(frames[0], pixels(plain, 0))  # strength 0 at the first keyframe
    assert (frames[1] - frames[0]).abs().max() > 10 and (frames[2] - frames[1]).abs().max() > 10


def pixels(manifest: dict, i: int) -> torch.Tensor:
    from morph.media.video import read_png

    return torch.from_numpy(read_png(f"{manifest['frames_dir']}/{manifest['frames'][i]['file']}")).float()


def test_the_store_reuses_lora_frames_and_renders_again_what_a_strength_or_the_file_changes(write_config, lora_file):
    path = lora_file()
    config = write_config(frames=4, batch_size=2, loras=[{"path": str(path)}],
                          prompts=[CAT, {"prompt": "a red circle", "loras": {"style": 0.5}}])
    first = run_job(load_config(config), quiet=True)
    assert first["rendered"] == 4 and run_job(load_config(config), quiet=True)["rendered"] == 0
    selected = run_job(load_config(config), frames="1-2", quiet=True, fresh=True)
    assert selected["rendered"] == 2 and torch.equal(pixels(selected, 0), pixels(first, 1))
    changed = write_config(frames=4, batch_size=2, loras=[{"path": str(path)}],
                           prompts=[CAT, {"prompt": "a red circle", "loras": {"style": 0.25}}])
    assert run_job(load_config(changed), quiet=True)["rendered"] == 4  # every frame but the first moved: its batch too
    lora_file(seed=1)  # the same file name, other weights
    assert run_job(load_config(changed), quiet=True)["rendered"] == 4


def test_sdxl_takes_a_lora_on_both_text_encoders(lora_file):
    path = lora_file("xl", model="tiny-sdxl", parts=("unet", "text_encoder", "text_encoder_2"))
    model, plain = loaded(path, 1.0, "tiny-sdxl"), loaded(model="tiny-sdxl")
    assert model.loras.loras[0].parts == ["unet", "text_encoder", "text_encoder_2"]
    encoder, widths = prompt_encoder(model.pipe, model.loras), [plain.pipe.text_encoder.config.hidden_size]
    ours, theirs = encoder.text(CAT), prompt_encoder(plain.pipe).text(CAT)
    assert not torch.allclose(ours[:-1, :widths[0]], theirs[:-1, :widths[0]], atol=1e-3)  # CLIP-L's channels
    assert not torch.allclose(ours[:-1, widths[0]:], theirs[:-1, widths[0]:], atol=1e-3)  # OpenCLIP-G's channels
    with encoder.lora_scales([0.0]):
        assert torch.equal(encoder.text(CAT), theirs)
    assert torch.equal(render(loaded(path, 0.0, "tiny-sdxl"), [CAT]), render(plain, [CAT]))


def test_the_few_step_example_renders_on_the_tiny_model_with_a_lora_the_test_makes(lora_file, tmp_path):
    config = load_config(CONFIGS_DIR / "lcm_cat_kitten.yaml", model="tiny", height=64, width=64, frames=3,
                         device="cpu", output=str(tmp_path / "lcm"), loras=[{"path": str(lora_file()), "name": "lcm"}])
    job = prepare_job(config)
    seen, forward = [], job.loaded.pipe.unet.forward
    job.loaded.pipe.unet.forward = lambda sample, *a, **k: seen.append(sample.shape[0]) or forward(sample, *a, **k)
    list(job.frames([0]))
    assert len(seen) == 4 and set(seen) == {1}  # 4 steps, never a doubled batch
    manifest = run_job(config, quiet=True)
    assert manifest["scheduler"] == "LCMScheduler" and manifest["classifier_free_guidance"] is False
    assert [lora["name"] for lora in manifest["loras"]] == ["lcm"]


def test_a_lora_for_another_family_is_refused_before_rendering_in_one_line(write_config, lora_file, tmp_path):
    xl = lora_file("xl", model="tiny-sdxl", parts=("unet", "text_encoder", "text_encoder_2"))
    out = tmp_path / "out" / "job"
    result = CliRunner().invoke(cli, ["run", str(write_config(loras=[{"path": str(xl)}])), "--quiet"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "loras[0]: 'xl.safetensors' is a LoRA for SDXL" in result.output and "model 'tiny'" in result.output
    assert not out.exists()


def _kohya_shapes(path, cross: int, text: dict):
    """A header-only stand-in of a real LoRA: one cross-attention key pair and one per text encoder."""
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    state = {f"{key}.lora_down.weight": torch.zeros(4, cross), f"{key}.lora_up.weight": torch.zeros(320, 4)}
    for prefix, width in text.items():
        state[f"{prefix}text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] = torch.zeros(4, width)
        state[f"{prefix}text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight"] = torch.zeros(width, 4)
    save_file(state, str(path))
    return str(path)


@pytest.mark.parametrize("cross, text, family", [
    (768, {"lora_te_": 768}, "SD 1.x"), (1024, {"lora_te_": 1024}, "SD 2.x"),
    (2048, {"lora_te1_": 768, "lora_te2_": 1280}, "SDXL")])
def test_the_family_of_a_lora_is_read_from_its_widths(tmp_path, cross, text, family):
    lora = read_lora("loras[0]", "x", _kohya_shapes(tmp_path / "x.safetensors", cross, text))
    assert lora.family() == family and lora.cross_width == cross
    assert lora.parts == ["unet", "text_encoder", "text_encoder_2"][:1 + len(text)]
    sd1, xl = (768, {"text_encoder": 768}), (2048, {"text_encoder": 768, "text_encoder_2": 1280})
    check_fits("loras[0]", lora, "m", *(xl if family == "SDXL" else (cross, {"text_encoder": cross})))
    other, named = (xl, "SDXL") if family == "SD 1.x" else (sd1, "SD 1.x")
    with pytest.raises(MorphError, match=rf"^loras\[0\]: 'x.safetensors' is a LoRA for {family} .*, and model 'm' is "
                                         rf"{named} \(its cross-attention reads {other[0]}\); use a LoRA made for"):
        check_fits("loras[0]", lora, "m", *other)


def test_a_folder_holding_one_lora_and_a_cached_hub_id_name_its_file(tmp_path, lora_file, monkeypatch):
    folder = tmp_path / "folder"
    folder.mkdir()
    lora = make_in(folder, lora_file)
    assert read_lora("loras[0]", "f", str(folder)).file == str(lora)
    import huggingface_hub

    cached = {("someone/lcm-lora", "pytorch_lora_weights.safetensors"): str(lora)}
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, name: cached.get((repo, name)))
    assert read_lora("loras[0]", "h", "someone/lcm-lora").file == str(lora)
    with pytest.raises(MorphError, match=r"loras\[0\]: 'someone/other' is neither a local file nor a LoRA in the "
                                         r"Hugging Face cache; download it .*`hf download someone/other"):
        read_lora("loras[0]", "h", "someone/other")


def make_in(folder, lora_file):
    path = lora_file()
    return path.rename(folder / "pytorch_lora_weights.safetensors")


def test_manifest_config_and_schema_name_the_loras(write_config, lora_file):
    config = load_config(write_config(loras=[{"path": str(lora_file("my.style"))}]))
    assert config.lora_names() == ["my_style"]  # a name cannot hold a dot: peft keys adapters by name
    schema = json.loads(CliRunner().invoke(cli, ["schema"]).output)
    assert set(schema["$defs"]["LoraSpec"]["properties"]) == {"path", "name", "scale"}
    assert "loras" in schema["$defs"]["Keyframe"]["properties"]


def test_goldens_of_a_lora_walk_check_exactly_and_a_changed_strength_is_caught(write_config, lora_file, tmp_path):
    walk = dict(name="gold", num_inference_steps=2, loras=[{"path": str(lora_file())}],
                prompts=[CAT, {"prompt": "a red circle", "loras": {"style": 0.5}}])
    config = write_config(**walk)
    saved = CliRunner().invoke(cli, ["golden", "save", str(config), "--frames", "0,3,5"])
    assert saved.exit_code == 0, saved.output
    checked = CliRunner().invoke(cli, ["golden", "check", str(config), "--tolerance", "exact"])
    assert checked.exit_code == 0 and checked.output.count("identical") == 3, checked.output
    changed = write_config(**{**walk, "prompts": [CAT, {"prompt": "a red circle", "loras": {"style": 0.25}}]})
    refused = CliRunner().invoke(cli, ["golden", "check", str(changed)])
    assert refused.exit_code != 0 and "prompts" in refused.output
