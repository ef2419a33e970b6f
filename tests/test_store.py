"""The frame store against what users and crashes do to it: edited frames, leftover partial files, flags kept with
each frame, keys that name the GPU, and late failures that must leave the previous outputs whole."""

import hashlib
import json
import os

import numpy as np
import pytest
import torch

import morph.job
import morph.render.produce
import morph.render.batch
import morph.render.store
from morph.config.yaml_file import load_config
from morph.files import partial_name
from morph.job import prepare_job, run_job
from morph.render.produce import render_identity
from morph.render.store import FrameStore, content_digest, digest
from morph.media.video import read_png


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def outputs(out):
    """Every file of an output folder but the store, by name: its sha256."""
    return {str(p.relative_to(out)): sha(p) for p in out.rglob("*") if p.is_file() and ".store" not in p.parts}


def test_editing_a_published_frame_changes_neither_the_store_nor_the_next_run(write_config):
    config = load_config(write_config(frames=3))
    run_job(config, quiet=True)
    frame = config.output_dir / "frames" / "00001.png"
    store = FrameStore(config.output_dir)
    stored = store.path(store.plan()["keys"][1])
    original = stored.read_bytes()
    assert frame.read_bytes() == original and not os.path.samefile(frame, stored)  # a copy, not a link
    edited = read_png(frame).copy()
    edited[:8] = 255
    with frame.open("r+b") as f:  # in place, as an image editor saving over the file does
        from PIL import Image

        Image.fromarray(edited).save(f, format="PNG")
    assert stored.read_bytes() == original
    manifest = run_job(config, quiet=True)
    assert manifest["rendered"] == 0 and frame.read_bytes() == original  # the published frame is the store's again


def test_a_stored_frame_whose_bytes_changed_is_rendered_again(write_config):
    config = load_config(write_config(frames=3))
    run_job(config, quiet=True)
    store = FrameStore(config.output_dir)
    stored = store.path(store.plan()["keys"][2])
    original = stored.read_bytes()
    image = read_png(stored).copy()
    image[0, 0] = 255 - image[0, 0]  # still a whole, valid PNG: only its record can tell
    from PIL import Image

    Image.fromarray(image).save(stored, format="PNG")
    manifest = run_job(config, quiet=True)
    assert manifest["rendered"] == 1 and stored.read_bytes() == original


def test_a_leftover_partial_file_linked_to_another_frame_never_changes_that_frame(tmp_path):
    store = FrameStore(tmp_path)
    a, b = np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 200, np.uint8)
    store.put("a", a)
    kept = store.path("a").read_bytes()
    os.link(store.path("a"), partial_name(store.path("b")))  # left by a killed run that was linking "a" as "b"
    store.put("b", b)
    assert store.path("a").read_bytes() == kept and np.array_equal(store.read("b"), b)
    target = tmp_path / "frames" / "00000.png"
    target.parent.mkdir()
    os.link(store.path("a"), partial_name(target))
    store.publish("b", target)
    assert store.path("a").read_bytes() == kept and np.array_equal(read_png(target), b)


def test_a_frame_without_its_record_is_not_trusted(tmp_path):
    store = FrameStore(tmp_path)
    store.put("k", np.zeros((4, 4, 3), np.uint8))
    assert store.has("k", (4, 4, 3)) and not store.has("k", (4, 5, 3))
    (tmp_path / ".store" / "k.json").unlink()
    assert not store.has("k", (4, 4, 3))


def test_flags_stay_with_their_frames_across_runs(write_config, monkeypatch):
    real = morph.render.batch.render_batch

    def flagged(*args, **kwargs):
        batch = real(*args, **kwargs)
        batch.nsfw = [True] * len(batch.nsfw)  # as if the safety checker had blacked out every frame
        return batch

    config = load_config(write_config(frames=3, batch_size=1))
    with monkeypatch.context() as patch:
        patch.setattr(morph.render.batch, "render_batch", flagged)
        assert run_job(config, quiet=True)["nsfw_flagged"] == [0, 1, 2]
    manifest = run_job(config, quiet=True)  # every frame from the store, none rendered by this process
    assert manifest["rendered"] == 0 and manifest["nsfw_flagged"] == [0, 1, 2]


def test_on_cuda_the_store_key_names_the_gpu_and_the_libraries(write_config, monkeypatch):
    job = prepare_job(load_config(write_config(frames=2)))
    pipe = job.loaded.pipe
    monkeypatch.setattr(type(pipe), "device", property(lambda self: torch.device("cuda", 0)))
    keys = {}
    for name in ("NVIDIA H100 80GB HBM3", "NVIDIA H200"):
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device, name=name: name)
        job.identity = None
        identity = render_identity(job)
        keys[name] = digest(identity)
        assert identity["gpu"]["name"] == name and identity["gpu"]["torch"] == torch.__version__
        assert {"diffusers", "transformers", "cuda"} <= set(identity["gpu"])
    assert len(set(keys.values())) == 2


@pytest.mark.parametrize("failing", ["storm_map", "deliver_all", "write_report"])
def test_a_failure_after_rendering_leaves_the_previous_outputs_whole(write_config, monkeypatch, failing):
    config = load_config(write_config(frames=4))
    first = run_job(config, quiet=True)
    before = outputs(config.output_dir)

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(morph.job, failing, fail)
    with pytest.raises(OSError):
        run_job(config.model_copy(update={"seed": 99}), quiet=True)  # renders 4 new frames, then fails
    assert outputs(config.output_dir) == before
    assert json.loads((config.output_dir / "manifest.json").read_text()) == first
    assert not (config.output_dir / ".staging").exists()


def test_a_finished_run_replaces_every_output_and_names_them_where_they_are(write_config):
    config = load_config(write_config(frames=4))
    run_job(config, quiet=True)
    manifest = run_job(config.model_copy(update={"seed": 99}), quiet=True)
    out = config.output_dir
    assert manifest["video"] == str(out / "job.mp4") and manifest["frames_dir"] == str(out / "frames")
    assert manifest["report"] == str(out / "report.html") and manifest["analysis"]["plot"] == str(out / "storm.png")
    assert ".staging" not in json.dumps(manifest) and not (out / ".staging").exists()
    store = FrameStore(out)
    assert [sha(out / "frames" / f"{i:05d}.png") for i in range(4)] == [sha(store.path(k)) for k in store.plan()["keys"]]


def test_local_weights_are_read_once_until_a_file_of_them_changes(tmp_path, monkeypatch):
    reads = []
    hash_file = morph.render.store._hash_file
    monkeypatch.setattr(morph.render.store, "_hash_file", lambda sha, path: (reads.append(path.name),
                                                                            hash_file(sha, path)))
    folder = tmp_path / "model"
    (folder / "unet").mkdir(parents=True)
    weights, config = folder / "unet" / "w.safetensors", folder / "unet" / "config.json"
    weights.write_bytes(b"first")
    config.write_text("{}")
    first = content_digest(str(folder), None)
    assert content_digest(str(folder), None) == first and sorted(reads) == ["config.json", "w.safetensors"]
    weights.write_bytes(b"other")  # retrained: the same size, a later modification time
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000))
    second = content_digest(str(folder), None)
    assert second != first and len(reads) == 4
    assert content_digest(str(weights), None) == content_digest(str(weights), None) and len(reads) == 5
    assert content_digest(str(tmp_path / "absent"), "hub revision") == "hub revision"
