"""Seeing a walk before rendering it: a short, cheap walk of the same job (a dozen frames at reduced size and steps)
with its filmstrip and storm plot, and any single frame of the full walk on demand, through the job's frame store,
so a frame seen once comes back without rendering it again. Both keep the model they loaded for the next one
(ModelShelf)."""

import inspect
import threading

import numpy as np

from ..config.jobs import JobConfig, validate
from ..job import PreparedJob, prepare_job, run_job
from ..models.pipeline import LoadedModel, load_model
from ..render.produce import plan_frames, produce
from ..render.shard import Shard
from ..render.store import FrameStore, stat_signature
from .configs import BUILT_IN_MODELS

PREVIEW_FRAMES = 12
PREVIEW_SIDE = 256  # pixels: the longest side a preview renders at (built-in models keep their own, smaller size)
PREVIEW_STEP_SHARE = 4  # a quarter of the job's denoising steps ...
PREVIEW_MIN_STEPS = 4  # ... but no fewer than this (few-step models keep theirs)
PREVIEWS = ".preview"  # beside a job's output folder: one folder per job name, reused by the next preview


def preview_config(config: JobConfig) -> JobConfig:
    """The same job made cheap: a dozen uniformly spaced frames (walks and edits), the size and steps reduced, no
    music timing, no deliveries, no attribution renders; it writes beside the job's output, in .preview/<name>
    (outputs/.preview/<name> for a job written to outputs/<name>)."""
    raw = config.to_dict()
    steps = config.num_inference_steps
    raw["num_inference_steps"] = min(steps, max(PREVIEW_MIN_STEPS, steps // PREVIEW_STEP_SHARE))
    if config.model not in BUILT_IN_MODELS or config.height or config.width:
        height, width = config.height or PREVIEW_SIDE, config.width or PREVIEW_SIDE
        scale = min(1.0, PREVIEW_SIDE / max(height, width))
        raw["height"], raw["width"] = (max(64, round(side * scale / 8) * 8) for side in (height, width))
    if config.kind != "grid":
        raw["frames"] = max(PREVIEW_FRAMES, len(config.keyframe_sources()))
        raw.update(spacing="uniform", timing=None, video={})
    raw["analysis"] = {**raw["analysis"], "explain": False}
    raw.update(compile=False, output=str(config.output_dir.parent / PREVIEWS / config.name))
    return validate(raw, default_name=config.name)


def preview(config: JobConfig, load=load_model) -> dict:
    """Render the preview of `config` and return its manifest (analysis.filmstrip and analysis.plot: the pictures).
    `load`: pipeline.load_model, or a ModelShelf's."""
    return run_job(preview_config(config), quiet=True, load=load)


class ModelShelf:
    """The model the last preview or frame loaded, kept for the next one that loads the same: loading Stable
    Diffusion takes seconds, as long as its preview renders. Its users take turns (the page renders one thing at a
    time), and a job with compile: true loads its own, since compiling changes the pipeline."""

    def __init__(self):
        self._key = self._loaded = None

    def load(self, *args, **kwargs) -> LoadedModel:
        """pipeline.load_model(*args, **kwargs), or the model it loaded last, when the arguments and the files they
        name (model, VAE, embeddings, LoRAs) are unchanged."""
        named = inspect.signature(load_model).bind(*args, **kwargs).arguments
        files = [named["model"], named.get("vae"), named.get("configs_from"),
                 *[e if isinstance(e, str) else e["path"] for e in named.get("embeddings") or []],
                 *[lora.file for lora in named.get("loras") or []]]
        key = repr((sorted(named.items()), [stat_signature(file) for file in files if file]))
        if key != self._key:
            self.release()  # the last model goes before the next one loads
            self._loaded, self._key = load_model(*args, **kwargs), key
        return self._loaded

    def release(self) -> None:
        """Let the model go, e.g. before a full render needs the device's memory."""
        self._key = self._loaded = None


class FrameAt:
    """Single frames of a job's full walk, rendered on demand through its frame store. The last job prepared stays
    prepared, so moving along the same walk renders only the frame asked for."""

    def __init__(self, load=load_model):
        self._lock = threading.Lock()
        self._load = load  # as preview's
        self._job: PreparedJob | None = None
        self._hash = None

    def release(self) -> None:
        """Let the prepared job (its model) go, e.g. before a full render needs the device's memory."""
        with self._lock:
            self._job = self._hash = None

    def frame(self, config: JobConfig, index: int) -> np.ndarray:
        """Frame `index` of `config`'s walk, uint8 [H, W, 3]: from the store if it is there, else rendered into it."""
        with self._lock:
            if self._job is None or self._hash != (config.pixel_hash(), config.output):
                self._job = None  # the previous job's model goes before the next one loads
                self._job = prepare_job(config, load=load_model if config.compile else self._load)
                self._hash = config.pixel_hash(), config.output
            store = FrameStore(config.output_dir)
            # a frame's key holds the size of the batch it renders in: the whole aligned batch renders and is kept,
            # so that the full render finds these frames under the same keys
            batch = self._job.renderer.batch_size
            start = index - index % batch
            plan = plan_frames(self._job, list(range(start, min(start + batch, len(self._job.path)))), store, False)
            produce(self._job, plan, store, Shard())
            return store.read(plan.keys[index])
