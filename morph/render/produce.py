"""From a prepared job to frames in the store: aligned batches, frames reused, the writer thread, the video.

Frame i always renders in batch i // batch_size (the last batch holds the rest), whether the run is
whole, resumed, a --frames selection or one rank's share: each frame's pixels are then the same
in all of them. A batch with any frame missing from the store is rendered whole (the batch size
moves pixels, the other frames' content does not) and only its missing frames are stored.
"""

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import MorphError
from .batch import FLAGS, HostCopy
from .store import FrameStore, OutputLock, content_digest, digest, frame_identity
from .writer import FrameWriter


# the render code's own version, in every key: bumped when morph's code moves pixels that no setting in the key names
# (2: SDXL's float32 decode is no longer cast back to float16, and walking guidance re-weights in float32)
RENDER_CODE = 2


def render_identity(job) -> dict:
    """Everything shared by all frames that decides their pixels: model, scheduler, settings, environment.
    Made once per prepared job (job.identity): hashing local weights reads every byte of them, and spacing: even
    plans a batch of samples at a time."""
    if job.identity is None:
        job.identity = _render_identity(job)
    return job.identity


def _render_identity(job) -> dict:
    pipe, loaded, config = job.loaded.pipe, job.loaded, job.config
    weights = content_digest(loaded.location, loaded.revision)
    # a job without LoRAs keeps the keys it had before LoRAs existed
    loras = {"loras": [{"name": lora.name, "weights": content_digest(lora.file, None), "scale": scale} for lora, scale
                       in zip(loaded.loras.loras, loaded.loras.defaults.tolist())]} if loaded.loras else {}
    scheduler_config = {k: v for k, v in pipe.scheduler.config.items() if not k.startswith("_")}  # no bookkeeping
    return {"code": RENDER_CODE, "model": loaded.model, "location": loaded.location, "weights": weights,
            "scheduler": type(pipe.scheduler).__name__, "scheduler_config": scheduler_config,
            "num_inference_steps": config.num_inference_steps, "guidance_scale": config.guidance_scale,
            "height": job.settings.height, "width": job.settings.width, "seed": config.seed,
            "negative_prompt": config.negative_prompt, "dtype": str(pipe.unet.dtype), "device": pipe.device.type,
            "compiled": config.compile, "safety_checker": config.safety_checker,
            "vae": config.vae and content_digest(config.vae, config.vae),
            "embeddings": [content_digest(path, None) for path in config.embedding_paths()],
            # on the CPU the thread count changes the summation order, and so the last bit of a pixel
            "cpu_threads": torch.get_num_threads() if pipe.device.type == "cpu" else None,
            # on a GPU the kernels torch picks depend on the card and the libraries: another card or version moves
            # pixels by up to the cross-device tolerance
            "gpu": _gpu(pipe.device) if pipe.device.type == "cuda" else None, **loras, **_negative_read(config),
            **{mechanism.name: mechanism.identity() for mechanism in job.renderer.mechanisms}}


def _negative_read(config) -> dict:
    """Beside define:, the texts a top-level negative names: the same words can name other definitions. A job without
    define: keeps the key it had (its negative is its own text)."""
    if not (config.define and config.negative_prompt):
        return {}
    return {"negative_terms": config.negative_terms(config.negative_prompt, "negative_prompt")}


def _gpu(device) -> dict:
    import diffusers
    import transformers

    return {"name": torch.cuda.get_device_name(device), "cuda": torch.version.cuda, "torch": torch.__version__,
            "diffusers": diffusers.__version__, "transformers": transformers.__version__, "tf32": _tf32()}


def _tf32() -> dict:
    """Whether float32 matmuls and convolutions may round to TF32 on the GPU, which moves float32 pixels (and those
    of SDXL's float32 decode)."""
    try:
        return {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}
    except RuntimeError:  # torch >= 2.9 set per operator (fp32_precision) will not answer for all at once
        return {"matmul": torch.backends.cuda.matmul.fp32_precision, "conv": torch.backends.cudnn.conv.fp32_precision,
                "rnn": torch.backends.cudnn.rnn.fp32_precision}


def _settings(config) -> dict:
    """What decides the memory a batch takes (not the prompts): batch_size: auto keeps its size while these hold."""
    return {"model": config.model, "vae": config.vae, "height": config.height, "width": config.width,
            "device": config.device, "dtype": config.dtype, "compile": config.compile,
            "guidance": config.classifier_free_guidance(), "scheduler": config.to_dict()["scheduler"],
            **({"loras": config.lora_names()} if config.loras else {}),
            **({"hires": [config.hires.scale, config.hires.upscale]} if config.hires else {})}


def resumed_batch_size(config, previous: dict | None):
    """batch_size: auto takes the size the run being resumed chose (free GPU memory may differ now, and
    another batch size is another key: every frame would render again)."""
    if config.batch_size == "auto" and previous and previous.get("settings") == _settings(config):
        return config.model_copy(update={"batch_size": previous["batch_size"]})
    return config


def plan_record(job, plan: "FramePlan") -> dict:
    """What the store keeps about the job started in it: for `morph status` and for resuming."""
    return {"name": job.config.name, "keys": plan.keys, "sizes": plan.sizes, "shape": plan.shape,
            "batch_size": plan.batch_size, "settings": _settings(job.config)}


def aligned_groups(count: int, batch_size: int) -> list[list[int]]:
    """The batches of a job of `count` frames: [0 .. B-1], [B .. 2B-1], ..., the rest."""
    return [list(range(start, min(start + batch_size, count))) for start in range(0, count, batch_size)]


@dataclass
class FramePlan:
    render: dict  # render_identity(job)
    identities: list[dict]  # every frame's conditioning (store.frame_identity)
    shape: tuple[int, int, int]
    batch_size: int  # the aligned batches' size
    keys: list[str] = field(default_factory=list)  # every frame's store key, at the batch size it renders in
    sizes: list[int] = field(default_factory=list)  # the size of the batch each frame renders (or rendered) in
    groups: list[list[int]] = field(default_factory=list)  # the aligned batches holding frames of the selection
    missing: set[int] = field(default_factory=set)  # selected frames not in the store (all of them, with fresh)
    resized: dict[int, int] = field(default_factory=dict)  # frames this process rendered in a smaller batch

    def key(self, i: int, batch_size: int) -> str:
        """Frame i's key when rendered in a batch of `batch_size` (after an out-of-memory back-off, a smaller one)."""
        return digest({"render": self.render, "batch": batch_size, "frame": self.identities[i]})

    def resize(self, sizes: dict[int, int]) -> None:
        """Frames rendered in other batch sizes than planned (an out-of-memory back-off, here or on another rank)."""
        for i, size in sizes.items():
            self.sizes[i], self.keys[i] = size, self.key(i, size)


def _identified(job) -> FramePlan:
    """A plan with what identifies the job's frames (render and frame identities, shape) and nothing chosen yet."""
    return FramePlan(render_identity(job), [frame_identity(job.config, job.path.describe(i))
                                            for i in range(len(job.path))], (*job.renderer.frame_size(), 3),
                     job.renderer.batch_size)


def plan_frames(job, selection: list[int], store: FrameStore, fresh: bool, previous: dict | None = None) -> FramePlan:
    """Which aligned batches to look at, and which of their frames the store lacks. A frame that the `previous`
    plan (the store's, of the run before) rendered in a smaller batch than this plan's, after an out-of-memory
    back-off, is found under that size's key rather than rendered again."""
    count = len(job.path)
    plan = _identified(job)
    groups = aligned_groups(count, job.renderer.batch_size)
    plan.sizes = _sizes(job, groups)
    plan.keys = [plan.key(i, size) for i, size in enumerate(plan.sizes)]
    wanted = set(selection)
    plan.groups = [group for group in groups if wanted.intersection(group)]
    plan.missing = {i for i in selection if fresh or not store.has(plan.keys[i], plan.shape)}
    earlier = (previous or {}).get("sizes") or []
    if len(earlier) == count and not fresh:
        found = {i: earlier[i] for i in plan.missing
                 if earlier[i] < plan.sizes[i] and store.has(plan.key(i, earlier[i]), plan.shape)}
        plan.resize(found)
        plan.missing -= set(found)
    return plan


def _sizes(job, groups: list[list[int]]) -> list[int]:
    """The size of the batch each frame of the aligned `groups` goes through the UNet in."""
    return [job.renderer.rendered_size(len(group)) for group in groups for _ in group]


def stored_plan(job, keys: list[str]) -> FramePlan:
    """The plan of frames that are all in the store already under `keys` (spacing: even picks them among its
    samples): nothing to render, every batch there to write the video from."""
    plan = _identified(job)
    plan.keys, plan.groups = list(keys), aligned_groups(len(keys), job.renderer.batch_size)
    plan.sizes = _sizes(job, plan.groups)
    return plan


class StoredFrames:
    """A batch's frames as the store holds them, read by the writer thread when their turn in the video comes:
    `keys` [B], each row's store key, or None for a row `rendered` (a HostCopy) gives."""

    def __init__(self, store: FrameStore, keys: list[str | None], rendered: HostCopy | None = None):
        self.store, self.keys, self.rendered = store, keys, rendered

    def wait(self) -> np.ndarray:
        images = self.rendered.wait() if self.rendered else None
        return np.stack([images[j] if key is None else self.store.read(key) for j, key in enumerate(self.keys)])


@contextmanager
def claimed(output: Path, shard):
    """Hold the output folder's lock for the whole run; the leader takes it, every rank learns the outcome.
    At the end every rank leaves the process group: after a run that went well, all at once."""
    lock, refusal = OutputLock(output), None
    if shard.leader:
        try:
            lock.__enter__()
            FrameStore(output).sweep()  # the other ranks wait for the leader: none writes yet
        except MorphError as e:
            refusal = str(e)
    refusal = shard.from_leader(refusal)
    if refusal:
        raise MorphError(refusal)
    try:
        yield
        # a rank done with its share leaves the group only with the leader: one that left while the leader was
        # still writing the outputs aborted in about 1 run of 12 ("terminate called without an active exception",
        # and torchrun then killed the leader). A rank that failed leaves at once; torchrun stops the others
        shard.settle()
    finally:
        lock.__exit__(None, None, None)
        shard.close()


def produce(job, plan: FramePlan, store: FrameStore, shard, video=None, on_frame=lambda: None) -> int:
    """Render this rank's batches that miss frames; store the new frames with their flags; stream the video when
    one is asked.

    Returns how many frames were rendered and stored; `on_frame()` is called after each. `video`
    (single process only) receives every frame of the plan in order, stored ones read back. Frames
    rendered in a smaller batch than planned (an out-of-memory back-off) are in `plan.resized`.
    """
    rendered, started = 0, time.perf_counter()

    def encode(item, image):  # on the writer's encoder threads, several frames at once
        if item is not None:  # newly rendered (None: read back from the store for the video)
            key, flags = item
            store.put(key, image, flags)

    def write(item, image):  # in order, once the frame is stored
        if item is not None:
            on_frame()
        if video is not None:
            video.write(image)

    with FrameWriter(write, encode=encode) as writer:
        for number, group in enumerate(plan.groups):
            if not plan.missing.intersection(group) or not shard.owns(number):
                if video is not None:
                    writer.put([None] * len(group), StoredFrames(store, [plan.keys[i] for i in group]))
                continue
            for chunk, batch in job.renderer.batches([group]):
                size = job.renderer.rendered_size(len(chunk))
                new = [i in plan.missing for i in chunk]
                resized = {i: size for i, n in zip(chunk, new) if n and size != plan.sizes[i]}
                plan.resize(resized)
                plan.resized.update(resized)
                images = HostCopy(batch.images)
                if video is not None and not all(new):  # a reused row as stored (what `morph analyze` reads)
                    images = StoredFrames(store, [None if n else plan.keys[i] for i, n in zip(chunk, new)], images)
                writer.put([(plan.keys[i], batch.flags(j)) if n else None for j, (i, n) in enumerate(zip(chunk, new))],
                           images)
                rendered += sum(new)
                # with compile: true, the first batch carries the compilation
                job.timings.setdefault("first_batch_s", time.perf_counter() - started)
    return rendered


def missing_after(plan: FramePlan, store: FrameStore, selection: list[int]) -> list[int]:
    """Frames of the selection still not in the store (after every rank has finished)."""
    return [i for i in selection if not store.has(plan.keys[i], plan.shape)]


def flagged(plan: FramePlan, store: FrameStore, selection: list[int]) -> dict[str, list[int]]:
    """Which frames of the selection the store's records flag, by flag (render.FLAGS), whichever
    run or rank rendered them."""
    found = {flag: [] for flag in FLAGS}
    for i in selection:
        for flag in store.flags(plan.keys[i]):
            found[flag].append(i)
    return found


def publish(plan: FramePlan, store: FrameStore, selection: list[int], folder: Path, name_of, full: bool) -> None:
    """Put the selection's frames under their final names (copies of the stored ones); a full run also removes
    leftovers."""
    folder.mkdir(parents=True, exist_ok=True)
    names = {name_of(i): plan.keys[i] for i in selection}
    for name, key in names.items():
        store.publish(key, folder / name)
    if full:
        for path in folder.glob("*.png"):
            if path.name not in names:
                path.unlink()


def video_from_store(plan: FramePlan, store: FrameStore, video) -> None:
    """The video of a sharded run, written by the leader once every rank is done."""
    for key in plan.keys:
        video.write(store.read(key))

