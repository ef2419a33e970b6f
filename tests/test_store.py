"""The frame store against what users and crashes do to it: edited frames, leftover partial files, flags kept with
each frame, keys that name the GPU, and late failures that must leave the previous outputs whole."""

import hashlib
import json
import os

import numpy as np
import pytest
import torch

import morph.files
import morph.job
import morph.render.produce
import morph.render.batch
import morph.render.store
from morph.config.yaml_file import load_config
from morph.files import write_atomic
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


def test_each_write_has_a_temporary_name_of_its_own_and_a_leftover_at_one_changes_nothing(tmp_path):
    names, other, target = [], tmp_path / "a.png", tmp_path / "b.png"
    other.write_bytes(b"a")

    def write(partial):
        names.append(partial)
        partial.write_bytes(b"b")

    write_atomic(target, write)
    os.link(other, names[0])  # a run killed there left this name, a link to another frame
    write_atomic(target, write)
    assert names[0] != names[1] and other.read_bytes() == b"a" and target.read_bytes() == b"b"


def test_two_videos_written_to_one_path_at_once_each_have_their_own_temporary_file(tmp_path):
    from morph.media.video import VideoWriter

    first, second = VideoWriter(tmp_path / "v.mp4", 16, 16, 20), VideoWriter(tmp_path / "v.mp4", 16, 16, 20)
    for writer in (first, second):
        writer.write(np.zeros((16, 16, 3), np.uint8))
    assert first._partial != second._partial  # with one name, both ffmpegs wrote into the same file
    first.close()
    second.close()
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]


# each process: 4 threads (writers 4 * first .. 4 * first + 3), each putting its own frame (value 8 * key + writer)
# under every one of 30 keys, once the test says go; odd writers' frames are flagged, so that a record written by
# another put than the PNG's shows
RACING_PUTS = """
import sys, threading
from pathlib import Path
import numpy as np
from morph.render.store import FrameStore
store, first, failures = FrameStore(Path(sys.argv[1])), int(sys.argv[2]), []
def put(writer):
    for key in range(30):
        try:
            store.put(f"k{key}", np.full((16, 16, 3), 8 * key + writer, np.uint8), ["nsfw"] if writer % 2 else [])
        except Exception as e:
            failures.append(repr(e))
threads = [threading.Thread(target=put, args=(4 * first + t,)) for t in range(4)]
print("ready", flush=True)
sys.stdin.readline()
for t in threads:
    t.start()
for t in threads:
    t.join()
print(failures[:3] if failures else "ok", flush=True)
"""


def test_writers_racing_on_one_key_never_fail_and_leave_each_frame_with_its_own_record(tmp_path):
    import subprocess
    import sys

    racers = [subprocess.Popen([sys.executable, "-c", RACING_PUTS, str(tmp_path), str(first)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True) for first in (0, 1)]
    assert [racer.stdout.readline() for racer in racers] == ["ready\n"] * 2
    for racer in racers:  # both processes start putting at once
        racer.stdin.write("go\n")
        racer.stdin.flush()
    assert [racer.communicate()[0] for racer in racers] == ["ok\n"] * 2  # no FileNotFoundError, nothing else
    store = FrameStore(tmp_path)
    for key in (f"k{i}" for i in range(30)):
        assert store.has(key, (16, 16, 3)), key  # the record's sha256 is the PNG's
        writer = int(store.read(key)[0, 0, 0]) % 8
        assert store.flags(key) == (["nsfw"] if writer % 2 else []), key  # and its flags that put's
    assert not [p.name for p in store.folder.iterdir() if "partial" in p.name]


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_kept(tmp_path):
    from morph.errors import MorphError
    from morph.render.store import OutputLock

    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    out = tmp_path / "out"
    (out / ".store").mkdir(parents=True)
    (out / ".lock").symlink_to(precious)  # left there by someone: taking the lock would truncate it
    with pytest.raises(MorphError, match=r"\.lock is a link, and morph writes its lock files only as files"):
        OutputLock(out).__enter__()
    (out / ".store" / ".write.lock").symlink_to(precious)
    with pytest.raises(MorphError, match=r"\.write\.lock is a link"):
        FrameStore(out).put("k", np.zeros((4, 4, 3), np.uint8))
    assert precious.read_text() == "keep me"


def test_the_temporary_files_of_killed_runs_are_swept_once_a_run_holds_the_lock(tmp_path):
    from morph.render.produce import claimed
    from morph.render.shard import Shard

    store = FrameStore(tmp_path)
    store.put("k", np.zeros((4, 4, 3), np.uint8))
    left = [store.folder / f".k.{'0' * 32}.partial.png", store.folder / f".k.{'1' * 32}.partial.json"]
    for path in left:  # killed between writing and renaming: each write's own name, so none is ever reused
        path.write_bytes(b"half")
    with claimed(tmp_path, Shard()):
        assert not any(path.exists() for path in left)
    assert store.has("k", (4, 4, 3))


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


def test_on_cuda_the_store_key_names_the_tf32_switches(write_config, monkeypatch):
    """TF32 rounds float32 matmuls and convolutions to 10 mantissa bits: other pixels, so another key."""
    job = prepare_job(load_config(write_config(frames=2)))
    monkeypatch.setattr(type(job.loaded.pipe), "device", property(lambda self: torch.device("cuda", 0)))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "NVIDIA H200")
    keys, switches = set(), (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:  # not monkeypatch: torch's flag objects keep no attributes it could put back
        for module, allowed in ((torch.backends.cuda.matmul, False), (torch.backends.cudnn, False),
                                (torch.backends.cuda.matmul, True)):
            module.allow_tf32 = allowed
            job.identity = None
            keys.add(digest(render_identity(job)))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = switches
    assert len(keys) == 3

    def mixed(self):
        raise RuntimeError("PyTorch is checking whether allow_tf32 is enabled for cuDNN without a specific operator")

    # torch >= 2.9 with TF32 set per operator (fp32_precision) refuses the old question: the key takes each answer
    monkeypatch.setattr(type(torch.backends.cudnn), "allow_tf32", property(mixed))
    job.identity = None
    assert render_identity(job)["gpu"]["tf32"]["conv"] == torch.backends.cudnn.conv.fp32_precision


def test_the_store_key_names_the_render_codes_version(write_config, monkeypatch):
    """A change to morph's own code that moves pixels (SDXL's float32 decode no longer cast back to float16, walking
    guidance re-weighted in float32) changes no setting: the code's version in the key keeps old frames out."""
    job = prepare_job(load_config(write_config(frames=2)))
    identity = render_identity(job)
    assert identity["code"] == morph.render.produce.RENDER_CODE >= 2
    before = digest({k: v for k, v in identity.items() if k != "code"})  # the key before the code had a version
    monkeypatch.setattr(morph.render.produce, "RENDER_CODE", morph.render.produce.RENDER_CODE + 1)
    job.identity = None
    assert len({before, digest(identity), digest(render_identity(job))}) == 3


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
    hash_file = morph.files.hash_file
    for module in (morph.files, morph.render.store):  # file_digest's and folder_digest's
        monkeypatch.setattr(module, "hash_file", lambda sha, path: (reads.append(path.name), hash_file(sha, path)))
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


def test_a_negative_read_through_define_keys_the_texts_it_names(write_config):
    """negative_prompt: neg renders what `neg` is defined as: another definition is another frame."""
    def keys(car):
        config = load_config(write_config(frames=2, prompts=["'a photo of a cat'", "'a dog'"],
                                          define={"neg": f"a {car} car"}, negative_prompt="neg"))
        return render_identity(prepare_job(config))

    red, blue = keys("red"), keys("blue")
    assert red["negative_terms"] == {"a red car": 1.0} and digest(red) != digest(blue)
    plain = render_identity(prepare_job(load_config(write_config(frames=2, negative_prompt="a red car"))))
    assert "negative_terms" not in plain  # without define: the key is the one it always was
