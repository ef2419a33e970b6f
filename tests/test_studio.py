"""morph studio: the form and the YAML, paths kept in the root, the render worker, and the page's API driven end to end
by gradio_client on the tiny model (tests/test_studio_browser.py drives the page itself in chromium)."""

import concurrent.futures
import json
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
    assert values["keyframes"] == [["a red circle", "", "", "", ""], ["a blue square", "4", "", "", ""]]
    assert values["frames"] == 10 and values["spacing"] == "uniform" and values["interpolation"] == "slerp"
    assert with_form(raw, values) == raw  # nothing changed: the same mapping, frames per segment and all
    values["keyframes"][0][3] = "9.5"  # a guidance_scale for the first keyframe
    values["keyframes"][1][4] = "1.5"  # the LoRA's strength at the second
    values["spacing"], values["width"] = "even", 128.0
    changed = with_form(raw, values)
    assert changed["prompts"] == [{"prompt": "a red circle", "guidance_scale": 9.5},
                                  {"prompt": "a blue square", "seed": 4, "loras": {"ink": 1.5}}]
    assert changed["spacing"] == "even" and changed["width"] == 128 and changed["frames"] == [10]
    assert changed["analysis"] == {"metric": "pixel"}  # a key without a field stays


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
    assert table["data"] == [["a cat", "", "", ""], ["a dog", "", "", "3"]]
    assert message == "✓ walk, 12 frames, into outputs/walk"
    assert studio.form_values(walk_yaml(frames=1))[-1].startswith("⚠ frames: ")
    running = {"name": "walk", "state": "running", "done": 5, "total": 12, "frames_per_s": 2.5, "seconds_left": 2.8}
    assert _status_line(running) == "**walk**: rendering, 5 of 12 frames, 2.50 frames/s, about 3 s left"


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


def test_a_bad_config_gets_the_clis_message(tmp_path):
    with pytest.raises(MorphError, match=r"^num_inference_steps: .*1"):
        studio_config(walk_yaml(num_inference_steps=0), tmp_path)


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


def test_a_job_left_running_by_a_stopped_studio_reads_as_interrupted(tmp_path):
    worker = Worker(run=_fake_run(seconds=0.2))
    job = worker.submit(studio_config(walk_yaml(name="left"), tmp_path))
    while job.state != "running":
        time.sleep(0.01)
    restarted = saved_jobs(tmp_path / "outputs", Worker())  # a new studio: studio.json still says running
    assert [(s["name"], s["state"]) for s in restarted] == [("left", "interrupted")]
    assert job.finished.wait(30)


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


# --- the page's API, end to end on the tiny model

@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from morph.studio.page import serve

    root = tmp_path_factory.mktemp("studio")
    with pytest.MonkeyPatch.context() as patch:
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
