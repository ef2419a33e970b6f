"""Frames leave the render loop here: one thread waits for each batch's host copy, then writes it out.

The render loop hands over a batch and goes on with the next one, so PNG encoding and MP4 muxing
overlap the GPU's work. The queue is bounded (memory stays flat), one thread keeps the frames in
order, and an error in the thread stops the render loop at its next batch with that same error.
"""

import queue
import threading
from collections.abc import Callable

import numpy as np


class FrameWriter:
    """Calls `write(item, image [H, W, 3] uint8)` for every frame put, in order, on a background thread; an item is
    whatever the caller gave with the frame (produce: its store key and flags, or None)."""

    def __init__(self, write: Callable[[object, np.ndarray], None], depth: int = 2):
        self._write = write
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="morph-frame-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is not None:
                continue  # keep draining after a failure, so that put() can never block for good
            items, copy = item
            try:
                for each, image in zip(items, copy.wait(), strict=True):
                    self._write(each, image)
            except BaseException as e:  # handed to the render loop, which raises it
                self._error = e

    def put(self, items: list, copy) -> None:
        """Queue a batch: what `write` gets with each frame, and a handle whose wait() gives the images [B, H, W, 3]."""
        self._raise_if_failed()
        self._queue.put((items, copy))

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Write everything queued, stop the thread, and raise the thread's error if it had one."""
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
