"""Frames leave the render loop here: a pool of threads stores them, one thread keeps their order.

The render loop hands over a batch and goes on with the next one, so PNG encoding and MP4 muxing
overlap the GPU's work. Encoding a PNG takes one core for tens of milliseconds (zlib releases the
GIL meanwhile), so `encode` (the store's put: encode, hash, rename) runs on a few threads at once,
each frame on one of them; one thread waits for each batch's host copy, hands its frames to the
pool, and calls `write` for each frame in order once it is encoded (produce: the progress bar and, for a
full walk in one process, the MP4, the running storm map and the platform files, through `Tee`).
The queue of batches and the frames in the pool are bounded (memory stays flat), and an error on
any thread stops the render loop at its next batch with that same error.
"""

import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# encoder threads; more than the cores only queue up. Set lower to leave cores to something else (benchmarks do)
THREADS = min(4, os.cpu_count() or 1)


class FrameWriter:
    """Calls `encode(item, image [H, W, 3] uint8)` for every frame put, on `threads` threads at once (default
    THREADS), then `write(item, image)` on one thread in the order put, each only once its frame's `encode`
    returned; an item is whatever the caller gave with the frame (produce: its store key and flags, or None).

    At most 2 x threads frames are between the start of their `encode` and the end of their `write`."""

    def __init__(self, write: Callable[[object, np.ndarray], None], depth: int = 2,
                 encode: Callable[[object, np.ndarray], None] = lambda item, image: None, threads: int | None = None):
        self._write, self._encode = write, encode
        threads = threads or THREADS
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="morph-frame-encoder")
        self._in_flight = 2 * threads  # enough to keep every encoder busy while the order thread waits for one
        self._failed = threading.Event()  # set by the encoder that failed, so the others start no new frame
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="morph-frame-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        pending: deque = deque()  # (item, image, its encode's future), in the order put
        while (item := self._queue.get()) is not None:
            if self._error is not None:
                continue  # keep draining after a failure, so that put() can never block for good
            items, copy = item
            try:
                for each, image in zip(items, copy.wait(), strict=True):
                    while len(pending) >= self._in_flight:
                        self._written(*pending.popleft())
                    pending.append((each, image, self._pool.submit(self._encoded, each, image)))
            except BaseException as e:  # handed to the render loop, which raises it
                self._fail(e, pending)
        try:
            while pending:
                self._written(*pending.popleft())
        except BaseException as e:
            self._fail(e, pending)
        self._pool.shutdown(wait=True)  # no encoder still writes once close() returns

    def _encoded(self, item, image: np.ndarray) -> bool:
        """Encode one frame on a pool thread; False when an earlier frame failed (the run stops: not encoded).
        The pool starts frames in the order put, so a frame skipped here comes after the one that failed."""
        if self._failed.is_set():
            return False
        try:
            self._encode(item, image)
        except BaseException:
            self._failed.set()
            raise
        return True

    def _written(self, item, image: np.ndarray, future) -> None:
        if future.result():  # raises the encoder's error
            self._write(item, image)

    def _fail(self, error: BaseException, pending: deque) -> None:
        self._error = self._error or error
        self._failed.set()
        for *_, future in pending:
            future.cancel()  # those not started yet; the running ones finish (their writes are atomic)
        pending.clear()

    def put(self, items: list, copy) -> None:
        """Queue a batch: what `write` gets with each frame, and a handle whose wait() gives the images [B, H, W, 3]."""
        self._raise_if_failed()
        self._queue.put((items, copy))

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Write everything queued, stop the threads, and raise the first error one of them had."""
        self._queue.put(None)
        self._thread.join()
        self._raise_if_failed()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:  # the render loop failed: keep the frames already rendered, report the loop's own error
            self._queue.put(None)
            self._thread.join()


class Tee:
    """Hands each frame written to every one of `sinks` (each with write(image [H, W, 3] uint8)), in order: the MP4
    and what is measured or encoded as the frames arrive (the storm map's distances, the platform files)."""

    def __init__(self, *sinks):
        self.sinks = sinks

    def write(self, image: np.ndarray) -> None:
        for sink in self.sinks:
            sink.write(image)
