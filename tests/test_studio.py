"""morph studio: the form and the YAML, paths kept in the root, the render worker, and the page's API driven end to end
by gradio_client on the tiny model (tests/test_studio_browser.py drives the page itself in chromium)."""

import concurrent.futures
import json
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from morph.cli import cli
from morph.errors import MorphError
from morph.studio.configs import model_choices, save_config, studio_config
from morph.studio.form import form_of, parse, with_form
from morph.studio.worker import STATE_FILE, Worker, saved_jobs

gradio_client = pytest.importorskip("gradio_client", reason="morph[studio] is not installed")

WALK = {"name": "walk", "model": "tiny", "prompts": ["a photo of a cat", "a drawing of a dog in kyoto"], "frames": 12,
        "seed": 7, "height": 64, "width": 64, "num_inference_steps": 3, "batch_size": 4, "device": "cpu"}


def walk_yaml(**overrides) -> str:
    return yaml.safe_dump({k: v for k, v in {**WALK, **overrides}.items() if v is not None}, sort_keys=False)


# --- the form and the YAML

def test_the_form_writes_back_only_what_it_changed():
    raw = parse("name: w\nmodel: toy\nprompts: [a red circle, {prompt: a blue square, seed: 4}]\nframes: [10]\n"
                "analysis: {metric: pixel}\nloras: [{path: ../loras/ink.safetensors, scale: 0.5}]\n")
    values = form_of(raw)
    assert values["keyframes"] == [["a red circle", "", "", "", "", "", ""], ["a blue square", "4", "", "", "", "", ""]]
    assert values["frames"] == 11 and values["spacing"] == "uniform" and values["interpolation"] == "slerp"
    assert with_form(raw, values) == raw  # nothing changed: the same mapping, frames per segment and all
    values["keyframes"][0][3] = "9.5"  # a guidance_scale for the first keyframe
    values["keyframes"][1][6] = "1.5"  # the LoRA's strength at the second
    values["spacing"], values["width"] = "even", 128.0
    changed = with_form(raw, values)
    assert changed["prompts"] == [{"prompt": "a red circle", "guidance_scale": 9.5},
                                  {"prompt": "a blue square", "seed": 4, "loras": {"ink": 1.5}}]
    assert changed["spacing"] == "even" and changed["width"] == 128 and changed["frames"] == [10]
    assert changed["analysis"] == {"metric": "pixel"}  # a key without a field stays


def test_an_edited_cell_keeps_the_keyframes_keys_that_have_no_column():
    raw = parse("prompts: [a red circle, {prompt: a blue square, ease: cosine, loras: {ink: 0.5, pen: 1}}, "
                "{prompt: a green star, ease: ease-in}]\nloras: [{path: ink.safetensors}]\n")
    values = form_of(raw)
    assert values["keyframes"][1] == ["a blue square", "", "", "", "", "", "0.5"]
    values["keyframes"][1][1] = "4"  # a seed for the second keyframe
    values["keyframes"][1][6] = ""  # its ink strength: the top level's again
    values["keyframes"][2][0] = "a yellow star"
    assert with_form(raw, values)["prompts"] == [
        "a red circle", {"prompt": "a blue square", "ease": "cosine", "loras": {"pen": 1}, "seed": 4},
        {"prompt": "a yellow star", "ease": "ease-in"}]
    values["keyframes"][2][0] = ""  # a row without a prompt: the keyframe goes, the others keep their keys
    assert [k if isinstance(k, str) else k["prompt"] for k in with_form(raw, values)["prompts"]] == [
        "a red circle", "a blue square"]


def test_clearing_a_keyframes_image_cell_takes_its_fit_with_it():
    raw = parse("prompts: [{prompt: a red circle, image: ../inputs/red.png, fit: pad, seed: 3}, a blue square]\n")
    values = form_of(raw)
    values["keyframes"][0][4] = ""  # the image cell emptied
    assert with_form(raw, values)["prompts"] == [{"prompt": "a red circle", "seed": 3}, "a blue square"]


def test_the_form_shows_the_walks_frames_and_the_spacing_it_renders():
    from morph.config.jobs import validate

    for text in ("frames: [10, 20]", "frames: 31", "frames: 8", "frames: 8\nspacing: {max_extra_renders: 4}",
                 "frames: 8\nspacing: {budget: walk}", "frames: 8\nspacing: even",
                 "frames: 8\nspacing: {mode: uniform}"):
        raw = parse(f"model: toy\nprompts: [a, b, c]\n{text}\n")
        config, values = validate(raw), form_of(raw)
        assert (values["frames"], values["spacing"]) == (config.frame_count(), config.spacing.mode), text
        assert with_form(raw, values) == raw  # shown as it is: nothing written back


def test_a_row_deleted_or_inserted_keeps_each_keyframes_keys_with_its_prompt():
    raw = parse("prompts: [a red circle, {prompt: a blue square, ease: cosine}, "
                "{prompt: a green star, ease: ease-in, seed: 7}]\n")
    rows = form_of(raw)["keyframes"]
    deleted = with_form(raw, {**form_of(raw), "keyframes": [rows[0], rows[2]]})
    assert deleted["prompts"] == ["a red circle", {"prompt": "a green star", "ease": "ease-in", "seed": 7}]
    inserted = with_form(raw, {**form_of(raw), "keyframes": [["a yellow moon", "", "", ""], *rows]})
    assert inserted["prompts"] == ["a yellow moon", *raw["prompts"]]
    twice = with_form(raw, {**form_of(raw), "keyframes": [rows[1], ["a blue square", "3", "", ""]]})
    assert twice["prompts"] == ["a blue square", {"prompt": "a blue square", "seed": 3}]  # two rows, one keyframe


def test_spacing_switched_to_uniform_drops_evens_options():
    from morph.config.jobs import validate

    raw = parse("model: toy\nprompts: [a, b]\nspacing: {max_extra_renders: 4}\n")
    changed = with_form(raw, {**form_of(raw), "spacing": "uniform"})
    assert changed["spacing"] == "uniform" and validate(changed).spacing.mode == "uniform"


def test_the_frames_field_of_a_timed_walk_counts_the_musics_frames(tmp_path):
    from morph.studio.form import FIELDS
    from morph.studio.page import Studio

    studio = Studio(tmp_path, Worker(run=_fake_run()))
    (tmp_path / "music").mkdir()
    (tmp_path / "music" / "beat.wav").write_bytes(b"RIFF")
    text = walk_yaml(frames=[1, 3], prompts=["a", "b", "c"], fps=10,
                     timing={"audio": "../music/beat.wav", "duration": 2.5})  # read from configs/, as morph run reads it
    fields = studio.form_values(text)
    assert fields[FIELDS.index("frames")] == studio.checked(text).frame_count() == 25
    assert studio.yaml_of(text, fields[len(FIELDS)]["data"], *fields[:len(FIELDS)])[0] == text  # nothing changed
    refused = text.replace("beat.wav", "missing.wav")  # the form still shows the list's steps and the first frame
    assert studio.form_values(refused)[FIELDS.index("frames")] == 5


def test_a_yaml_with_aliases_is_written_anew_when_the_form_changes_it():
    from morph.studio.configs import dump
    from morph.studio.form import rewritten

    text = "base: &b {seed: 3}\n<<: *b\nframes: 4\n"
    changed = {**parse(text), "frames": 5}
    assert rewritten(text, changed) == dump(changed)
    assert parse(rewritten(text, changed)) == changed


def test_a_form_edit_changes_only_its_own_lines_of_the_yaml(tmp_path):
    from morph.studio.form import FIELDS
    from morph.studio.page import Studio

    studio = Studio(tmp_path, Worker(run=_fake_run()))
    text = ("# my walk: a circle becoming a square\nname: w  # names outputs/w\nmodel: toy\nprompts:\n"
            "  - a red circle   # the start\n  - a blue square\n# many frames\nframes: 48\n"
            "analysis: {metric: pixel}  # fast\n")

    def edited(**fields):  # the YAML after a form edit, as the page makes it
        values = {**form_of(parse(text)), **fields}
        return studio.yaml_of(text, values["keyframes"], *[values[key] for key in FIELDS])[0]

    assert edited() == text
    assert edited(frames=24.0, width=128.0) == text.replace("frames: 48\n", "frames: 24\n") + "width: 128\n"
    changed = edited(keyframes=[["a red circle", "", "", ""], ["a blue triangle", "", "", ""]])
    assert changed.startswith("# my walk: a circle becoming a square\nname: w  # names outputs/w\nmodel: toy\n")
    assert changed.endswith("# many frames\nframes: 48\nanalysis: {metric: pixel}  # fast\n")
    assert parse(changed)["prompts"] == ["a red circle", "a blue triangle"]
    emptied = edited(name="")  # a field emptied: its key goes, with its line
    assert "name:" not in emptied and emptied.startswith("# my walk") and parse(emptied)["model"] == "toy"


def test_save_asks_before_it_replaces_a_config_file(tmp_path):
    from morph.studio.page import Studio

    studio = Studio(tmp_path, Worker(run=_fake_run()))
    (tmp_path / "configs").mkdir()
    mine = "# my own walk, kept for months\n" + walk_yaml(frames=24)
    (tmp_path / "configs" / "walk.yaml").write_text(mine)
    text = walk_yaml()
    message, asked = studio.save(text)
    assert message.startswith("⚠ configs/walk.yaml exists and says something else; click Save again")
    assert (tmp_path / "configs" / "walk.yaml").read_text() == mine
    assert studio.save(walk_yaml(seed=8), asked)[1] == walk_yaml(seed=8)  # other YAML than asked about: asked again
    assert (tmp_path / "configs" / "walk.yaml").read_text() == mine
    message, asked = studio.save(text, text)  # the second click on the same YAML
    assert message.startswith("✓ saved configs/walk.yaml") and asked is None
    assert (tmp_path / "configs" / "walk.yaml").read_text() == text
    assert studio.save(text)[0].startswith("✓ saved")  # the same text again: nothing to ask
    (tmp_path / "elsewhere.yaml").write_text(mine)
    (tmp_path / "configs" / "linked.yaml").symlink_to(tmp_path / "elsewhere.yaml")
    linked = walk_yaml(name="linked")
    assert "through a link" in studio.save(linked, linked)[0]  # not even when asked: the studio writes in its root
    assert (tmp_path / "elsewhere.yaml").read_text() == mine


def test_save_asks_before_it_replaces_a_file_in_no_encoding(tmp_path):
    from morph.studio.page import Studio

    studio = Studio(tmp_path, Worker(run=_fake_run()))
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "walk.yaml").write_bytes(b"# caf\xe9, in latin-1\n")
    assert studio.save(walk_yaml())[0].startswith("⚠ configs/walk.yaml exists and says something else")
    assert (tmp_path / "configs" / "walk.yaml").read_bytes() == b"# caf\xe9, in latin-1\n"


def test_a_yaml_that_is_not_a_mapping_is_one_line():
    for text, words in [("prompts: [a", "YAML syntax error"), ("- a\n- b", "not a mapping")]:
        with pytest.raises(MorphError, match=words) as e:
            parse(text)
        assert "\n" not in str(e.value)


def test_a_pasted_config_fills_the_form_and_the_status_line_says_how_far_a_render_is(tmp_path):
    from morph.studio.page import Studio, _status_line

    studio = Studio(tmp_path, Worker(run=_fake_run()))
    name, model, frames, width, _, steps, interpolation, spacing, table, message = studio.form_values(
        walk_yaml(prompts=["a cat", {"prompt": "a dog", "guidance_scale": 3}], spacing="even"))
    assert (name, model, frames, width, steps, interpolation, spacing) == ("walk", "tiny", 12, 64, 3, "slerp", "even")
    assert table["data"] == [["a cat", "", "", "", "", ""], ["a dog", "", "", "3", "", ""]]
    assert message == "✓ walk, 12 frames, into outputs/walk"
    assert studio.form_values(walk_yaml(frames=1))[-1].startswith("⚠ frames: ")
    running = {"name": "walk", "state": "running", "done": 5, "total": 12, "frames_per_s": 2.5, "seconds_left": 2.8}
    assert _status_line(running) == "**walk**: rendering, 5 of 12 frames, 2.50 frames/s, about 3 s left"


def test_no_label_covers_the_title_line_of_a_picture_that_has_one(tmp_path):
    import gradio as gr

    from morph.studio.page import Studio, build

    page = build(Studio(tmp_path, Worker(run=_fake_run())))
    labelled = {block.elem_id: block.show_label for block in page.blocks.values() if isinstance(block, gr.Image)}
    # Gradio floats an image's label over its top-left corner: there the filmstrip's title hid under it
    assert labelled == {"filmstrip": False, "storm_plot": False, "frame": True, "storm_map": False}


def test_the_model_list_offers_what_is_under_the_root(tmp_path):
    import torch
    from safetensors.torch import save_file

    (tmp_path / "models" / "mine").mkdir(parents=True)
    (tmp_path / "models" / "mine" / "model_index.json").write_text("{}")
    save_file({"model.diffusion_model.out.weight": torch.zeros(1)}, tmp_path / "models" / "one.safetensors")
    save_file({"lora_unet_down.lora_up.weight": torch.zeros(1)}, tmp_path / "models" / "style.safetensors")
    choices = model_choices(tmp_path)
    assert choices[:4] == ["toy", "tiny", "tiny-sd2", "tiny-sdxl"]
    assert "../models/mine" in choices and "../models/one.safetensors" in choices  # as a saved config names them
    assert "../models/style.safetensors" not in choices  # a LoRA is not a model


# --- paths: everything the studio reads or writes stays in its root

def _escapes(root: Path, outside: Path) -> dict[str, str]:
    (outside / "weights.safetensors").write_bytes(b"")
    (root / "models").mkdir()
    (root / "models" / "link.safetensors").symlink_to(outside / "weights.safetensors")
    return {
        "model": walk_yaml(model=str(outside / "weights.safetensors")),
        "model climbing": walk_yaml(model="../../x.safetensors"),
        "model link": walk_yaml(model="../models/link.safetensors"),
        "model dots": walk_yaml(model="a/../../b"),
        "vae": walk_yaml(vae=str(outside / "vae.safetensors")),
        "lora": walk_yaml(loras=[{"path": str(outside / "weights.safetensors")}]),
        "embedding": walk_yaml(embeddings=[str(outside / "cat.safetensors")]),
        "audio": walk_yaml(frames=None, timing={"audio": "../../song.wav"}),
        "output climbing": walk_yaml(output="../x"),
        "output elsewhere": walk_yaml(output=str(outside / "out")),
        "output in root, not outputs": walk_yaml(output="configs"),
    }


def test_an_uploaded_picture_is_kept_under_inputs_and_named_in_its_keyframe(tmp_path):
    from PIL import Image

    from morph.studio.page import Studio

    studio, picture = Studio(tmp_path, Worker(run=_fake_run())), tmp_path / "my photo!.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(picture)
    text, message = studio.attach(walk_yaml(), str(picture), 0, "image")
    kept = list((tmp_path / "inputs").iterdir())
    assert len(kept) == 1 and kept[0].name.startswith("my_photo-") and kept[0].read_bytes() == picture.read_bytes()
    assert parse(text)["prompts"][0] == {"prompt": "a photo of a cat", "image": f"../inputs/{kept[0].name}"}
    assert message.startswith("✓ walk") and studio_config(text, tmp_path).prompts[0].image == str(kept[0])
    assert studio.form_values(text)[-2]["data"][0][4] == f"../inputs/{kept[0].name}"
    again, _ = studio.attach(text, str(picture), 1, "reference")  # the same bytes: the same file
    assert parse(again)["prompts"][1]["reference"] == f"../inputs/{kept[0].name}"
    assert list((tmp_path / "inputs").iterdir()) == kept
    (tmp_path / "notes.txt").write_text("not a picture")
    for upload, keyframe, refused in ((tmp_path / "notes.txt", 0, "is not an image"),
                                      (picture, 5, "keyframe 5 is not")):
        _, message = studio.attach(text, str(upload), keyframe, "image")
        assert message.startswith("⚠ upload: ") and refused in message and "\n" not in message
    assert len(list((tmp_path / "inputs").iterdir())) == 1


def test_an_upload_follows_no_link_out_of_inputs_and_a_keyframe_picture_stays_in_the_root(tmp_path):
    from PIL import Image

    from morph.studio.inputs import keep_input

    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir(), elsewhere.mkdir()
    (root / "inputs").symlink_to(elsewhere)
    Image.new("RGB", (8, 8)).save(tmp_path / "p.png")
    with pytest.raises(MorphError, match="leads out of"):
        keep_input(tmp_path / "p.png", root)
    assert not list(elsewhere.iterdir())
    with pytest.raises(MorphError, match=r"prompts\[1\]\.image: \.\./\.\./p\.png is outside"):
        studio_config(walk_yaml(prompts=["a cat", {"prompt": "a dog", "image": "../../p.png"}]), root)


def test_paths_outside_the_root_are_refused_in_one_line(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir(), outside.mkdir()
    for case, text in _escapes(root, outside).items():
        with pytest.raises(MorphError, match="is outside") as e:
            studio_config(text, root)
        assert "\n" not in str(e.value), case
    config = studio_config(walk_yaml(model="toy", output="outputs/mine"), root)  # inside: accepted
    assert config.output_dir == root / "outputs" / "mine"
    assert studio_config(walk_yaml(), root).output_dir == root / "outputs" / "walk"


def test_a_name_the_current_folder_holds_is_never_read_and_refusals_tell_nothing_of_it(tmp_path, monkeypatch):
    import shutil

    import huggingface_hub.constants

    root, cwd, cache = tmp_path / "root", tmp_path / "home", tmp_path / "hub"
    root.mkdir()
    monkeypatch.setenv("HOME", str(tmp_path))  # ~/root is the root; the loaders read ~/root as the cwd's "~" folder
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    snapshot = cache / "models--owner--sd" / "snapshots" / "abc"  # a hub model the local cache holds
    snapshot.mkdir(parents=True)
    (snapshot / "model_index.json").write_text("{}")
    (cache / "models--owner--sd" / "refs").mkdir()
    (cache / "models--owner--sd" / "refs" / "main").write_text("abc")
    assert studio_config(walk_yaml(model="owner/sd"), root).model == "owner/sd"
    cases = {"model": walk_yaml(model="secret/sd"), "vae": walk_yaml(vae="secret/vae"),
             "configs_from": walk_yaml(configs_from="secret/sd"), "lora": walk_yaml(loras=[{"path": "secret/ink"}]),
             "model ~": walk_yaml(model="~/root/models/sd"),
             "embedding ~": walk_yaml(embeddings=["~/root/models/cat.safetensors"])}

    def refusals():
        found = {}
        for case, text in cases.items():
            with pytest.raises(MorphError) as e:
                studio_config(text, root)
            found[case] = str(e.value)
        return found

    monkeypatch.chdir(cwd.mkdir() or cwd)  # the folder `morph studio` was started in, outside the root
    baited = {"secret/sd": "model_index.json", "secret/vae": "config.json",
              "secret/ink": "pytorch_lora_weights.safetensors", "~/root/models/sd": "model_index.json",
              "~/root/models": "cat.safetensors", "owner/sd": "model_index.json"}
    for folder, name in baited.items():
        (cwd / folder).mkdir(parents=True, exist_ok=True)
        (cwd / folder / name).write_text("{}")
    with_bait = refusals()
    assert "neither a file under" in with_bait["model"] and "neither a file under" in with_bait["lora"]
    with pytest.raises(MorphError) as e:  # the cache's model, once the cwd holds its name: the loaders would read that
        studio_config(walk_yaml(model="owner/sd"), root)
    assert str(e.value) == with_bait["model"].replace("secret/sd", "owner/sd")  # as if it were not in the cache
    for folder in ("secret", "~", "owner"):
        shutil.rmtree(cwd / folder)
    assert refusals() == with_bait  # the same words whatever the cwd holds


def test_a_refusal_reads_the_same_whether_what_lies_outside_the_root_exists(tmp_path):
    root, hidden = tmp_path / "root", tmp_path / "hidden"
    (root / "configs" / "old").mkdir(parents=True)
    (root / "models").mkdir()
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "model_index.json").write_text("{}")
    hidden.mkdir()
    (root / "models" / "out").symlink_to(hidden, target_is_directory=True)  # a link under the root, leading out
    (root / "models" / "loop").symlink_to(root / "models" / "loop")

    def refusal(**keys) -> str:
        with pytest.raises(MorphError) as e:
            studio_config(walk_yaml(**keys), root)
        assert "\n" not in str(e.value)
        return str(e.value)

    for key, entry in (("model", lambda v: v), ("vae", lambda v: v), ("loras", lambda v: [{"path": v}]),
                       ("embeddings", lambda v: [v])):
        there, nowhere = (refusal(**{key: entry(f"old/../../../{name}")}) for name in ("secret", "nosuch"))
        assert there == nowhere.replace("nosuch", "secret") and "old/../../../secret is outside" in there, key
        linked = refusal(**{key: entry("../models/out/sd")})
        assert "../models/out/sd is outside" in linked and str(hidden) not in linked, key
        assert "../models/loop/sd is outside" in refusal(**{key: entry("../models/loop/sd")}), key
    assert "model: 'owner/sd\\n' is outside" in refusal(model="owner/sd\n")  # no hub id: one with a line after it
    (root / "outputs").mkdir()
    (root / "outputs" / "loop").symlink_to(root / "outputs" / "loop")  # written into, not read: refused as well
    assert refusal(output="outputs/loop/walk").startswith("output: outputs/loop/walk is outside")
    assert refusal(output=None, name="loop").startswith("output: outputs/loop leads out")  # the default output


def test_a_controlnets_weights_and_image_are_read_only_under_the_root_or_from_the_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants
    from PIL import Image

    root, cache = tmp_path / "root", tmp_path / "hub"
    (root / "models" / "edges").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "square.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "secret.png")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    snapshot = cache / "models--owner--canny" / "snapshots" / "abc"  # a ControlNet the local cache holds
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (cache / "models--owner--canny" / "refs").mkdir()
    (cache / "models--owner--canny" / "refs" / "main").write_text("abc")

    def walk(path="../models/edges", image="../square.png") -> str:
        return walk_yaml(controlnets=[{"path": path, "image": image}])

    for path in ("../models/edges", "owner/canny"):  # under the root, or a hub id the cache holds
        assert studio_config(walk(path=path), root).controlnets[0].image == str(root / "square.png")
    for text, refused in ((walk(path="../../elsewhere/edges"), "controlnets: ../../elsewhere/edges is outside"),
                          (walk(path="secret/canny"), "controlnets: secret/canny is neither a file under"),
                          (walk(image="../../secret.png"), r"controlnets\[0\]\.image: \.\./\.\./secret\.png is outside")):
        with pytest.raises(MorphError, match=refused) as e:
            studio_config(text, root)
        assert "\n" not in str(e.value)


def test_an_ip_adapter_and_its_image_encoder_are_read_only_under_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "configs").mkdir(parents=True)
    (tmp_path / "secret.safetensors").write_bytes(b"")
    for adapter, refused in (({"path": "../../secret.safetensors"}, "ip_adapter.path: ../../secret.safetensors is"),
                             ({"path": "../a.safetensors", "image_encoder": "/elsewhere/encoder"},
                              "ip_adapter.image_encoder: /elsewhere/encoder is outside")):
        with pytest.raises(MorphError, match=refused) as e:
            studio_config(walk_yaml(ip_adapter=adapter), root)
        assert "\n" not in str(e.value) and "secret" not in str(e.value).replace(adapter["path"], "")


def test_the_studio_writes_nothing_through_a_link_out_of_its_outputs(tmp_path):
    from morph.studio.previews import preview

    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    (root / "outputs").mkdir(parents=True)
    elsewhere.mkdir()
    (root / "outputs" / ".preview").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(MorphError, match=r"^output: .*/outputs/.preview/look leads elsewhere through a link"):
        preview(studio_config(walk_yaml(name="look"), root))
    assert not list(elsewhere.iterdir())
    (root / "outputs" / ".preview").unlink()
    (root / "outputs").rmdir()
    (root / "outputs").symlink_to(elsewhere, target_is_directory=True)  # every render would go elsewhere
    for text in (walk_yaml(), walk_yaml(output="outputs/mine")):
        with pytest.raises(MorphError, match=r"^output: outputs/\w+ (is outside|leads out of)"):
            studio_config(text, root)


def test_a_bad_config_gets_the_clis_message(tmp_path):
    with pytest.raises(MorphError, match=r"^num_inference_steps: .*1"):
        studio_config(walk_yaml(num_inference_steps=0), tmp_path)


@pytest.mark.parametrize("overrides, words", [
    ({"scheduler": "LCMScheduler", "num_inference_steps": 60, "guidance_scale": 1},
     "scheduler: LCMScheduler cannot render num_inference_steps: 60"),
    ({"video": {"preset": "tiktok"}}, "video: tiktok needs at least 3 s"),
    ({"model": "../models/broken.safetensors"}, "is not a safetensors file"),
    ({"loras": [{"path": "../models/broken.safetensors"}]}, "loras[0]: "),
])
def test_the_check_line_and_render_refuse_what_morph_run_refuses(overrides, words, tmp_path, monkeypatch):
    from morph.studio.page import Studio

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "broken.safetensors").write_bytes(b"not weights")
    studio = Studio(tmp_path, Worker(run=_fake_run()))
    text = walk_yaml(**overrides)
    message = studio.message(text)
    assert message.startswith("⚠ ") and words in message
    with pytest.raises(Exception, match=re.escape(words)):  # a gr.Error: nothing queued
        studio.submit(text)
    assert studio.worker.jobs() == []
    save_config(text, tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["run", "configs/walk.yaml", "--quiet"])
    assert result.exit_code == 2 and words in result.output


def test_the_check_line_builds_the_lpips_model_once_however_often_it_checks(tmp_path, monkeypatch):
    import sys
    import types

    from morph.analysis import storm_map
    from morph.studio.page import Studio

    built = []
    fake = types.SimpleNamespace(LPIPS=lambda **_: built.append(1) or types.SimpleNamespace(eval=lambda: None))
    monkeypatch.setitem(sys.modules, "lpips", fake)
    clear = getattr(storm_map._lpips_distance, "cache_clear", lambda: None)
    clear()  # no model another test built
    try:
        studio = Studio(tmp_path, Worker(run=_fake_run()))
        for seed in range(3):  # three keystrokes
            assert studio.message(walk_yaml(seed=seed, analysis={"metric": "lpips"})).startswith("✓ walk")
        assert built == [1]
    finally:
        clear()  # the fake model stays in this test


def test_a_saved_config_renders_with_morph_run_to_the_frames_the_studio_rendered(tmp_path, monkeypatch):
    text = walk_yaml(frames=6)
    config = studio_config(text, tmp_path)
    worker = Worker()
    job = worker.submit(config)
    assert job.finished.wait(300) and job.state == "done", job.error
    path = save_config(text, tmp_path)
    assert path == tmp_path / "configs" / "walk.yaml"
    monkeypatch.chdir(tmp_path)  # morph run writes outputs/<name> in the current folder: the root
    result = CliRunner().invoke(cli, ["run", "configs/walk.yaml", "--quiet"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "outputs" / "walk" / "manifest.json").read_text())
    assert manifest["rendered"] == 0 and manifest["reused"] == 6  # the same frame keys: the same frames


# --- the command line

@pytest.mark.parametrize("args, words", [
    (["--host", "0.0.0.0"], "needs --auth USER:PASSWORD"),
    (["--host", "192.168.1.5", "--auth", "me"], "--auth: give USER:PASSWORD"),
    (["--root", "no/such/folder"], "--root: no/such/folder is not a folder"),
])
def test_the_studio_command_refuses_before_loading_anything(args, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["studio", *args])
    assert result.exit_code == 2 and words in result.output
    assert len(result.output.strip().splitlines()) == 1


# --- the worker

def _fake_run(seconds=0.0, fail=None):
    def run(config, quiet, progress):
        with progress:
            progress.total = 3
            for _ in range(3):
                time.sleep(seconds)
                progress.update(1)
        if fail:
            raise fail
        return {"video": str(config.output_dir / "walk.mp4")}
    return run


def test_a_crashing_render_shows_its_error_and_the_worker_goes_on(tmp_path):
    worker = Worker(run=_fake_run(fail=RuntimeError("CUDA error: an illegal memory access")))
    job = worker.submit(studio_config(walk_yaml(name="crash"), tmp_path))
    assert job.finished.wait(30)
    assert job.state == "failed" and job.error == "RuntimeError: CUDA error: an illegal memory access"
    saved = json.loads((tmp_path / "outputs" / "crash" / STATE_FILE).read_text())
    assert saved["state"] == "failed" and "illegal memory access" in saved["error"]
    worker._run = _fake_run()
    again = worker.submit(studio_config(walk_yaml(name="crash"), tmp_path))
    assert again.finished.wait(30) and again.state == "done" and again.done == 3


def test_the_queue_is_bounded_and_refuses_with_a_message(tmp_path):
    worker = Worker(capacity=2, run=_fake_run(seconds=0.5))
    jobs = [worker.submit(studio_config(walk_yaml(name=f"j{i}"), tmp_path)) for i in range(3)]  # 1 runs, 2 wait
    while jobs[0].state == "queued":
        time.sleep(0.01)
    with pytest.raises(MorphError, match="queue is full"):
        worker.submit(studio_config(walk_yaml(name="j3"), tmp_path))
    with pytest.raises(MorphError, match="already"):
        worker.submit(studio_config(walk_yaml(name="j1"), tmp_path))
    assert worker.cancel(jobs[2].output)
    assert all(job.finished.wait(30) for job in jobs)
    assert [job.state for job in jobs] == ["done", "done", "cancelled"]


def test_a_job_cancelled_while_queued_ends_at_once_and_frees_its_place_and_its_output(tmp_path):
    started, go = threading.Event(), threading.Event()

    def run(config, quiet, progress):
        started.set()
        go.wait(30)
        return {}

    worker = Worker(capacity=2, run=run)
    rendering = worker.submit(studio_config(walk_yaml(name="a"), tmp_path))
    assert started.wait(30)
    waiting = [worker.submit(studio_config(walk_yaml(name=name), tmp_path)) for name in ("b", "c")]  # queue full
    assert worker.cancel(waiting[0].output)
    assert waiting[0].finished.is_set() and waiting[0].state == "cancelled"  # at once: it never starts
    assert json.loads((waiting[0].output / STATE_FILE).read_text())["state"] == "cancelled"
    again = worker.submit(studio_config(walk_yaml(name="b"), tmp_path))  # the same job, in the place it left
    go.set()
    assert all(job.finished.wait(30) for job in (rendering, waiting[1], again))
    assert [job.state for job in (rendering, waiting[0], waiting[1], again)] == ["done", "cancelled", "done", "done"]


@pytest.mark.parametrize("ending", ["cancelled while queued", "done"])
def test_a_render_again_as_a_job_ends_keeps_the_new_jobs_queued_state(ending, tmp_path):
    gates = {"a": threading.Event(), "x": threading.Event()}
    started = {name: threading.Event() for name in gates}
    worker = Worker(run=lambda config, **_: started[config.name].set() or gates[config.name].wait(30) and {})
    config = studio_config(walk_yaml(name="a"), tmp_path)
    jobs = [worker.submit(studio_config(walk_yaml(name=name), tmp_path)) for name in
            (("x", "a") if ending.startswith("cancelled") else ("a", "x"))]  # done: x waits behind a
    job = jobs[[j.config.name for j in jobs].index("a")]
    assert started[jobs[0].config.name].wait(30)
    again, ended = threading.Thread(target=worker.submit, args=(config,)), job.end

    def end(**kw):  # the page's Render click on the same job comes as it ends
        again.start()
        if not worker._lock.locked():  # nothing holds the click back: it goes first
            again.join()
        ended(**kw)

    job.end = end
    if ending == "done":
        gates["a"].set()
        assert started["x"].wait(30)  # x renders: the new a waits behind it
    else:
        assert worker.cancel(job.output)
    again.join(30)
    assert job.finished.is_set() and not again.is_alive()
    assert json.loads((job.output / STATE_FILE).read_text())["state"] == "queued"  # the new job's, not the old one's
    for gate in gates.values():
        gate.set()
    assert all(j.finished.wait(30) for j in worker.jobs())


def test_a_job_left_running_by_a_stopped_studio_reads_as_interrupted(tmp_path):
    worker = Worker(run=_fake_run(seconds=0.2))
    job = worker.submit(studio_config(walk_yaml(name="left"), tmp_path))
    while job.state != "running":
        time.sleep(0.01)
    restarted = saved_jobs(tmp_path / "outputs", Worker())  # a new studio: studio.json still says running
    assert [(s["name"], s["state"]) for s in restarted] == [("left", "interrupted")]
    assert job.finished.wait(30)


def test_the_job_list_still_reads_once_the_root_was_moved(tmp_path):
    from morph.studio.page import Studio

    first = tmp_path / "walks"
    first.mkdir()
    job = Worker(run=_fake_run()).submit(studio_config(walk_yaml(name="moved"), first))
    assert job.finished.wait(30) and job.state == "done"
    assert str(first) not in (first / "outputs" / "moved" / STATE_FILE).read_text()  # no path to go stale
    older = first / "outputs" / "older"  # what an older studio saved: its absolute output
    older.mkdir()
    (older / STATE_FILE).write_text(json.dumps({"name": "older", "output": str(older), "state": "done",
                                                "submitted": 1.0}))
    moved = first.rename(tmp_path / "renamed")
    jobs = Studio(moved, Worker(run=_fake_run())).jobs()
    assert [(j["id"], j["state"], j["output"]) for j in jobs] == [
        ("moved", "done", str(moved / "outputs" / "moved")), ("older", "done", str(moved / "outputs" / "older"))]


# --- the model the previews and the slider keep

def test_previews_keep_their_model_and_render_what_a_fresh_load_renders(write_config, lora_file, monkeypatch):
    import functools
    import os

    import morph.studio.previews
    from morph.config.yaml_file import load_config
    from morph.job import run_job
    from morph.media.video import read_png
    from morph.studio.previews import ModelShelf

    loads, load_model = [], morph.studio.previews.load_model

    @functools.wraps(load_model)
    def counted(*args, **kwargs):
        loads.append(args[0])
        return load_model(*args, **kwargs)

    monkeypatch.setattr(morph.studio.previews, "load_model", counted)
    lora = lora_file()
    loras = [{"path": str(lora), "name": "style"}]
    walking = write_config("walking", loras=loras, prompts=[{"prompt": "a photo of a cat", "loras": {"style": 0}},
                                                            {"prompt": "a red circle", "loras": {"style": 1}}])
    other = dict(loras=loras, prompts=["a drawing of a dog in kyoto", "a blue square"])
    shelf = ModelShelf()
    run_job(load_config(walking), quiet=True, load=shelf.load)  # leaves nothing of its strengths behind
    kept = run_job(load_config(write_config("kept", **other)), quiet=True, load=shelf.load)
    assert len(loads) == 1
    fresh = run_job(load_config(write_config("fresh", **other)), quiet=True)
    for ours, theirs in zip(kept["frames"], fresh["frames"], strict=True):
        assert np.array_equal(read_png(f"{kept['frames_dir']}/{ours['file']}"),
                              read_png(f"{fresh['frames_dir']}/{theirs['file']}"))
    run_job(load_config(write_config("scheduler", scheduler="DDIMScheduler", **other)), quiet=True, load=shelf.load)
    assert len(loads) == 2  # another argument: loaded again
    retrained = lora.stat().st_mtime_ns + 1_000_000
    os.utime(lora, ns=(retrained, retrained))  # a file it names changed on disk: loaded again
    run_job(load_config(write_config("retrained", scheduler="DDIMScheduler", **other)), quiet=True, load=shelf.load)
    assert len(loads) == 3


@pytest.mark.parametrize("batch_size", [1, 4])
def test_the_slider_shows_the_frames_an_even_walks_video_has(tmp_path, monkeypatch, batch_size):
    from morph.config.jobs import validate
    from morph.job import run_job
    from morph.media.video import read_png
    from morph.studio.previews import FrameAt

    # batch_size 4: spacing: even rendered the frames as samples, in batches of other sizes (a key holds its batch's)
    walk = {"name": "even", "frames": 7, "batch_size": batch_size, "spacing": {"mode": "even", "max_extra_renders": 6}}
    # the studio's job: its output made absolute, shown at another fps and storm factor than the video's
    studio = studio_config(walk_yaml(**walk, fps=12, analysis={"storm_factor": 2.0}), tmp_path)
    slider = FrameAt()
    before = [slider.frame(studio, i) for i in range(7)]  # prepared before the video was rendered: the uniform walk
    monkeypatch.chdir(tmp_path)  # the video, rendered from a terminal in the root, its output relative as written
    video = run_job(validate({**yaml.safe_load(walk_yaml(**walk)), "output": "outputs/even"}), quiet=True)
    assert any(r["t"] != r["index"] / 6 for r in video["frames"])  # the even walk's frames are not the uniform walk's
    store = studio.output_dir / ".store"
    stored = sorted(store.glob("*.png"))
    for i in range(7):
        assert np.array_equal(slider.frame(studio, i), read_png(studio.output_dir / "frames" / f"{i:05d}.png")), i
    assert sorted(store.glob("*.png")) == stored  # each the video's own frame, from the store
    # a config the video was not rendered from (uniform spacing) keeps its own, uniform frames
    uniform = studio_config(walk_yaml(**{**walk, "spacing": None}), tmp_path)
    moved = next(r["index"] for r in video["frames"] if r["t"] != r["index"] / 6)
    assert np.array_equal(FrameAt().frame(uniform, moved), before[moved])
    assert not np.array_equal(before[moved], read_png(studio.output_dir / "frames" / f"{moved:05d}.png"))


@pytest.mark.parametrize("manifest", ["JSON, not a mapping", "frames that are not the walk's"])
def test_the_slider_keeps_the_uniform_walk_beside_a_manifest_that_places_no_frame_of_it(tmp_path, manifest):
    from morph.studio.previews import FrameAt

    config = studio_config(walk_yaml(name="odd", frames=4, batch_size=2, spacing={"mode": "even"}), tmp_path)
    uniform = FrameAt().frame(config, 1)  # nothing rendered yet: the uniform walk's frame
    records = [{"index": i, "segment": 0, "t": t} for i, t in enumerate((0.0, 0.5, 1.0))]
    text = "[]" if manifest.startswith("JSON") else json.dumps({
        "kind": "walk", "config": config.to_dict(), "config_hash": config.pixel_hash(), "spacing": {"spacing": "even"},
        "frames": records, "frame_count": 3})  # as edited by hand: a record short of the walk's 4 frames
    (config.output_dir / "manifest.json").write_text(text)
    assert np.array_equal(FrameAt().frame(config, 1), uniform)


def test_the_slider_loads_nothing_beside_a_render_and_writes_no_store_another_run_holds(tmp_path):
    from morph.models.pipeline import load_model
    from morph.render.store import OutputLock
    from morph.studio.previews import FrameAt

    loads, ending = [], threading.Event()

    def counted(*args, **kwargs):
        loads.append(args[0])
        return load_model(*args, **kwargs)

    def rendering(config, quiet, progress):  # a render as run_job runs it: holding its output's lock
        with OutputLock(config.output_dir):
            ending.wait(60)
        return {}

    worker = Worker(run=rendering)
    config = studio_config(walk_yaml(name="busy"), tmp_path)
    job = worker.submit(config)
    slider = FrameAt(counted, worker)
    for asked in (config, studio_config(walk_yaml(name="other"), tmp_path)):  # its own job's frames, or another's
        with pytest.raises(MorphError, match=r"^frame 5: a render is queued or running \(busy\)"):
            slider.frame(asked, 5)
    assert loads == [] and not list(tmp_path.rglob("*.png"))  # no second model, no frame written
    ending.set()
    assert job.finished.wait(30) and job.state == "done"
    with OutputLock(config.output_dir):  # `morph run` rendering the same output from a terminal
        with pytest.raises(MorphError, match="is being written by another morph run"):
            slider.frame(config, 5)
    assert not list(tmp_path.rglob("*.png"))
    assert slider.frame(config, 5).shape == (64, 64, 3) and len(loads) == 1  # between renders: rendered


def test_a_preview_and_the_warm_up_load_nothing_beside_a_render(tmp_path, monkeypatch):
    import functools

    import gradio as gr

    import morph.studio.previews
    from morph.models.pipeline import load_model
    from morph.studio.page import Studio

    loads, ending = [], threading.Event()
    counted = functools.wraps(load_model)(lambda *args, **kwargs: loads.append(args) or load_model(*args, **kwargs))
    monkeypatch.setattr(morph.studio.previews, "load_model", counted)
    studio = Studio(tmp_path, Worker(run=lambda config, quiet, progress: ending.wait(60) and {}))
    job = studio._queued(walk_yaml(name="busy"))
    with pytest.raises(gr.Error, match=r"preview: a render is queued or running \(busy\)"):
        studio.preview(walk_yaml(name="other"))
    studio.warm_up(walk_yaml(name="other"))
    assert studio.warmed.wait(60) and loads == [] and not list(tmp_path.rglob("*.png"))
    ending.set()
    assert job.finished.wait(30) and job.state == "done"
    studio.preview(walk_yaml(name="other"))  # between renders: rendered
    assert len(loads) == 1


def test_the_slider_prepares_its_job_again_when_any_key_it_was_prepared_with_changes(write_config, monkeypatch):
    import morph.studio.previews
    from morph.config.yaml_file import load_config
    from morph.job import prepare_job
    from morph.studio.previews import FrameAt

    prepared = []

    def recorded(config, **kwargs):
        prepared.append(config)
        return prepare_job(config.model_copy(update={"compile": False}), **kwargs)  # compiling on the CPU: minutes

    monkeypatch.setattr(morph.studio.previews, "prepare_job", recorded)
    slider, config = FrameAt(), load_config(write_config("slide", frames=4, batch_size=2))
    slider.frame(config, 0)
    slider.frame(config, 3)
    assert prepared == [config]  # the same job: prepared once
    for change in ({"dtype": "bfloat16"}, {"device": "auto"}, {"batch_size": 1}, {"compile": True}):
        config = config.model_copy(update=change)
        slider.frame(config, 1)
        assert prepared[-1] is config, change
    assert len(prepared) == 5


@pytest.mark.parametrize("model, sides, preview", [
    ("sd15", {"width": 768}, (168, 256)),  # the video: 512 x 768; the preview a third of it (170.7, to 8 pixels)
    ("sd15", {"height": 1024}, (256, 128)),
    ("sdxl", {"height": 512}, (128, 256)),  # a hub model in the cache: 512 x 1024
    ("sdxl", {}, (256, 256)),
    ("checkpoint", {"width": 768}, (168, 256)),  # a single file: the configs diffusers gives its family (SD 1.5's)
    ("tiny", {"width": 128}, (64, 128)),  # a built-in model: its own 64 pixels, as small as the video
])
def test_a_preview_with_one_side_set_keeps_the_videos_aspect(model, sides, preview, tmp_path, monkeypatch):
    import huggingface_hub
    import torch
    from safetensors.torch import save_file

    from morph.config.jobs import validate
    from morph.studio.previews import preview_config

    cached = {}
    for where, sample in (("sd15", 64), ("stable-diffusion-v1-5/stable-diffusion-v1-5", 64), ("stabilityai/sdxl", 128)):
        folder = tmp_path / where
        for part, config in (("unet", {"sample_size": sample}), ("vae", {"block_out_channels": [128, 256, 512, 512]})):
            (folder / part).mkdir(parents=True)
            (folder / part / "config.json").write_text(json.dumps(config))
            cached[(where, f"{part}/config.json")] = str(folder / part / "config.json")
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, name: cached.get((repo, name)))
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3)}, tmp_path / "sd.safetensors")
    models = {"sd15": str(tmp_path / "sd15"), "sdxl": "stabilityai/sdxl",
              "checkpoint": str(tmp_path / "sd.safetensors")}
    raw = {k: v for k, v in WALK.items() if k not in ("height", "width")} | {"model": models.get(model, model), **sides}
    config = preview_config(validate(raw))
    assert (config.height, config.width) == preview


def test_a_preview_shows_the_base_walk_without_the_hires_pass():
    """At the preview's fewer steps (5 of 20) a strength of 0.1 gives no step of the second pass."""
    from morph.config.jobs import validate
    from morph.studio.previews import preview_config

    config = validate({**WALK, "num_inference_steps": 20, "hires": {"strength": 0.1}})
    cheap = preview_config(config)
    assert cheap.hires is None and cheap.num_inference_steps == 5 and cheap.frame_size() == (64, 64)


@pytest.mark.parametrize("unet, vae", [
    ('{"sample_size": null}', '{"block_out_channels": [1, 2]}'),
    ('{"sample_size": [64, 96]}', '{"block_out_channels": [1]}'),
    ('{}', '{"block_out_channels": [1, 2]}'), ('{"sample_size": 64}', '{"layers": 2}'), ('{"sample_size": 64', '{}'),
    ('["sample_size"]', '{"block_out_channels": 4}'),
])
def test_a_model_whose_configs_say_no_side_has_none(unet, vae, tmp_path):
    from morph.models.pipeline import own_side

    for part, text in (("unet", unet), ("vae", vae)):
        (tmp_path / "m" / part).mkdir(parents=True)
        (tmp_path / "m" / part / "config.json").write_text(text)
    assert own_side(str(tmp_path / "m")) is None


# --- the page's API, end to end on the tiny model

def online_here(patch: pytest.MonkeyPatch) -> None:
    """The process as the tests run in (this folder, the hub not switched offline), put back once `patch` undoes:
    serve() settles it in the studio's root, offline (settle_in)."""
    import huggingface_hub.constants

    patch.chdir(Path.cwd())
    patch.setenv("HF_HUB_OFFLINE", "0")
    patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def test_the_studio_reads_from_its_root_and_the_local_cache_only(tmp_path, monkeypatch):
    import os

    import gradio as gr
    import huggingface_hub.constants

    from morph.studio.page import serve

    online_here(monkeypatch)
    monkeypatch.chdir(tmp_path)  # where `morph studio` was started: not the root
    monkeypatch.setattr(gr.Blocks, "launch", lambda page, **kwargs: (None, "http://127.0.0.1:1/", None))
    (tmp_path / "root").mkdir()
    studio, _ = serve(tmp_path / "root", port=None, block=False, warm=False)
    studio.worker.stop()
    assert Path.cwd() == tmp_path / "root"  # a name the libraries look up as a folder of the current one: the root's
    assert os.environ["HF_HUB_OFFLINE"] == "1" and huggingface_hub.constants.HF_HUB_OFFLINE is True


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from morph.studio.page import serve

    root = tmp_path_factory.mktemp("studio")
    with pytest.MonkeyPatch.context() as patch:
        online_here(patch)
        patch.setenv("GRADIO_TEMP_DIR", str(root.parent / "gradio-cache"))
        studio, url = serve(root, port=None, block=False, warm=False)
        client = gradio_client.Client(url, verbose=False, download_files=str(root.parent / "downloads"))
        yield studio, root, url, client
        studio.close()


@pytest.fixture
def server(served):
    return served[1:]


def test_preview_gives_the_filmstrip_first_then_the_storm_plot(server):
    root, _, client = server
    filmstrip, plot, slider = client.predict(walk_yaml(name="look"), api_name="/preview")
    assert iio.imread(filmstrip).shape[1] > 0 and iio.imread(plot).shape[1] > 0
    assert slider["maximum"] == 11
    manifest = json.loads((root / "outputs" / ".preview" / "look" / "manifest.json").read_text())
    assert manifest["frame_count"] == 12 and manifest["config"]["num_inference_steps"] == 3  # a few steps stay
    with pytest.raises(gradio_client.exceptions.AppError, match="is outside"):
        client.predict(walk_yaml(model="/etc/passwd"), api_name="/preview")
    with pytest.raises(gradio_client.exceptions.AppError, match="frames"):
        client.predict(walk_yaml(frames=1), api_name="/preview")


def test_a_frame_of_the_walk_renders_once_then_comes_from_the_store(server):
    root, _, client = server
    text = walk_yaml(name="slide")
    first = iio.imread(client.predict(text, 5, api_name="/frame"))
    store = root / "outputs" / "slide" / ".store"
    stored = sorted(p.name for p in store.rglob("*.png"))
    assert len(stored) == 4  # frame 5's whole batch (4-7) renders and is kept, under the full render's keys
    again = iio.imread(client.predict(text, 6, api_name="/frame"))
    assert sorted(p.name for p in store.rglob("*.png")) == stored  # nothing new rendered
    assert first.shape == again.shape == (64, 64, 3) and not np.array_equal(first, again)
    _, manifest, _ = client.predict(text, api_name="/render")
    assert manifest["reused"] == 4 and manifest["rendered"] == 8


def test_render_gives_the_video_first_and_a_reload_finds_the_job(served):
    studio, root, _, client = served
    video, manifest, plot = client.predict(walk_yaml(name="full"), api_name="/render")
    assert manifest["frame_count"] == 12 and Path(video).name == "full.mp4"
    assert sum(1 for _ in iio.imiter(video)) == 12
    assert iio.imread(plot).shape[1] > 0
    jobs = client.predict(api_name="/jobs")
    assert {"name": "full", "state": "done", "done": 12, "total": 12}.items() <= next(
        j for j in jobs if j["name"] == "full").items()
    # a new page (a reload) asks the server again; a restarted studio reads the state from the output folder
    assert saved_jobs(root / "outputs", Worker())[0]["state"] == "done"
    line, shown_video, _, report, presets = studio.show("full")  # what the page shows of it
    assert line.startswith("**full**: done") and shown_video == str(root / "outputs" / "full" / "full.mp4")
    assert report == f"[report.html](/gradio_api/file={root / 'outputs' / 'full' / 'report.html'})"
    assert presets["visible"] is True
    gif = studio.deliver("full", "gif")  # a preset button
    assert gif == str(root / "outputs" / "full" / "full.gif") and sum(1 for _ in iio.imiter(gif)) == 12
    with pytest.raises(gradio_client.exceptions.AppError, match="outside"):
        client.predict(walk_yaml(output="../../escape"), api_name="/render")


def test_only_files_under_the_outputs_are_served(server):
    root, url, _ = server
    (root / "configs").mkdir(exist_ok=True)
    secret = root / "configs" / "secret.yaml"
    secret.write_text("not for the web")
    for path in (secret, Path("/etc/passwd")):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{url}gradio_api/file={path}")
        assert e.value.code in (403, 404)
    shown = root / "outputs" / "shown" / "report.html"  # the page links a job's report.html this way
    shown.parent.mkdir(parents=True)
    shown.write_text("<p>a report</p>")
    assert urllib.request.urlopen(f"{url}gradio_api/file={shown}").read() == b"<p>a report</p>"


def test_cancel_stops_a_render_and_rendering_again_goes_on_from_there(server):
    _, _, client = server
    text = walk_yaml(name="long", frames=120, batch_size=2)
    running = client.submit(text, api_name="/render")
    while not any(j["name"] == "long" and j["state"] == "running" and j["done"] >= 2
                  for j in client.predict(api_name="/jobs")):
        time.sleep(0.1)
    assert client.predict("long", api_name="/cancel") == "long: cancelling"
    with pytest.raises(gradio_client.exceptions.AppError, match="cancelled after"):
        running.result(timeout=300)
    status = next(j for j in client.predict(api_name="/jobs") if j["name"] == "long")
    assert status["state"] == "cancelled" and 2 <= status["done"] < 120
    _, manifest, _ = client.predict(text, api_name="/render")
    assert manifest["reused"] >= status["done"] and manifest["rendered"] + manifest["reused"] == 120


def test_twenty_previews_at_once_are_answered_or_refused_and_the_server_stays_up(server):
    root, _, client = server
    text = walk_yaml(name="crowd")
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(client.predict, text, api_name="/preview") for _ in range(20)]
        outcomes = []
        for future in futures:
            try:
                outcomes.append(("answered", future.result(timeout=600)[0]))
            except Exception as e:  # Gradio's queue refuses beyond its size: an error the client raises
                outcomes.append(("refused", str(e)))
    answered = [o for kind, o in outcomes if kind == "answered"]
    refused = [o for kind, o in outcomes if kind == "refused"]
    assert answered and all(iio.imread(path).shape[1] > 0 for path in answered)
    assert all("queue" in message.lower() for message in refused), refused
    assert client.predict(text, api_name="/preview")[0]  # still serving
    store = root / "outputs" / ".preview" / "crowd" / ".store"
    frames = list(store.rglob("*.png"))
    assert frames and all(iio.imread(path).shape == (64, 64, 3) for path in frames)  # no broken frame


def test_a_password_guards_the_page_when_asked(tmp_path, monkeypatch):
    from morph.studio.page import serve

    online_here(monkeypatch)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio-cache"))
    studio, url = serve(tmp_path, port=None, block=False, warm=False, auth=("me", "a-long-secret"))
    try:
        with pytest.raises(gradio_client.exceptions.AuthenticationError, match="Please login"):
            gradio_client.Client(url, verbose=False, download_files=str(tmp_path / "d"))
        with pytest.raises(ValueError, match="Could not login"):
            gradio_client.Client(url, verbose=False, auth=("me", "a-guess"), download_files=str(tmp_path / "d"))
        client = gradio_client.Client(url, verbose=False, auth=("me", "a-long-secret"),
                                      download_files=str(tmp_path / "d"))
        assert client.predict(api_name="/jobs") == []
    finally:
        studio.close()
