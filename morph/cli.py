"""The command line: parse, call the library, turn MorphError into one line and exit code 2.

torch and diffusers are imported inside the commands, after the config has been checked, so
`morph --help` and every config mistake answer at once. A fault while writing (disk full, no
permission) is one line too, with exit code 1.
"""

import re
import shlex
import sys
import warnings

import click

from . import __version__
from .config.yaml_file import load_config
from .config.sections import TOLERANCES
from .config.presets import PRESET_NAMES
from .errors import MorphError
from .quiet import quiet_environment


class _UserError(click.ClickException):
    exit_code = 2


class _Fault(click.ClickException):
    exit_code = 1


class _BatchSize(click.ParamType):
    name = "batch_size"

    def convert(self, value, param, ctx):
        if value == "auto" or isinstance(value, int):
            return value
        if value.isdigit() and int(value) >= 1:
            return int(value)
        self.fail(f"{value!r} is not a whole number >= 1 or auto", param, ctx)


BATCH_SIZE = _BatchSize()
MODEL_OPTION = click.option("--model", metavar="M",
                            help="Model to use instead of the config's: hub id, folder, .safetensors file, tiny, "
                                 "tiny-sd2, tiny-sdxl or toy.")
DEVICE_OPTION = click.option("--device", metavar="D", help="Device instead of the config's: auto, cpu, cuda or "
                                                            "cuda:N.")


def _show_warning(message, category, filename, lineno, file=None, line=None):
    click.echo(f"morph: warning: {message}", err=True)


def _quiet(verbose: bool) -> None:
    """Unless --verbose: only morph's own warnings, no library loading bars or advice a user cannot act on."""
    warnings.showwarning = _show_warning
    if verbose:
        return
    quiet_environment()
    warnings.filterwarnings("ignore")
    warnings.filterwarnings("always", module=r"morph(\.|$)")


def _call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except MorphError as e:
        raise _UserError(str(e)) from None
    except OSError as e:  # a fault of the machine, not a mistake in the job
        where = f"{e.filename}: " if e.filename else ""
        raise _Fault(f"{where}{e.strerror or e}") from None


VERBOSE_OPTION = click.option("--verbose", is_flag=True,
                              help="Show the libraries' own warnings, loading bars and info messages.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Example: morph run configs/cat_kitten.yaml --model tiny")
@click.version_option(__version__, prog_name="morph")
def cli():
    """Render videos that walk through Stable Diffusion prompt space.

    Every frame is a real render from one shared seed and starting latent: only the prompt
    tensor changes from frame to frame.
    """


@cli.command(epilog="Example: morph run configs/cat_kitten.yaml --model tiny --frames 0,17,100-120")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "output", metavar="DIR", help="Output folder (default: outputs/<name>).")
@MODEL_OPTION
@click.option("--frames", metavar="SPEC", help="Render only these frames, e.g. 0,17,100-120 (PNGs, no video).")
@click.option("--batch-size", type=BATCH_SIZE, metavar="N|auto", help="Frames per UNet batch, or auto.")
@DEVICE_OPTION
@click.option("--compile", "compile_", is_flag=True, default=None,
              help="torch.compile the UNet and VAE decoder: a slow first batch, faster after.")
@click.option("--fresh", is_flag=True, help="Render every frame again, ignoring the frames already stored.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@VERBOSE_OPTION
def run(config, output, model, frames, batch_size, device, compile_, fresh, quiet, verbose):
    """Render the job described by CONFIG (a YAML file); frames already rendered are reused."""
    _quiet(verbose)
    job = _call(load_config, config, output=output, model=model, batch_size=batch_size, device=device,
                compile=compile_)
    from .job import run_job  # torch and diffusers: only once the config is known to be good

    try:
        manifest = _call(run_job, job, frames=frames, quiet=quiet, verbose=verbose, fresh=fresh)
    except KeyboardInterrupt:
        again = " ".join(["morph", *map(shlex.quote, sys.argv[1:])]) if sys.argv[1:2] == ["run"] else \
            f"morph run {config}"
        click.echo(f"\ninterrupted: every finished frame is kept in {job.output_dir}/.store; "
                   f"`{again}` renders only the rest", err=True)
        sys.exit(130)
    if "rank" in manifest:  # a torchrun rank other than 0: rank 0 reports
        return
    if manifest["nsfw_flagged"]:
        click.echo(f"morph: warning: the safety checker blacked out frames {manifest['nsfw_flagged']}", err=True)
    if manifest["redecoded_float32"]:
        click.echo(f"morph: note: frames {manifest['redecoded_float32']} overflowed in the half-precision VAE "
                   "and were decoded again in float32", err=True)
    if manifest["broken_frames"]:
        click.echo(f"morph: warning: frames {manifest['broken_frames']} are NaN or black even in float32: their "
                   "latents are bad (try dtype: float32, another scheduler or fewer steps)", err=True)
    made = manifest["video"] or manifest["grid"] or manifest["frames_dir"]
    speed = f", {manifest['timings']['frames_per_s']} frames/s" if manifest["rendered"] else ""
    reused = f", {manifest['reused']} reused from the store" if manifest["reused"] else ""
    click.echo(f"{manifest['rendered']} frames rendered{reused} in {manifest['timings']['total_s']:.1f} s{speed} "
               f"-> {made}")
    for delivered in manifest.get("deliveries") or []:
        click.echo(_delivered(delivered))
    _attributed((manifest.get("analysis") or {}).get("attribution"))


def _attributed(records: list[dict] | None) -> None:
    from .analysis.attribution import summary_line

    for record in records or []:
        click.echo(summary_line(record))


@cli.command(epilog="Example: morph explain outputs/toy_demo --step 98")
@click.argument("output", type=click.Path(exists=True, file_okay=False))
@click.option("--step", "steps", type=int, multiple=True, metavar="I",
              help="Explain step I, frame I -> I+1 (repeat for more); default: the --top biggest steps.")
@click.option("--top", type=click.IntRange(min=1), default=3, show_default=True,
              help="How many of the biggest steps to explain when no --step is given.")
@VERBOSE_OPTION
def explain(output, steps, top, verbose):
    """Attribute the biggest jumps of the walk rendered in OUTPUT to the words of its prompts: each step's change
    split into shares of BOS, each word, EOS, padding (and SDXL's pooled row), by renders through its frame store."""
    _quiet(verbose)
    from pathlib import Path

    from .explain import explain_output

    records = _call(explain_output, Path(output), list(steps), top, verbose=verbose)
    _attributed(records)
    click.echo(f"-> {Path(output) / 'report.html'}")


@cli.command(epilog="Example: morph analyze outputs/toy_demo --metric pixel")
@click.argument("output", type=click.Path(exists=True, file_okay=False))
@click.option("--metric", type=click.Choice(["ssim", "pixel", "lpips"]),
              help="How change is measured (default: the run's analysis.metric).")
@click.option("--storm-factor", type=click.FloatRange(min=1), help="Stormy: above this many times the median change.")
def analyze(output, metric, storm_factor):
    """Recompute the storm map of the walk rendered in OUTPUT from its PNG frames; print its summary."""
    _quiet(False)
    from pathlib import Path

    from .analysis.storm_map import format_summary
    from .output.report import reanalyze

    analysis, dropped = _call(reanalyze, Path(output), metric, storm_factor)
    click.echo(format_summary(analysis))
    click.echo(f"-> {analysis.plot}, {analysis.filmstrip} and {Path(output) / 'report.html'}")
    if dropped:
        steps = [record["step"] for record in dropped["attribution"]]
        click.echo(f"the attribution of steps {', '.join(map(str, steps))} is dropped, its shares measured with "
                   f"{dropped['metric']}, not {analysis.metric}: run `morph explain {output} "
                   f"{' '.join(f'--step {step}' for step in steps)}` again")


@cli.command(epilog="Example: morph export outputs/toy_demo --preset tiktok --fit pad --pad blur")
@click.argument("output", type=click.Path(exists=True, file_okay=False))
@click.option("--preset", type=click.Choice(PRESET_NAMES), required=True, help="Which platform's file to make.")
@click.option("--out", "out", type=click.Path(dir_okay=False), help="File to write (default: beside the master).")
@click.option("--fit", type=click.Choice(["none", "pad", "crop"]), help="Reach the platform's aspect by padding or "
                                                                        "cropping (default: the job's video.fit).")
@click.option("--pad", metavar="P", help="What padding shows: blur, black, white or #RRGGBB.")
@click.option("--loop", type=click.Choice(["none", "pingpong"]), help="pingpong: forward, then back.")
@click.option("--hold-ends", type=click.FloatRange(min=0, max=60), metavar="SECONDS",
              help="Hold the first and last frames this long.")
@click.option("--direction", type=click.Choice(["forward", "reverse"]),
              help="reverse: last frame first; forward: first frame first (default: the job's video.reverse).")
def export(output, preset, out, fit, pad, loop, hold_ends, direction):
    """Make a platform's file from the walk rendered in OUTPUT, from its PNG frames; nothing is rendered."""
    from pathlib import Path

    from .output.delivery import export as export_file

    if pad is not None and not re.fullmatch(r"blur|black|white|#[0-9a-fA-F]{6}", pad):
        raise _UserError(f"--pad: {pad!r} is not blur, black, white or #RRGGBB")
    reverse = None if direction is None else direction == "reverse"
    made = _call(export_file, Path(output), preset, Path(out) if out else None,
                 {"fit": fit, "pad": pad, "loop": loop, "hold_ends": hold_ends, "reverse": reverse})
    click.echo(_delivered(made))


def _delivered(made: dict) -> str:
    """One line per platform file: where, what it holds, and what was changed to fit."""
    from .output.delivery import summary

    return f"-> {made['file']}: {summary(made)}"


@cli.command(epilog="Example: morph status outputs/cat_kitten")
@click.argument("output", type=click.Path(exists=True, file_okay=False))
def status(output):
    """Say how many frames of the job last started in OUTPUT are done, missing, and stale in its store."""
    from pathlib import Path

    from .render.store import status as store_status

    s = _call(store_status, Path(output))
    click.echo(f"{s['name']}: {s['done']} of {s['frames']} frames done, {s['missing']} missing; "
               f"{s['stale']} stored frames belong to other settings")


@cli.command(epilog='Example: morph tokens "a drawing of a cat"')
@click.argument("sentence")
@click.option("--model", metavar="M", help="Whose tokenizer: a cached hub id, a folder, tiny or toy "
                                            "(default: Stable Diffusion 1.x's CLIP tokenizer, shipped with morph).")
@click.option("--embedding", "embeddings", metavar="FILE", multiple=True,
              help="A textual-inversion .safetensors file whose token the sentence uses (repeatable).")
@VERBOSE_OPTION
def tokens(sentence, model, embeddings, verbose):
    """Show the token slots of SENTENCE: index (BOS = 0), token, and the word it belongs to."""
    _quiet(verbose)
    from .prompts.encode import slot_table
    from .models.pipeline import check_embedding_fits, load_tokenizer, read_embedding, text_widths

    tokenizer = _call(load_tokenizer, model)
    widths = _call(text_widths, model) if embeddings else None
    for path in embeddings:
        token, parts = _call(read_embedding, path, None)
        _call(check_embedding_fits, path, parts, widths)
        rows = next(iter(parts.values())).shape[0]  # a token of several vectors is as many slots
        tokenizer.add_tokens([token] + [f"{token}_{i}" for i in range(1, rows)])
    table = slot_table(tokenizer, sentence)
    for index, token, word in table:
        click.echo(f"{index:3d}  {token:<20} {word}")
    padding = tokenizer.model_max_length - len(table)
    if padding > 0:
        click.echo(f"{len(table)}-{tokenizer.model_max_length - 1}: padding ({tokenizer.pad_token})")


@cli.group()
def golden():
    """Regression renders: save golden frames of a job, check later renders against them."""


@golden.command("save", epilog="Example: morph golden save configs/tiny_demo.yaml --every 10")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--frames", metavar="SPEC", help="Frames to keep, e.g. 0,17,100-120 (default: about 16, first and last).")
@click.option("--every", type=click.IntRange(min=1), metavar="K", help="Keep every K-th frame (and the last).")
@click.option("--dir", "directory", metavar="DIR", help="Golden folder (default: golden/<name>/ next to CONFIG).")
@click.option("--force", is_flag=True, help="Replace goldens that are there already.")
@MODEL_OPTION
@DEVICE_OPTION
@VERBOSE_OPTION
def golden_save(config, frames, every, directory, force, model, device, verbose):
    """Render chosen frames of CONFIG and store them as lossless goldens."""
    if frames and every:
        raise click.UsageError("give --frames or --every, not both")
    _quiet(verbose)
    job = _call(load_config, config, model=model, device=device)
    from .golden import GOLDEN_FILE, golden_dir, pick_frames, save_golden

    target = golden_dir(job, directory)
    if (target / GOLDEN_FILE).exists() and not force:
        raise _UserError(f"{target} holds goldens already; `morph golden check` compares against them, --force "
                         "replaces them, --dir DIR saves elsewhere")
    indices = _call(pick_frames, job.frame_count(), frames, every)
    saved = _call(save_golden, job, indices, target, verbose=verbose)
    click.echo(f"saved {len(saved['frames'])} golden frames ({saved['device']} {saved['dtype']}) to {target}")


@golden.command("check", epilog="Example: morph golden check configs/tiny_demo.yaml --tolerance cross-device")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--dir", "directory", metavar="DIR", help="Golden folder (default: golden/<name>/ next to CONFIG).")
@click.option("--tolerance", type=click.Choice(TOLERANCES),
              help="Preset (default: from the config's golden: section, else by the environments compared).")
@click.option("--report", metavar="DIR", help="Report folder (default: <output>/golden-report).")
@click.option("--force", is_flag=True, help="Compare even if the config differs from the goldens' config.")
@click.option("--update", is_flag=True, help="Show the comparison, then accept the new renders as goldens "
                                             "(implies --force).")
@MODEL_OPTION
@DEVICE_OPTION
@VERBOSE_OPTION
def golden_check(config, directory, tolerance, report, force, update, model, device, verbose):
    """Re-render the golden frames of CONFIG and compare. Exit 0: all pass; 1: a frame regressed; 2: usage error."""
    from pathlib import Path

    _quiet(verbose)
    job = _call(load_config, config, model=model, device=device)
    from .golden import check_golden, format_table, golden_dir, update_golden

    target = golden_dir(job, directory)
    result = _call(check_golden, job, target, preset=tolerance, force=force or update,
                   report_dir=Path(report) if report else None, verbose=verbose)
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(format_table(result))
    failed = [c.index for c in result.frames if not c.passed]
    click.echo(f"tolerance {result.tolerance.name}: {len(result.frames) - len(failed)}/{len(result.frames)} "
               f"frames pass; report in {result.report_dir}")
    if update:
        _call(update_golden, job, target, result)
        click.echo(f"updated the goldens in {target} with these renders")
        return
    if failed:
        sys.exit(1)


@cli.command(epilog="Example: morph studio --root . (then open http://127.0.0.1:7860)")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; another than loopback needs --auth.")
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True)
@click.option("--root", default=".", show_default=True, metavar="DIR",
              help="The only folder the studio reads configs, models, music and LoRAs from and writes outputs to.")
@click.option("--auth", metavar="USER:PASSWORD", help="Ask for this user and password (needed beyond loopback).")
@VERBOSE_OPTION
def studio(host, port, root, auth, verbose):
    """A local web page to compose a walk, preview it, watch its storms and render it (needs morph[studio])."""
    from .studio.access import check_access

    folder, credentials = _call(check_access, host, auth, root)
    _quiet(verbose)
    try:
        from .studio.page import serve
    except ImportError as e:
        raise _UserError(f"morph studio needs Gradio ({e.name} is missing): pip install 'morph[studio]'") from None
    click.echo(f"morph studio: http://{host}:{port} serving {folder} (Ctrl-C stops it)")
    serve(folder, host, port, credentials)


@cli.command(epilog="Example: morph schema > morph.schema.json")
def schema():
    """Print the JSON Schema of job configs (editors use it to complete and check configs as you type)."""
    import json

    from .config.jobs import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


def main():
    cli(prog_name="morph")


if __name__ == "__main__":
    sys.exit(main())
