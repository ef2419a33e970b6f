"""The studio's renders: one background worker takes the queued jobs (at most `capacity` wait) and runs each
through the job runner, as `morph run` would. A job's state lives in its output folder (studio.json beside the
manifest), so a finished, failed or cancelled job is still there after a page reload or a restart of the studio."""

import json
import queue
import threading
import time
from contextlib import contextmanager
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

    def end(self, save: bool = True) -> None:
        """The job has ended (done, failed or cancelled): its state saved (unless `save` is false), whoever waits on
        it told."""
        self.ended = time.time()
        if save:
            self.save()
        self.finished.set()

    def save(self) -> None:
        """studio.json: the status without its output, which is the folder the file lies in (saved_jobs reads it so),
        so that a root moved or renamed still reads: no path in it goes stale."""
        with self.saving:
            self.output.mkdir(parents=True, exist_ok=True)
            text = json.dumps({k: v for k, v in self.status().items() if k != "output"}, indent=1)
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
        self._queue: queue.Queue = queue.Queue()  # a job cancelled while queued stays in it, ended: the worker skips it
        self._jobs: dict[str, RenderJob] = {}  # by output folder
        self._lock = threading.Lock()
        self._device = threading.Lock()  # held while a job renders: see between_renders
        threading.Thread(target=self._work, name="morph-studio-worker", daemon=True).start()

    def submit(self, config: JobConfig) -> RenderJob:
        """Queue a render of `config`; refused (MorphError) while the same output is queued or rendering, or when
        `capacity` jobs wait."""
        with self._lock:
            key = str(config.output_dir)
            if key in self._jobs and self._jobs[key].state in ACTIVE:
                raise MorphError(f"{config.name}: already {self._jobs[key].state} ({key}); wait for it or cancel it")
            if sum(job.state == "queued" for job in self._jobs.values()) >= self.capacity:
                raise MorphError(f"the render queue is full ({self.capacity} jobs waiting); wait for one to finish "
                                 "or cancel one")
            job = RenderJob(config)
            self._queue.put(job)
            self._jobs[key] = job
        job.save()
        return job

    def jobs(self) -> list[RenderJob]:
        """The jobs submitted since the studio started (the latest for each output)."""
        return list(self._jobs.values())

    def cancel(self, output: Path | str) -> bool:
        """Ask the job rendering into `output` to stop; a queued one ends at once, freeing its place in the queue and
        its output for the next render. False if none is active."""
        with self._lock:
            job = self._jobs.get(str(output))
            if job is None or job.state not in ACTIVE:
                return False
            job.cancel.set()
            if job.state == "queued":  # under the lock: the worker takes a job only while it is still queued, and a Render of the
                # same output saves its queued state only after this one's cancelled state
                job.state, job.error = "cancelled", f"{job.config.name}: cancelled before it started"
                job.end()
        return True

    def stop(self, timeout: float = 60) -> None:
        """Cancel every job still queued or rendering, and wait (up to `timeout` s) for the one rendering to end."""
        active = [job for job in list(self._jobs.values()) if job.state in ACTIVE]
        for job in active:
            self.cancel(job.output)
        for job in active:
            job.finished.wait(timeout)

    @contextmanager
    def between_renders(self, what: str):
        """Let `what` (the slider's frame) use the device while no job is queued or rendering, and refuse it at once
        (MorphError) otherwise: nothing loads a second model onto the device beside a render's. A job submitted
        meanwhile starts once this ends."""
        if not self._device.acquire(blocking=False):
            raise self._rendering(what)
        try:
            if any(job.state in ACTIVE for job in self.jobs()):
                raise self._rendering(what)
            yield
        finally:
            self._device.release()

    def _rendering(self, what: str) -> MorphError:
        names = [job.config.name for job in self.jobs() if job.state in ACTIVE]
        return MorphError(f"{what}: a render is queued or running ({', '.join(names) or 'a job'}), and nothing "
                          "loads a second model onto the device beside it; ask again once it has ended")

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            with self._lock:
                if job.state != "queued":
                    continue  # cancelled while it waited: it has ended already
                job.state, job.started = "running", time.time()
            job.save()
            try:
                with self._device:
                    job.manifest = self._run(job.config, quiet=True, progress=Progress(job))
                job.state = "done"
            except Cancelled as e:
                job.state, job.error = "cancelled", str(e)
            except MorphError as e:
                job.state, job.error = "failed", str(e)
            except Exception as e:  # a crash shows on the page; the worker goes on with the next job
                job.state, job.error = "failed", f"{type(e).__name__}: {e}"
            with self._lock:  # a Render of its output, once it ended, may have queued a job: studio.json is that one's
                job.end(save=self._jobs.get(str(job.output)) is job)


def saved_jobs(outputs: Path, worker: Worker) -> list[dict]:
    """Every job the studio has rendered under `outputs` (its folder or one below it), newest first: the worker's own
    state where it has the job, else its studio.json (a job left queued or running by a studio that stopped reads
    as interrupted). Frame folders are not walked: the page asks this every second."""
    found = {str(job.output): job.status() for job in worker.jobs()}
    for path in [*outputs.glob(f"*/{STATE_FILE}"), *outputs.glob(f"*/*/{STATE_FILE}")]:
        if str(path.parent) in found:
            continue
        try:
            status = {**json.loads(path.read_text()), "output": str(path.parent)}  # an older studio's: absolute
        except (OSError, ValueError, TypeError):
            continue
        if status.get("state") in ACTIVE:
            status = {**status, "state": "interrupted", "error": "the studio stopped before it finished; render it "
                                                                 "again to go on from there"}
        found[str(path.parent)] = status
    return sorted(found.values(), key=lambda s: s.get("submitted") or 0, reverse=True)
