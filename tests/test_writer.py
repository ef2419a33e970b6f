"""The background frame writer: in order, overlapped with rendering, and failures that stop the run cleanly."""

import errno
import hashlib
import threading

import imageio_ffmpeg
import numpy as np
import pytest

import morph.render.store
from morph.config.yaml_file import load_config
from morph.job import prepare_job, run_job
from morph.media.video import VideoWriter, write_png
from morph.render.writer import FrameWriter


class Ready:
    """A host copy that is already done."""

    def __init__(self, images):
        self.images = images

    def wait(self):
        return self.images


def batch(values):
    return Ready(np.array(values, dtype=np.uint8).reshape(-1, 1, 1, 1))


def test_frames_are_written_in_order():
    seen = []
    with FrameWriter(lambda i, image: seen.append((i, int(image[0, 0, 0])))) as writer:
        writer.put([0, 1], batch([10, 11]))
        writer.put([2], batch([12]))
    assert seen == [(0, 10), (1, 11), (2, 12)]


def test_put_returns_while_the_writer_is_still_busy():
    release, written = threading.Event(), []

    def slow_write(i, image):
        release.wait(timeout=30)
        written.append(i)

    writer = FrameWriter(slow_write, depth=2)
    writer.put([0], batch([0]))
    writer.put([1], batch([1]))  # the render loop is free to go on while frame 0 is still being written
    assert written == []
    release.set()
    writer.close()
    assert written == [0, 1]


def test_a_failing_write_stops_the_loop_with_that_error_and_does_not_hang():
    def failing(i, image):
        if i == 1:
            raise OSError(errno.ENOSPC, "No space left on device", f"frames/{i:05d}.png")

    writer = FrameWriter(failing, depth=1)
    with pytest.raises(OSError, match="No space left"):
        for start in range(0, 100, 2):  # far more batches than the queue holds
            writer.put([start, start + 1], batch([0, 0]))
        writer.close()


def test_a_write_failure_in_a_run_raises_from_run_job(write_config, monkeypatch):
    calls = []

    def full_disk(path, image):
        calls.append(path)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(morph.render.store, "write_png", full_disk)
    with pytest.raises(OSError, match="No space left"):
        run_job(load_config(write_config(frames=12, batch_size=2)), quiet=True)
    assert len(calls) == 1  # the writer stopped at its first failure


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_overlapped_writing_gives_the_same_pngs_and_video_as_writing_in_the_render_loop(write_config, tmp_path):
    config = load_config(write_config(frames=7, batch_size=3))
    run_job(config, quiet=True)
    # the same frames written one by one in the render loop, as morph did before the writer thread
    plain = tmp_path / "plain"
    plain.mkdir()
    job = prepare_job(config.model_copy(update={"output": str(plain)}))
    with VideoWriter(plain / "plain.mp4", 64, 64, 20) as video:
        for i, image, _ in job.frames(list(range(7))):
            write_png(plain / f"{i:05d}.png", image)
            video.write(image)
    frames = config.output_dir / "frames"
    assert [_sha(frames / f"{i:05d}.png") for i in range(7)] == [_sha(plain / f"{i:05d}.png") for i in range(7)]
    ours, theirs = (list(imageio_ffmpeg.read_frames(str(p)))[1:] for p in (config.output_dir / "job.mp4",
                                                                          plain / "plain.mp4"))
    assert len(ours) == 7 and ours == theirs
