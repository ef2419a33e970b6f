"""The studio's renders: one background worker takes jobs from a bounded queue and runs each through the job runner,
as `morph run` would. A job's state lives in its output folder (studio.json beside the manifest), so a finished,
failed or cancelled job is still there after a page reload or a restart of the studio."""

import json
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config.jobs import JobConfig
from ..errors import MorphError
from ..files import write_atomic
from ..job import run_job

STATE_FILE = "studio.json"
QUEUE_SIZE = 8
ACTIVE = ("queued", "running")


class Cancelled(MorphError):
    """The user cancelled the render; the frames it stored stay, so rendering it again picks up where it stopped."""


@dataclass
class RenderJob:
    config: JobConfig
    state: str = "queued"  # queued, running, done, failed, cancelled
    done: int = 0  # frames rendered so far
    total: int | None = None  # frames to render (those the frame store lacks)
    error: str | None = None
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    manifest: dict | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    saving: threading.Lock = field(default_factory=threading.Lock)  # the page's thread and the worker both save

    @property
    def output(self) -> Path:
        return self.config.output_dir

    def status(self) -> dict:
        """What the page shows and studio.json holds: state, progress, rate, time left, error."""
        elapsed = (self.ended or time.time()) - self.started if self.started else 0.0
        rate = self.done / elapsed if self.done and elapsed > 0 else None
        left = (self.total - self.done) / rate if rate and self.total and self.state == "running" else None
        return {"name": self.config.name, "output": str(self.output), "state": self.state, "done": self.done,
                "total": self.total, "frames_per_s": round(rate, 3) if rate else None,
                "seconds_left": round(left, 1) if left is not None else None, "error": self.error,
                "submitted": self.submitted, "started": self.started, "ended": self.ended}

    def save(self) -> None:
        with self.saving:
            self.output.mkdir(parents=True, exist_ok=True)
            text = json.dumps(self.status(), indent=1)
            write_atomic(self.output / STATE_FILE, lambda path: path.write_text(text))


class Progress:
    """What run_job reports frames to in place of its progress bar: counts them into the job, and stops the run at
    the next frame once the job is cancelled."""

    def __init__(self, job: RenderJob):
        self.job, self.total = job, None

    def update(self, n: int = 1) -> None:
        self.job.done += n
        self.job.total = self.total
        if self.job.cancel.is_set():
            raise Cancelled(f"{self.job.config.name}: cancelled after {self.job.done} of {self.total} frames; "
                            "render it again to go on from there")

    def refresh(self) -> None:
        self.job.total = self.total

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class Worker:
    """One background thread rendering the queued jobs one at a time; at most `capacity` wait."""

    def __init__(self, capacity: int = QUEUE_SIZE, run=run_job):
        self.capacity, self._run = capacity, run
        self._queue: queue.Queue = queue.Queue(maxsize=capacity)
        self._jobs: dict[str, RenderJob] = {}  # by output folder
        self._lock = threading.Lock()
        threading.Thread(target=self._work, name="morph-studio-worker", daemon=True).start()

    def submit(self, config: JobConfig) -> RenderJob:
        """Queue a render of `config`; refused (MorphError) while the same output is queued or rendering, or when
        the queue is full."""
        with self._lock:
            key = str(config.output_dir)
            if key in self._jobs and self._jobs[key].state in ACTIVE:
                raise MorphError(f"{config.name}: already {self._jobs[key].state} ({key}); wait for it or cancel it")
            job = RenderJob(config)
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                raise MorphError(f"the render queue is full ({self.capacity} jobs waiting); wait for one to finish "
                                 "or cancel one") from None
            self._jobs[key] = job
        job.save()
        return job

    def jobs(self) -> list[RenderJob]:
        """The jobs submitted since the studio started (the latest for each output)."""
        return list(self._jobs.values())

    def cancel(self, output: Path | str) -> bool:
        """Ask the job rendering into `output` to stop (a queued one never starts); False if none is active."""
        job = self._jobs.get(str(output))
        if job is None or job.state not in ACTIVE:
            return False
        job.cancel.set()
        return True

    def stop(self, timeout: float = 60) -> None:
        """Cancel every job still queued or rendering, and wait (up to `timeout` s) for the one rendering to end."""
        active = [job for job in list(self._jobs.values()) if job.state in ACTIVE]
        for job in active:
            job.cancel.set()
        for job in active:
            job.finished.wait(timeout)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if not job.cancel.is_set():
                job.state, job.started = "running", time.time()
                job.save()
                try:
                    job.manifest = self._run(job.config, quiet=True, progress=Progress(job))
                    job.state = "done"
                except Cancelled as e:
                    job.state, job.error = "cancelled", str(e)
                except MorphError as e:
                    job.state, job.error = "failed", str(e)
                except Exception as e:  # a crash shows on the page; the worker goes on with the next job
                    job.state, job.error = "failed", f"{type(e).__name__}: {e}"
            else:
                job.state, job.error = "cancelled", f"{job.config.name}: cancelled before it started"
            job.ended = time.time()
            job.save()
            job.finished.set()


def saved_jobs(outputs: Path, worker: Worker) -> list[dict]:
    """Every job the studio has rendered under `outputs` (its folder or one below it), newest first: the worker's own
    state where it has the job, else its studio.json (a job left queued or running by a studio that stopped reads
    as interrupted). Frame folders are not walked: the page asks this every second."""
    found = {str(job.output): job.status() for job in worker.jobs()}
    for path in [*outputs.glob(f"*/{STATE_FILE}"), *outputs.glob(f"*/*/{STATE_FILE}")]:
        if str(path.parent) in found:
            continue
        try:
            status = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if status.get("state") in ACTIVE:
            status = {**status, "state": "interrupted", "error": "the studio stopped before it finished; render it "
                                                                 "again to go on from there"}
        found[str(path.parent)] = status
    return sorted(found.values(), key=lambda s: s.get("submitted") or 0, reverse=True)
