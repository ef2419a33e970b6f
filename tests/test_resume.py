"""Never lose a frame: the frame store, resumed runs after kill -9 and Ctrl-C, the lock, torchrun sharding."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import imageio_ffmpeg
import pytest
import torch
from click.testing import CliRunner

from conftest import tiny_job
import morph.render.batch
from morph.cli import cli
from morph.config.yaml_file import load_config
from morph.job import run_job
from morph.errors import MorphError
from morph.render.produce import claimed
from morph.render.store import FrameStore, OutputLock, status

SLOW = {"frames": 40, "num_inference_steps": 12, "batch_size": 4}  # a few seconds of rendering on 2 cores


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def frame_hashes(out, count):
    return [sha(out / "frames" / f"{i:05d}.png") for i in range(count)]


def video_frames(path):
    reader = imageio_ffmpeg.read_frames(str(path))
    next(reader)
    return [bytes(frame) for frame in reader]


def stored(out):
    """The frames in the store with their records: a kill between a PNG and its record leaves a frame that the next
    run does not trust, and renders again."""
    return [p for p in (out / ".store").glob("*.png") if not p.name.startswith(".") and p.with_suffix(".json").exists()]


def start(config_path, out):
    # Ctrl-C's default action back in the child: a shell that starts pytest in the background ignores SIGINT,
    # and a child that inherits that ignores the test's SIGINT (Python installs no KeyboardInterrupt handler)
    return subprocess.Popen([sys.executable, "-m", "morph", "run", str(config_path), "--out", str(out), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_frames(out, at_least, process, limit=120):
    deadline = time.monotonic() + limit
    while len(stored(out)) < at_least:
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """An uninterrupted run of the slow walk, to compare the others with."""
    root = tmp_path_factory.mktemp("clean")
    path = tiny_job(root, "walk", **SLOW)
    run_job(load_config(path, output=str(root / "out")), quiet=True)
    return path, root / "out"


def test_a_run_killed_with_sigkill_resumes_with_only_the_missing_frames(clean, tmp_path):
    path, clean_out = clean
    out = tmp_path / "out"
    process = start(path, out)
    wait_for_frames(out, 8, process)
    process.kill()
    process.wait()
    done = len(stored(out))
    assert 8 <= done < 40 and not (out / "manifest.json").exists()
    manifest = run_job(load_config(path, output=str(out)), quiet=True)
    assert manifest["rendered"] == 40 - done and manifest["reused"] == done
    assert frame_hashes(out, 40) == frame_hashes(clean_out, 40)  # bit-identical to the uninterrupted run
    assert video_frames(out / "walk.mp4") == video_frames(clean_out / "walk.mp4")


def test_ctrl_c_keeps_every_finished_frame_and_says_how_to_resume(clean, tmp_path):
    path, clean_out = clean
    out = tmp_path / "out"
    process = start(path, out)
    wait_for_frames(out, 4, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "interrupted: every finished frame is kept" in stderr and "renders only the rest" in stderr
    assert not (out / "manifest.json").exists() and not list(out.glob("*.mp4")) and not (out / ".lock").exists()
    assert not [p for p in out.rglob("*") if "partial" in p.name]
    done = len(stored(out))
    manifest = run_job(load_config(path, output=str(out)), quiet=True)
    assert manifest["rendered"] == 40 - done
    assert frame_hashes(out, 40) == frame_hashes(clean_out, 40)


def test_an_interrupted_rerun_leaves_the_previous_outputs_whole(write_config, monkeypatch):
    config = load_config(write_config(frames=5))
    first = run_job(config, quiet=True)
    before = {p.name: sha(p) for p in config.output_dir.rglob("*") if p.is_file() and ".store" not in p.parts}

    class Stop(Exception):
        pass

    def stop_after_one(*args, **kwargs):
        raise Stop  # stands in for Ctrl-C in the middle of the first batch

    monkeypatch.setattr(morph.render.batch, "render_batch", stop_after_one)
    with pytest.raises(Stop):
        run_job(config.model_copy(update={"seed": 99}), quiet=True)
    after = {p.name: sha(p) for p in config.output_dir.rglob("*") if p.is_file() and ".store" not in p.parts}
    assert after == before and json.loads((config.output_dir / "manifest.json").read_text()) == first


def test_changing_only_the_video_settings_renders_nothing(write_config):
    config = load_config(write_config(frames=6))
    run_job(config, quiet=True)
    manifest = run_job(config.model_copy(update={"fps": 10}), quiet=True)
    assert manifest["rendered"] == 0 and manifest["reused"] == 6
    assert imageio_ffmpeg.count_frames_and_secs(str(config.output_dir / "job.mp4")) == (6, 0.6)


def test_changing_the_seed_renders_every_frame(write_config):
    config = load_config(write_config(frames=6))
    run_job(config, quiet=True)
    manifest = run_job(config.model_copy(update={"seed": 8}), quiet=True)
    assert manifest["rendered"] == 6 and manifest["reused"] == 0
    assert CliRunner().invoke(cli, ["status", str(config.output_dir)]).output.strip() == \
        "job: 6 of 6 frames done, 0 missing; 6 stored frames belong to other settings"


def test_changing_the_walk_renders_exactly_the_frames_whose_conditioning_changed(write_config):
    config = load_config(write_config(frames=5, batch_size=1, prompts=["a cat", "a dog", "a red circle"]))
    run_job(config, quiet=True)
    # the second segment changes; frames 0-2 (the first segment and keyframe "a dog") stay
    changed = load_config(write_config(frames=5, batch_size=1, prompts=["a cat", "a dog", "a blue square"]))
    manifest = run_job(changed, quiet=True)
    assert manifest["reused"] == 3 and manifest["rendered"] == 2


def test_a_truncated_frame_in_the_store_is_rendered_again(write_config):
    config = load_config(write_config(frames=6))
    run_job(config, quiet=True)
    plan = FrameStore(config.output_dir).plan()
    victim = FrameStore(config.output_dir).path(plan["keys"][3])
    whole = victim.read_bytes()
    victim.write_bytes(whole[: len(whole) // 2])
    manifest = run_job(config, quiet=True)
    assert manifest["rendered"] == 1 and victim.read_bytes() == whole


def test_fresh_renders_everything_again(write_config):
    config = load_config(write_config(frames=4))
    run_job(config, quiet=True)
    assert run_job(config, quiet=True, fresh=True)["rendered"] == 4


def test_selected_frames_are_bit_identical_to_the_full_run(write_config, tmp_path):
    config = load_config(write_config(frames=10, batch_size=4))
    run_job(config, quiet=True)
    alone = config.model_copy(update={"output": str(tmp_path / "alone")})
    manifest = run_job(alone, frames="1,2,3,9", quiet=True)
    assert manifest["video"] is None and manifest["rendered"] == 4
    for i in (1, 2, 3, 9):
        assert sha(alone.output_dir / "frames" / f"{i:05d}.png") == sha(config.output_dir / "frames" / f"{i:05d}.png")


HOLD_LOCK = """
import fcntl, json, os, socket, sys, time
handle = open(sys.argv[1], "a+")
fcntl.flock(handle, fcntl.LOCK_EX)
handle.truncate(0)
handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
handle.flush()
print("locked", flush=True)
time.sleep(60)
"""


def test_a_second_run_into_a_live_runs_folder_is_refused_and_a_dead_runs_lock_is_taken_over(write_config, tmp_path):
    config = load_config(write_config(frames=2))
    out = config.output_dir
    out.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = CliRunner().invoke(cli, ["run", str(write_config(frames=2)), "--quiet"])
        assert result.exit_code == 2 and f"being written by another morph run (pid {holder.pid}" in result.output
    finally:
        holder.kill()
        holder.wait()
    assert (out / ".lock").exists()  # left behind by the killed holder, as after kill -9
    result = CliRunner().invoke(cli, ["run", str(write_config(frames=2)), "--quiet"])  # its holder is gone now
    assert result.exit_code == 0, result.output
    assert not (out / ".lock").exists()


def test_a_lock_file_written_but_not_held_is_no_lock(tmp_path):
    (tmp_path / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))  # a live pid
    with OutputLock(tmp_path):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
        with pytest.raises(MorphError, match=f"pid {os.getpid()}"):
            OutputLock(tmp_path).__enter__()  # the same process, another open file: flock says taken
    assert not (tmp_path / ".lock").exists()


def test_two_runs_taking_a_lock_at_once_never_both_hold_it(tmp_path):
    """Many processes race for one folder's lock, each holding it briefly: never two at once."""
    racer = """
import os, sys, time
from morph.render.store import OutputLock
from morph.errors import MorphError
from pathlib import Path
folder, won = Path(sys.argv[1]), 0
for _ in range(200):
    try:
        with OutputLock(folder):
            marker = folder / "holder"
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # fails if another holder is inside
            time.sleep(0.001)
            os.close(fd)
            marker.unlink()
            won += 1
    except MorphError:
        pass
print(won)
"""
    racers = [subprocess.Popen([sys.executable, "-c", racer, str(tmp_path)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [r.communicate(timeout=120) for r in racers]
    assert all(r.returncode == 0 for r in racers), [err[-1000:] for _, err in results]
    assert sum(int(out) for out, _ in results) > 0


def test_status_before_any_run_is_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["status", str(tmp_path)])
    assert result.exit_code == 2 and "no morph job has been started here" in result.output


# torchrun as this interpreter's module: a `torchrun` on PATH may belong to another Python
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def test_torchrun_with_two_ranks_gives_the_same_frames_and_one_video(clean, tmp_path):
    path, _ = clean
    out, clean_out = tmp_path / "out", tmp_path / "one-process"
    # torchrun gives each rank one CPU thread; the thread count moves CPU pixels, so the reference uses one too
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "morph", "run", str(path), "--out", str(clean_out), "--quiet"],
                   check=True, env=env, capture_output=True)
    run = subprocess.run([*TORCHRUN, "-m", "morph", "run", str(path), "--out", str(out), "--quiet"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("frames rendered") == 1  # rank 0 reports, once
    assert frame_hashes(out, 40) == frame_hashes(clean_out, 40)
    assert [p.name for p in out.glob("*.mp4")] == ["walk.mp4"]
    assert video_frames(out / "walk.mp4") == video_frames(clean_out / "walk.mp4")
    manifests = [json.loads((o / "manifest.json").read_text()) for o in (out, clean_out)]
    assert manifests[0]["rendered"] == 40  # both ranks' renders
    # the leader measured the storm map from the store as the one process did from the frames arriving
    leader, one = ({k: v for k, v in m["analysis"].items() if k not in ("plot", "filmstrip")} for m in manifests)
    assert leader == one and len(one["distances"]) == 39


SMALL_GPU_ON_RANK_1 = """
import os
if os.environ.get("RANK") == "1":  # only this torchrun rank runs out of memory above 2 frames
    import torch
    import morph.render.batch
    real = morph.render.batch.render_batch

    def small_gpu(pipe, conds, *args, **kwargs):
        if conds.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(pipe, conds, *args, **kwargs)

    morph.render.batch.render_batch = small_gpu
"""


def test_under_torchrun_a_back_off_on_another_rank_is_known_to_the_leader(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SMALL_GPU_ON_RANK_1)
    path = tiny_job(tmp_path, "walk", frames=12, batch_size=4, num_inference_steps=2)
    out = tmp_path / "out"
    # ahead of what PYTHONPATH already holds (on the GPU machine: this tree and the carried wheels), not instead
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    command = [*TORCHRUN, "-m", "morph", "run", str(path), "--out", str(out), "--quiet"]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "continuing with batch_size 2" in run.stderr  # rank 1 rendered frames 4-7 as two batches of 2
    plan = FrameStore(out).plan()
    assert plan["sizes"] == [4] * 4 + [2] * 4 + [4] * 4 and status(out)["missing"] == 0
    assert len(list((out / "frames").glob("*.png"))) == 12
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "manifest.json").read_text())["rendered"] == 0


def test_batch_size_auto_resumes_with_the_size_the_first_run_chose(write_config):
    config = load_config(write_config(frames=6, batch_size="auto"))
    run_job(config, quiet=True)
    store = FrameStore(config.output_dir)
    plan = store.plan()
    assert plan["batch_size"] == 4
    # as if the first run had been on a GPU whose memory allowed 2: the resumed run keeps 2, whatever auto says now
    store.save_plan({**plan, "batch_size": 2})
    manifest = run_job(config, quiet=True)
    # frames 0-3 rendered in a batch of 4 before: new keys; 4 and 5 were a batch of 2 then too: reused
    assert manifest["batch_size"] == 2 and manifest["rendered"] == 4 and manifest["reused"] == 2
    assert run_job(config, quiet=True)["rendered"] == 0  # and the next resume finds them


def gpu_of(monkeypatch, most: int) -> list[int]:
    """Make render_batch run out of memory, as CUDA would, above `most` frames; the batch sizes it was called with."""
    real, sizes = morph.render.batch.render_batch, []

    def small_gpu(pipe, conds, *args, **kwargs):
        sizes.append(conds.shape[0])
        if conds.shape[0] > most:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(pipe, conds, *args, **kwargs)

    monkeypatch.setattr(morph.render.batch, "render_batch", small_gpu)
    return sizes


def test_a_run_that_backs_off_after_out_of_memory_still_publishes_every_frame(write_config, monkeypatch):
    gpu_of(monkeypatch, most=2)
    config = load_config(write_config(frames=6, batch_size=4))
    with pytest.warns(UserWarning, match="continuing with batch_size 2"):
        manifest = run_job(config, quiet=True)
    assert manifest["batch_size"] == 2 and manifest["rendered"] == 6
    assert len(list((config.output_dir / "frames").glob("*.png"))) == 6
    # the plan saved after rendering has the keys the back-off gave: status finds every frame, and the same command
    # again renders nothing (nor does the size it fell back to)
    assert status(config.output_dir)["missing"] == 0
    assert run_job(config, quiet=True)["rendered"] == 0
    assert run_job(config.model_copy(update={"batch_size": 2}), quiet=True)["rendered"] == 0


def test_the_back_off_halves_the_batch_that_failed_not_the_batch_size(write_config, monkeypatch):
    sizes = gpu_of(monkeypatch, most=1)
    config = load_config(write_config(frames=3, batch_size=64))
    with pytest.warns(UserWarning, match="in a batch of 3 frames; continuing with batch_size 1"):
        manifest = run_job(config, quiet=True)
    assert sizes == [3, 1, 1, 1]  # not 3 frames tried again at 32, 16, 8, 4 and 2
    assert manifest["batch_size"] == 1 and manifest["rendered"] == 3


class Recorded:
    """A rank of two that records when it waits for the others and when it leaves the group."""

    def __init__(self, rank, seen):
        self.leader, self.seen = rank == 0, seen

    def from_leader(self, value):
        return value

    def settle(self):
        self.seen.append("settle")

    def close(self):
        self.seen.append("close")


@pytest.mark.parametrize("rank", [0, 1])
def test_a_rank_that_finished_leaves_the_group_only_with_the_others_and_a_failed_one_at_once(tmp_path, rank):
    seen = []
    with claimed(tmp_path / "done", Recorded(rank, seen)):
        pass
    assert seen == ["settle", "close"]  # waiting for the leader's outputs, then leaving with it
    seen.clear()
    with pytest.raises(RuntimeError), claimed(tmp_path / "failed", Recorded(rank, seen)):
        raise RuntimeError("CUDA error")
    assert seen == ["close"]  # no rank waits on one that failed: torchrun stops the others
