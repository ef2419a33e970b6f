"""The background frame writer: in order, overlapped with rendering, and failures that stop the run cleanly."""

import errno
import hashlib
import threading

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

import morph.media.video
import morph.render.store
import morph.render.writer
from morph.config.yaml_file import load_config
from morph.job import prepare_job, run_job
from morph.media.video import VideoWriter, read_png, write_png
from morph.render.store import FrameStore
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
    monkeypatch.setattr(morph.render.writer, "THREADS", 2)
    with pytest.raises(OSError, match="No space left"):
        run_job(load_config(write_config(frames=12, batch_size=2)), quiet=True)
    # the writer stopped at its first failure: no encoder thread started a frame after it (the other one may have
    # been encoding already)
    assert 1 <= len(calls) <= 2


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("threads", [1, 3])
def test_overlapped_writing_gives_the_same_pngs_and_video_as_writing_in_the_render_loop(write_config, tmp_path,
                                                                                         monkeypatch, threads):
    monkeypatch.setattr(morph.render.writer, "THREADS", threads)
    config = load_config(write_config(frames=7, batch_size=3))
    run_job(config, quiet=True)
    # the same frames written one by one in the render loop, as morph did before the writer thread
    plain = tmp_path / "plain"
    plain.mkdir()
    job = prepare_job(config.model_copy(update={"output": str(plain)}))
    rendered = []
    with VideoWriter(plain / "plain.mp4", 64, 64, 20) as video:
        for i, image, _ in job.frames(list(range(7))):
            write_png(plain / f"{i:05d}.png", image)
            video.write(image)
            rendered.append(image)
    frames = config.output_dir / "frames"
    assert [_sha(frames / f"{i:05d}.png") for i in range(7)] == [_sha(plain / f"{i:05d}.png") for i in range(7)]
    ours, theirs = (list(imageio_ffmpeg.read_frames(str(p)))[1:] for p in (config.output_dir / "job.mp4",
                                                                          plain / "plain.mp4"))
    assert len(ours) == 7 and ours == theirs
    # each store record holds the sha256 of the bytes its encoder thread wrote, and the pixels are the render's
    store = FrameStore(config.output_dir)
    for i, key in enumerate(store.plan()["keys"]):
        assert store.record(key)["sha256"] == _sha(store.path(key))[:32] and store.has(key, (64, 64, 3))
        assert np.array_equal(read_png(store.path(key)), rendered[i])


def test_frames_are_encoded_on_several_threads_at_once_and_written_in_order():
    # frame 0's encoder waits until frame 2 is encoded: with one thread at a time, this could never finish
    encoded, written, third = [], [], threading.Event()

    def encode(i, image):
        if i == 0:
            assert third.wait(timeout=30), "frame 2 was not encoded while frame 0 was"
        encoded.append(i)
        if i == 2:
            third.set()

    with FrameWriter(lambda i, image: written.append((i, int(image[0, 0, 0]))), encode=encode, threads=3) as writer:
        writer.put([0, 1], batch([10, 11]))
        writer.put([2, 3], batch([12, 13]))
    assert encoded.index(2) < encoded.index(0)
    assert written == [(0, 10), (1, 11), (2, 12), (3, 13)]


def test_a_frame_is_written_only_after_its_encode_and_frames_in_flight_stay_bounded():
    lock, encoding, written, most = threading.Lock(), set(), [], [0]

    def encode(i, image):
        with lock:
            encoding.add(i)
            most[0] = max(most[0], len(encoding))  # started, not yet written

    def write(i, image):
        with lock:
            assert i in encoding  # its encode has returned (it was added at its start, removed only here)
            encoding.discard(i)
        written.append(i)

    with FrameWriter(write, encode=encode, threads=2) as writer:
        for start in range(0, 60, 3):
            writer.put(list(range(start, start + 3)), batch([0, 0, 0]))
    assert written == list(range(60)) and most[0] <= 4  # 2 x threads


def test_an_encode_failure_stops_the_loop_with_that_error_and_later_frames_are_neither_encoded_nor_written():
    encoded, written = [], []

    def encode(i, image):
        encoded.append(i)
        if i == 3:
            raise OSError(errno.ENOSPC, "No space left on device", f"frames/{i:05d}.png")

    writer = FrameWriter(lambda i, image: written.append(i), depth=1, encode=encode, threads=1)
    with pytest.raises(OSError, match="No space left"):
        for start in range(0, 100, 2):  # far more batches than the queue holds
            writer.put([start, start + 1], batch([0, 0]))
        writer.close()
    assert written == [0, 1, 2] and max(encoded) == 3  # one thread: nothing started after the failure


@pytest.mark.parametrize("encoder", ["imagecodecs", "PIL"])
@pytest.mark.parametrize("shape", [(64, 64, 3), (37, 53, 3)])
def test_frames_are_compressed_at_zlib_fastest_level_and_decode_to_identical_pixels(tmp_path, shape, encoder,
                                                                                     monkeypatch):
    if encoder == "PIL":  # what an environment without imagecodecs encodes with
        monkeypatch.setattr(morph.media.video, "imagecodecs", None)
    else:
        pytest.importorskip("imagecodecs")
    rng = np.random.default_rng(0)
    smooth = np.clip(np.cumsum(rng.integers(-8, 9, shape), axis=1) + 128, 0, 255).astype(np.uint8)
    for image in (smooth, rng.integers(0, 256, shape, dtype=np.uint8)):  # a gradient, and noise (no run to find)
        write_png(tmp_path / "frame.png", image)
        data = (tmp_path / "frame.png").read_bytes()
        zlib_header = data[data.index(b"IDAT") + 4:][:2]
        assert zlib_header[1] >> 6 == 0  # FLEVEL 0: the fastest compression (the default level 6 writes 2)
        assert np.array_equal(read_png(tmp_path / "frame.png"), image)
        with Image.open(tmp_path / "frame.png") as decoded:  # and read by another decoder than ours
            assert decoded.mode == "RGB" and np.array_equal(np.asarray(decoded), image)
