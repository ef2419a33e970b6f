"""The studio's page (Gradio): compose a walk as a form or as YAML, preview it, render it in the background worker.

The actions the page's buttons call are named API endpoints too: /preview and /render take one string, a config's
YAML, so gradio_client drives the same code as the page; a refused config is a gr.Error there, as it is a one-line
message on the page. Every config goes through studio_config (the CLI's schema and checks, paths kept in the root).
"""

import threading
from pathlib import Path

import gradio as gr

from ..config.presets import PRESET_NAMES
from ..errors import MorphError
from ..job import check_job
from ..output.delivery import export
from .access import settle_in
from .configs import OUTPUTS, WouldReplace, dump, model_choices, save_config, studio_config
from .form import FIELDS, HEADERS, KEYFRAME_COLUMNS, NEW_JOB, form_of, headers, parse, rewritten, with_form
from .inputs import UPLOAD_COLUMNS, with_input
from .previews import FrameAt, ModelShelf, preview
from .worker import ACTIVE, QUEUE_SIZE, Worker, saved_jobs

POLL_S = 0.5  # how often /render and the page look at a running job
PREVIEWS_WAITING = 16  # previews queued beyond the one rendering; more are refused by Gradio's queue
# the pictures the upload offers; by suffix, since Gradio's page looks "image" up among its translations and warns
PICTURE_TYPES = [".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"]


def _refused(fn, *args):
    """fn(*args), a MorphError raised as gr.Error: what gradio_client raises, and what the page shows."""
    try:
        return fn(*args)
    except MorphError as e:
        raise gr.Error(str(e), print_exception=False) from None


def _status_line(status: dict | None) -> str:
    if not status:
        return "No render yet."
    name, state = status["name"], status["state"]
    if state == "running":
        done, total = status["done"], status["total"]
        rate, left = status["frames_per_s"], status["seconds_left"]
        return (f"**{name}**: rendering, {done} of {total if total is not None else '?'} frames"
                f"{f', {rate:.2f} frames/s' if rate else ''}{f', about {left:.0f} s left' if left is not None else ''}")
    if state == "done":
        return f"**{name}**: done ({status['output']})"
    error = status.get("error")
    return f"**{name}**: {state}{f': {error}' if error else ''}"


class Studio:
    """The page's handlers, over one root and one render worker."""

    def __init__(self, root: Path, worker: Worker | None = None):
        self.root = root.resolve()
        self.outputs = self.root / OUTPUTS
        self.worker = worker or Worker()
        self.models = ModelShelf()  # the previews' and the slider's model, kept between them
        self.frames = FrameAt(self.models.load, self.worker)  # single frames only between renders
        # one preview or slider frame at a time (the page's and the warm-up's): they share the model
        self._device = threading.Lock()
        self.warmed = threading.Event()  # set once the warm-up preview has ended (at once without one)
        self.page: gr.Blocks | None = None  # once served

    def close(self) -> None:
        """Stop serving, and stop the render worker (a job it was rendering is cancelled, its frames kept)."""
        if self.page is not None:
            self.page.close()
        self.worker.stop()

    def warm_up(self, text: str) -> None:
        """Preview the opening walk once, in the background, so that the user's first preview finds the libraries
        loaded (a refused or failing opening walk is left for the user to see)."""
        def run():
            try:
                with self._device, self.worker.between_renders("preview"):
                    preview(studio_config(text, self.root), self.models.load)
            except Exception:  # the user's own preview shows the same error, with its message
                pass
            finally:
                self.warmed.set()
        threading.Thread(target=run, name="morph-studio-warm-up", daemon=True).start()

    # --- compose: the form and the YAML, each from the other
    def form_values(self, text: str) -> tuple:
        """The form's fields, the keyframe table and the message for the YAML `text`."""
        try:
            raw = parse(text)
        except MorphError as e:
            return (*[gr.update() for _ in FIELDS], gr.update(), f"⚠ {e}")
        values = form_of(raw, self.frame_count(text))
        table = {"data": values["keyframes"] or [[""] * len(KEYFRAME_COLUMNS)],
                 "headers": headers(raw)}
        return (*[values[key] for key in FIELDS], table, self.message(text))

    def yaml_of(self, text: str, table, *fields) -> tuple[str, str]:
        """The YAML with the form's values written in, and its message."""
        try:
            raw = parse(text)
        except MorphError as e:
            return gr.update(), f"⚠ {e}"
        rows = table.values.tolist() if hasattr(table, "values") else table or []
        text = rewritten(text, with_form(raw, {**dict(zip(FIELDS, fields)), "keyframes": rows}, self.frame_count(text)))
        return text, self.message(text)

    def attach(self, text: str, upload: str | None, keyframe: float | None, column: str) -> tuple[str, str]:
        """An uploaded picture kept under inputs/ and named in a keyframe's image or reference: the YAML, its
        message."""
        if not upload:
            return gr.update(), gr.update()
        try:
            key = next((key for key, shown in HEADERS.items() if shown == column), column)  # as the page shows it
            text = with_input(text, self.root, Path(upload), int(keyframe or 0), key)
        except MorphError as e:
            return gr.update(), f"⚠ {e}"
        return text, self.message(text)

    def frame_count(self, text: str) -> int | None:
        """The walk's frame count as the studio reads `text` (its music from under the root); None where it refuses
        the config."""
        try:
            return studio_config(text, self.root).frame_count()
        except MorphError:
            return None

    def checked(self, text: str):
        """The job `text` describes, refused as `morph run` refuses it before loading anything (check_job)."""
        config = studio_config(text, self.root)
        check_job(config)
        return config

    def message(self, text: str) -> str:
        try:
            config = self.checked(text)
        except MorphError as e:
            return f"⚠ {e}"
        return f"✓ {config.kind}, {config.frame_count()} frames, into {config.output_dir.relative_to(self.root)}"

    def save(self, text: str, asked: str | None = None) -> tuple[str, str | None]:
        """Save: write configs/<name>.yaml. A file there that says something else is replaced only when Save is
        clicked again on the same YAML (`asked`: the YAML the last click was asked about); the message, and what to
        remember as asked."""
        try:
            path = save_config(text, self.root, replace=text == asked)
        except WouldReplace as e:
            return f"⚠ {e}", text
        except MorphError as e:
            return f"⚠ {e}", None
        saved = path.relative_to(self.root)
        return f"✓ saved {saved}: `morph run {saved}` in {self.root}", None

    # --- preview
    def preview(self, text: str):
        """/preview: the preview's filmstrip, its storm plot, and the slider over the full walk."""
        config = _refused(studio_config, text, self.root)

        def cheap() -> dict:  # between renders only, as the slider's frames: no model beside a render's
            with self.worker.between_renders("preview"):
                self.frames.release()  # a new walk: the slider starts over on it
                return preview(config, self.models.load)

        with self._device:
            manifest = _refused(cheap)
        analysis = manifest.get("analysis") or {}
        return analysis.get("filmstrip"), analysis.get("plot"), gr.update(maximum=config.frame_count() - 1, value=0,
                                                                          interactive=True)

    def frame_at(self, text: str, index: float):
        """/frame: frame `index` of the full walk (from the frame store when rendered before)."""
        config = _refused(studio_config, text, self.root)
        index = int(index)
        if not 0 <= index < config.frame_count():
            raise gr.Error(f"frame {index} is not in the walk of {config.frame_count()} frames", print_exception=False)
        with self._device:
            return _refused(self.frames.frame, config, index)

    # --- render
    def _queued(self, text: str):
        config = _refused(self.checked, text)
        with self._device:  # after any preview or frame under way; before the render can start, so it loads alone
            self.frames.release()  # the render gets the device's memory; the slider loads its job again when asked
            self.models.release()
            return _refused(self.worker.submit, config)

    def submit(self, text: str):
        """The page's Render button: queue the job and show it; the page's timer follows it."""
        return self.jobs_update(self._job_id(self._queued(text).status()))

    def render(self, text: str):
        """/render: queue the job, wait for it, and give its video and manifest (a failure is a gr.Error)."""
        job = self._queued(text)
        while not job.finished.wait(POLL_S):
            pass
        if job.state != "done":
            raise gr.Error(job.error or job.state, print_exception=False)
        return job.manifest["video"], job.manifest, (job.manifest.get("analysis") or {}).get("plot")

    def cancel(self, job_id: str) -> str:
        """/cancel: stop the job rendering into outputs/<job_id> (a queued one never starts)."""
        folder = self._folder(job_id)
        if folder is None or not self.worker.cancel(folder):
            return f"{job_id or 'no job'}: nothing to cancel"
        return f"{job_id}: cancelling"

    def jobs(self) -> list[dict]:
        """/jobs: every render under the outputs folder, newest first, with its state and progress."""
        return [{**status, "id": self._job_id(status)} for status in saved_jobs(self.outputs, self.worker)]

    def _job_id(self, status: dict) -> str:
        """A job's name on the page: its output folder under outputs/."""
        return Path(status["output"]).relative_to(self.outputs).as_posix()

    def _folder(self, job_id: str | None) -> Path | None:
        """The output folder of a job id, None unless it is a folder under outputs/."""
        folder = (self.outputs / job_id).resolve() if job_id else None
        return folder if folder is not None and folder.is_relative_to(self.outputs) and folder != self.outputs \
            else None

    def jobs_update(self, chosen: str | None = None):
        ids = [status["id"] for status in self.jobs()]
        return gr.update(choices=ids, value=chosen if chosen in ids else (ids[0] if ids else None))

    def status_of(self, job_id: str | None) -> dict | None:
        return next((s for s in self.jobs() if s["id"] == job_id), None) if job_id else None

    def show(self, job_id: str | None):
        """A job's state on the page: status line, and once done its video, storm map, report link and presets."""
        return self._shown(job_id, self.status_of(job_id))

    def follow(self, job_id: str | None, shown_line: str):
        """The page's timer: refresh the chosen job while it renders, and once more when it ends; else nothing."""
        status = self.status_of(job_id)
        if status is None or (status["state"] not in ACTIVE and shown_line == _status_line(status)):
            return tuple(gr.update() for _ in range(5))
        return self._shown(job_id, status)

    def _shown(self, job_id: str | None, status: dict | None):
        folder = self._folder(job_id) if status is not None and status["state"] == "done" else None

        def found(name: str) -> str | None:
            return str(folder / name) if folder is not None and (folder / name).is_file() else None

        report = found("report.html")
        return (_status_line(status), found(f"{status['name']}.mp4") if folder else None, found("storm.png"),
                f"[report.html](/gradio_api/file={report})" if report else "", gr.update(visible=folder is not None))

    def deliver(self, job_id: str, preset: str):
        """A platform's file made from the finished job's frames (morph export)."""
        folder = self._folder(job_id)
        if folder is None:
            raise gr.Error("choose a finished job first", print_exception=False)
        return _refused(export, folder, preset)["file"]


def build(studio: Studio, first: str | None = None) -> gr.Blocks:
    """The page; `first`: the YAML it opens with (default: a short walk on the toy model)."""
    first = first or dump(NEW_JOB)
    with gr.Blocks(title="morph studio", analytics_enabled=False) as page:  # nothing leaves the machine
        gr.Markdown("# morph studio\nCompose a walk, preview it in seconds, render it. "
                    f"Files are read from and written under `{studio.root}`.")
        with gr.Row():
            with gr.Column(scale=3):
                name = gr.Textbox(label="name", elem_id="name")
                model = gr.Dropdown(model_choices(studio.root), label="model", allow_custom_value=True,
                                    elem_id="model")
                keyframes = gr.Dataframe(headers=headers({}), datatype="str", type="array",
                                         label="keyframes (empty cells: the top level's value)", interactive=True,
                                         elem_id="keyframes")
                with gr.Row():  # a picture for a keyframe: kept under inputs/, named in its image or reference cell
                    upload = gr.File(label="picture for a keyframe", file_types=PICTURE_TYPES, type="filepath",
                                     elem_id="upload")
                    upload_keyframe = gr.Number(0, label="keyframe (0: the first)", precision=0, minimum=0,
                                                elem_id="upload_keyframe")
                    upload_column = gr.Radio([HEADERS[key] for key in UPLOAD_COLUMNS], value=HEADERS["image"],
                                             label="as its",
                                             elem_id="upload_column")
                with gr.Row():
                    frames = gr.Number(label="frames", precision=0, minimum=2, elem_id="frames")
                    width = gr.Number(label="width", precision=0, minimum=8, step=8)
                    height = gr.Number(label="height", precision=0, minimum=8, step=8)
                    steps = gr.Number(label="num_inference_steps", precision=0, minimum=1)
                with gr.Row():
                    interpolation = gr.Radio(["lerp", "slerp"], label="interpolation")
                    spacing = gr.Radio(["uniform", "even"], label="spacing")
            with gr.Column(scale=2):
                yaml_text = gr.Code(first, language="yaml", label="config (YAML)", elem_id="yaml", lines=18)
                message = gr.Markdown(elem_id="message")
                with gr.Row():
                    save = gr.Button("Save", elem_id="save")
                    preview_button = gr.Button("Preview", variant="primary", elem_id="preview")
                    render_button = gr.Button("Render", variant="primary", elem_id="render")
        saved = gr.Markdown(elem_id="saved")
        # the pictures with a title line of their own show no label: Gradio floats it over their top-left corner,
        # where it hid the start of the title
        with gr.Row():
            filmstrip = gr.Image(label="preview: filmstrip", show_label=False, type="filepath", elem_id="filmstrip")
            storm_plot = gr.Image(label="preview: storm plot", show_label=False, type="filepath", elem_id="storm_plot")
        with gr.Row():
            position = gr.Slider(0, 1, step=1, label="frame of the full walk", interactive=False, elem_id="position")
            frame = gr.Image(label="frame", format="png", elem_id="frame")
        gr.Markdown("## Renders")
        with gr.Row():
            job_name = gr.Dropdown([], label="job", elem_id="job")
            cancel_button = gr.Button("Cancel", elem_id="cancel")
        status = gr.Markdown(elem_id="status")
        with gr.Row():
            video = gr.Video(label="rendered video", elem_id="video", height=360)
            storm_map = gr.Image(label="storm map", show_label=False, type="filepath", elem_id="storm_map")
        report = gr.Markdown(elem_id="report")
        with gr.Row(visible=False) as presets:
            preset_buttons = [gr.Button(preset, size="sm") for preset in PRESET_NAMES if preset != "master"]
        delivered = gr.File(label="platform file", elem_id="delivered")
        with gr.Row(visible=False):  # what /render gives a script: the video file, the manifest, the storm map
            api_render, api_video, api_manifest = gr.Button(), gr.File(), gr.JSON()
            api_jobs, api_jobs_list = gr.Button(), gr.JSON()
            api_cancel, api_cancel_name = gr.Button(), gr.Textbox()

        form = [name, model, frames, width, height, steps, interpolation, spacing]
        shown = [status, video, storm_map, report, presets]
        hidden = {"queue": False, "api_visibility": "private"}
        # the form and the YAML, each written from the other when the user changes it
        yaml_text.input(studio.form_values, yaml_text, [*form, keyframes, message], **hidden)
        for field in [*form, keyframes]:
            field.input(studio.yaml_of, [yaml_text, keyframes, *form], [yaml_text, message], **hidden)
        upload.upload(studio.attach, [yaml_text, upload, upload_keyframe, upload_column], [yaml_text, message],
                      **hidden).then(studio.form_values, yaml_text, [*form, keyframes, message], **hidden)
        asked = gr.State(None)  # this page's YAML that Save last asked about replacing a file with
        save.click(studio.save, [yaml_text, asked], [saved, asked], **hidden)
        preview_button.click(studio.preview, yaml_text, [filmstrip, storm_plot, position], api_name="preview",
                             concurrency_limit=1, concurrency_id="device")
        position.release(studio.frame_at, [yaml_text, position], frame, api_name="frame", concurrency_limit=1,
                         concurrency_id="device")
        render_button.click(studio.submit, yaml_text, job_name, api_visibility="private").then(
            studio.show, job_name, shown, **hidden)
        api_render.click(studio.render, yaml_text, [api_video, api_manifest, storm_map], api_name="render",
                         concurrency_limit=QUEUE_SIZE + 1)
        api_jobs.click(studio.jobs, None, api_jobs_list, api_name="jobs", queue=False)
        api_cancel.click(studio.cancel, api_cancel_name, status, api_name="cancel", queue=False)
        cancel_button.click(studio.cancel, job_name, status, api_visibility="private")
        job_name.change(studio.show, job_name, shown, **hidden)
        for button in preset_buttons:
            button.click(studio.deliver, [job_name, gr.State(button.value)], delivered, api_visibility="private")
        # a reload finds every job in the outputs folder; the timer follows the chosen one
        page.load(studio.form_values, yaml_text, [*form, keyframes, message], **hidden).then(
            studio.jobs_update, None, job_name, **hidden)
        gr.Timer(1.0).tick(studio.follow, [job_name, status], shown, **hidden)
    page.queue(max_size=PREVIEWS_WAITING)
    return page


def serve(root: Path, host: str = "127.0.0.1", port: int | None = 7860, auth: tuple[str, str] | None = None,
          block: bool = True, warm: bool = True):
    """Start the studio on host:port (port None: the first free one from 7860); files are served only from
    <root>/outputs. `block`: until Ctrl-C; else return (studio, url) with the server running in the background.
    `warm`: preview the opening walk in the background at once. The process settles in `root`, the hub offline
    (settle_in): nothing outside the root and the local cache is read."""
    settle_in(root)
    studio = Studio(root)
    first = dump(NEW_JOB)
    page = build(studio, first)
    if warm:
        studio.warm_up(first)
    else:
        studio.warmed.set()
    studio.page = page
    _, url, _ = page.launch(server_name=host, server_port=port, auth=auth, prevent_thread_lock=not block,
                            allowed_paths=[str(studio.outputs)], ssr_mode=False, quiet=True, show_error=True,
                            footer_links=["api"])
    return studio, url
