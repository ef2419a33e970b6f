"""The job runner: config -> prompt tensors -> path of conditionings -> frames -> video and manifest.

The only module that knows every stage; `run_job` reads as the numbered script it is.
"""

import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from tqdm import tqdm

from .models.acceleration import auto_batch_size, channels_last, compile_pipeline
from .analysis.attribution import explain_storms
from .analysis.storm_map import RunningStorms, distance_function, keyframes_of, storm_map, uniform_curve
from .media.audio import timed_schedule
from .prompts.conditioning import build_path, negative_tensor, refuse_non_finite, walk_along
from .config.frame_list import parse_frame_spec
from .config.jobs import JobConfig
from .output.delivery import LiveDeliveries, check_platforms, deliver_all
from .prompts.encode import prompt_encoder
from .errors import MorphError
from .files import Staging, check_output, removed_if_refused, write_atomic
from .output.manifest import manifest, write_manifest
from .prompts.path import GridPath, WalkPath
from .models.controlnet_files import read_controlnets
from .models.ip_adapter_files import ip_adapter_files
from .models.lora_files import read_loras
from .models.model_files import check_model_files
from .models.pipeline import LoadedModel, load_model, quiet_libraries, resolve_device, resolve_dtype
from .models.scheduler import scheduler_class, try_scheduler
from .render.produce import (claimed, flagged, missing_after, plan_frames, plan_record, produce, publish,
                      resumed_batch_size, video_from_store)
from .output.report import write_report
from .analysis.respace import even_spacing
from .prompts.latent import shared_latent
from .render.batch import BatchRenderer, HostCopy, RenderSettings
from .render.hires import keep_base_frames
from .render.mechanisms import unet_mechanisms
from .render.shard import Shard, this_process
from .render.store import FrameStore
from .render.writer import Tee
from .media.video import VideoWriter


@dataclass
class PreparedJob:
    """A job ready to render any of its frames: model loaded, prompts encoded, path built, batch size known."""

    config: JobConfig
    loaded: LoadedModel
    path: WalkPath | GridPath
    settings: RenderSettings
    renderer: BatchRenderer
    timings: dict = field(default_factory=dict)
    music: tuple | None = None  # timing: (segment [F], t [F], onset strength per step [F - 1])
    identity: dict | None = None  # produce.render_identity, once made

    def use_path(self, path: WalkPath | GridPath) -> None:
        """Render frames of `path` from now on (spacing: even places its samples and frames this way)."""
        self.path, self.renderer.conditionings_for, self.renderer.inputs_for = path, path.conditionings, \
            path.frame_inputs

    def frames(self, indices: list[int]):
        """Yield (index, uint8 image [H, W, 3] on the host, NSFW flag) for the chosen frames, batch_size at a time."""
        for chunk, batch in self.renderer.batches([indices]):
            yield from zip(chunk, HostCopy(batch.images).wait(), batch.nsfw)


class CheckedJob(NamedTuple):
    """What step 0 found: the frames to render (all of them: `full`), the job's kind and spacing, its output folder
    and the folder of its frames (or grid cells) in it, and this process's share of the work."""

    selection: list[int]
    full: bool
    grid: bool
    even: bool
    out: Path
    folder: Path
    shard: Shard


def check_job(config: JobConfig, frames: str | None = None) -> CheckedJob:
    """Step 0 of a job, before any model loads or the output folder is made: the frame selection, the scheduler
    (its step limits), the files the config names (LoRAs too), the platform files' limits, the storm metric, the
    output folder and this process's shard. `morph run` and the studio's check line both refuse what it refuses."""
    count = config.frame_count()
    selection = parse_frame_spec(frames, count) if frames else list(range(count))
    full = len(selection) == count
    out, grid = config.output_dir, config.kind == "grid"
    folder = out / ("cells" if grid else "frames")
    scheduler, options = config.scheduler_choice()
    if scheduler:
        try_scheduler(scheduler_class(scheduler), options, config.num_inference_steps)
        if config.hires and config.hires.num_inference_steps:  # the second pass's own schedule too
            try_scheduler(scheduler_class(scheduler), options, config.hires.num_inference_steps,
                          "hires.num_inference_steps")
    check_model_files(config.model, config.vae, config.embedding_paths(), config.configs_from, config.allow_pickle)
    read_loras(config.lora_names(), config.lora_paths())
    read_controlnets(config)
    ip_adapter_files(config)
    if full and not grid:
        check_platforms(config, count)
        if count >= 3:
            distance_function(config.analysis.metric)  # lpips: its package and weights, before anything renders
    even = config.kind != "grid" and config.spacing.mode == "even"
    shard = this_process()
    if even and (not full or shard.world > 1):
        raise MorphError("spacing: even places every frame from renders of the whole walk, in one process; "
                         "drop --frames and torchrun, or use spacing: uniform")
    check_output(out, folder.name, ["manifest.json", "grid.png" if grid else f"{config.name}.mp4"], len(selection),
                 math.prod(config.frame_size()))
    return CheckedJob(selection, full, grid, even, out, folder, shard)


def prepare_job(config: JobConfig, verbose: bool = False, agree=lambda batch_size: batch_size,
                load=load_model) -> PreparedJob:
    """Steps 1-5 of a job: everything before the first frame is rendered. `agree(batch_size)`: the batch size every
    process uses (under torchrun, the leader's); `load`: pipeline.load_model, or what keeps a loaded model for the
    next job (the studio's previews)."""
    timings = {}
    # 1. Check inputs that need torch (devices) or decoding (music); the config itself was validated on load
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    timing = timed_schedule(config) if config.kind != "grid" and config.timing else None
    if not verbose:
        quiet_libraries()

    # 2. Load the model, in the memory layout that is fastest on its device
    started = time.perf_counter()
    scheduler, options = config.scheduler_choice()
    loaded = load(config.model, device, dtype, scheduler, config.safety_checker, config.vae,
                  [e if isinstance(e, str) else e.model_dump() for e in config.embeddings],
                  config.configs_from, config.allow_pickle, options,
                  read_loras(config.lora_names(), config.lora_paths()), [lora.scale for lora in config.loras])
    pipe = loaded.pipe
    channels_last(pipe)
    timings["load_s"] = time.perf_counter() - started

    # 3. Encode the prompts, each distinct text once (at each keyframe's LoRA strengths), into full [L, D] tensors
    started = time.perf_counter()
    encoder = prompt_encoder(pipe, loaded.loras)
    path = build_path(config, encoder, timing)
    negative = negative_tensor(encoder, config.negative_terms(config.negative_prompt, "negative_prompt"))
    refuse_non_finite(config, path, negative)
    timings["encode_s"] = time.perf_counter() - started

    # 4. One starting latent, shared by every frame; where keyframes set their own seed, negative_prompt,
    #    guidance_scale or LoRA strengths, those walk between them too
    height = config.height or pipe.unet.config.sample_size * pipe.vae_scale_factor
    width = config.width or pipe.unet.config.sample_size * pipe.vae_scale_factor
    settings = RenderSettings(height, width, config.num_inference_steps, config.guidance_scale, config.seed)
    latent = shared_latent(pipe, config.seed, height, width)
    if config.kind != "grid":  # walk_along adds only what the job's keyframes walk through
        walk_along(path, config, encoder, pipe, height, width)

    # 5. The batch size (auto: probe renders, decoded as the real ones are, before compiling so that they compile
    #    nothing; under torchrun every rank takes the leader's), then compile
    renderer = BatchRenderer(pipe, path.conditionings, negative, latent, settings, 1,
                             fixed_shape=config.compile, inputs_for=path.frame_inputs, loras=loaded.loras,
                             mechanisms=unet_mechanisms(config, loaded, path))
    batch_size = config.batch_size
    if batch_size == "auto":
        batch_size = auto_batch_size(device, renderer.probe, height, width)
    renderer.batch_size = agree(batch_size)
    if config.compile:
        compile_pipeline(pipe)
    return PreparedJob(config, loaded, path, settings, renderer, timings, music=timing)


def run_job(config: JobConfig, frames: str | None = None, quiet: bool = False, verbose: bool = False,
            fresh: bool = False, progress=None, load=load_model) -> dict:
    """Render a job to its output folder and return the manifest it wrote (rank 0's, under torchrun).

    Frames already in the output's frame store are reused (`fresh` renders them again).
    `frames` ('0,17,100-120') renders only those frames: their PNGs and the manifest, no video.
    `quiet`: no progress bar; `verbose`: the libraries' own warnings and loading bars too. `progress`: a context
    manager like tqdm's bar (total, update, refresh) that counts the frames rendered instead of a bar. `load`: as
    prepare_job's.
    """
    # 0. Before any model loads or the output folder is made: everything check_job refuses; then the lock
    checked = check_job(config, frames)
    selection, out, shard = checked.selection, checked.out, checked.shard
    quiet = quiet or not sys.stderr.isatty()
    store = FrameStore(out)
    # a run refused while loading (a checkpoint that is not one, music ffmpeg cannot read) leaves no folder behind
    with removed_if_refused(out), claimed(out, shard), \
            progress or tqdm(unit="frame", disable=quiet) as bar:
        started = time.perf_counter()
        previous = store.plan()
        job = prepare_job(resumed_batch_size(config, previous), verbose=verbose, agree=shard.from_leader,
                          load=load)
        keep_base_frames(job, store, fresh)  # a hires pass's base frames: raising its strength renders only its pass

        # 6. Plan: every frame's key; which aligned batches miss frames in the store. spacing: even first renders
        #    samples along the walk, places frames at equal steps of change, and picks them (all in the store)
        render_started = time.perf_counter()
        spaced = even_spacing(job, store, shard, fresh, bar) if checked.even else None
        plan = spaced.plan if spaced else plan_frames(job, selection, store, fresh, previous)
        bar.total = (bar.total or 0) + len(plan.missing)
        if shard.leader:
            store.save_plan(plan_record(job, plan))

        # 7. Render this rank's batches that miss frames; a background thread stores each frame while the next batch
        #    renders and, for a full walk in one process, feeds the MP4, the storm map and the platform files in
        #    order (under torchrun: the leader, once all are done). Every output is written into a staging folder
        #    first, and replaces the previous run's only once all are whole (step 11); a failure anywhere up to then
        #    kills the platform files' ffmpegs still running
        make_video = checked.full and not checked.grid and shard.leader
        with Staging(out) if shard.leader else nullcontext() as stage, \
                LiveDeliveries(config, stage.path(f"{config.name}.mp4") if make_video else None) as platforms:
            video_path = platforms.master
            writer = VideoWriter(video_path, *job.renderer.frame_size()[::-1], config.fps) if make_video else \
                nullcontext()
            # step 9's distances, measured as the frames arrive (on a thread of their own)
            with writer as video, RunningStorms(config.analysis.metric) as measured:
                arriving = video and Tee(video, measured, platforms)  # every frame of the walk, in order
                streaming = arriving if shard.world == 1 else None
                rendered = produce(job, plan, store, shard, video=streaming, on_frame=lambda: bar.update(1))
                # every rank's count and back-offs, which also waits until every rank's frames are in the store
                done = shard.gathered((rendered, plan.resized))
                rendered = sum(n for n, _ in done) + (spaced.rendered if spaced else 0)
                for _, resized in done:
                    plan.resize(resized)
                render_s = time.perf_counter() - render_started
                if not shard.leader:
                    return {"rank": shard.rank, "rendered": rendered}
                store.save_plan(plan_record(job, plan))  # with the keys of frames an out-of-memory back-off re-sized
                lost = missing_after(plan, store, selection)
                if lost:
                    raise MorphError(f"frames {lost[:10]} are missing after rendering (did a rank fail?); "
                                     "run the same command again to render only those")
                if video is not None and streaming is None:
                    video_from_store(plan, store, arriving)

            # 8. The frames under their names (copies of the stored ones); walks: the music under the master and the
            #    platform files made from the frames; grids: the contact sheet
            staged = stage.path(checked.folder.name)
            publish(plan, store, selection, staged, lambda i: job.path.describe(i)["file"], checked.full)
            records = [job.path.describe(i) for i in selection]
            files = [staged / r["file"] for r in records]
            deliveries = deliver_all(config, files, video_path, platforms) if make_video else []
            sheet = None
            if checked.grid and checked.full:
                sheet = stage.path("grid.png")
                image = _contact_sheet(config, job.path, staged)
                write_atomic(sheet, lambda path: image.save(path, format="PNG"))

            # 9. Walks and edits (of 3 frames or more): the storm map of the frames (storm.png, filmstrip.png); with
            #    analysis.explain, the worst storms attributed to the prompts' words (renders in explain/)
            storms = attribution = None
            if checked.full and not checked.grid and len(selection) >= 3:
                storms = storm_map(stage.folder, files, config.fps,
                                   keyframes_of(records, [source for _, source in config.prompt_sources()]),
                                   measured.analysis(config.analysis.storm_factor, frames=len(selection)),
                                   before=uniform_curve(spaced.uniform, spaced.uniform_estimated) if spaced else None)
                if config.analysis.explain:
                    attribution = explain_storms(job, store, storms, stage.folder, bar)

            # 10. The manifest (strict JSON: no NaN or Infinity) and, for walks, report.html
            counts = {"selected": len(selection), "rendered": rendered,
                      "reused": spaced.reused if spaced else len(selection) - len(plan.missing)}
            written = manifest(job, records, flagged(plan, store, selection), counts, video, sheet, staged)
            written["analysis"] = {**storms.to_dict(), "attribution": attribution} if storms else None
            written["deliveries"] = deliveries
            if spaced and storms:
                written["spacing"] = spaced.record([job.path.position(i) for i in selection], storms.distances)
            written["timings"].update(render_s=round(render_s, 3), total_s=round(time.perf_counter() - started, 3),
                                      frames_per_s=round(rendered / render_s, 3) if rendered else None)
            written = stage.final_names(written)
            written["report"] = str(out / write_report(stage.folder, written).name) if storms else None
            write_manifest(stage.folder, written)

            # 11. Everything is whole: replace the previous outputs, the manifest last
            stage.commit(checked.folder.name, whole=checked.full)
        return written


def _contact_sheet(config: JobConfig, path: GridPath, folder: Path):
    from .analysis.sheet import contact_sheet, grid_labels

    rows, columns = config.grid.rows, config.grid.columns
    title, row_labels, column_labels = grid_labels(rows.start, rows.end, columns.add, path.row_t, path.column_k)
    files = [[folder / path.describe(i * len(path.column_k) + j)["file"] for j in range(len(path.column_k))]
             for i in range(len(path.row_t))]
    return contact_sheet(files, title, row_labels, column_labels)
