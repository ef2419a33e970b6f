"""The command line: parse, call the library, turn MorphError into one line and exit code 2.

torch and diffusers are imported inside the commands, so `morph --help` stays fast.
"""

import sys
import warnings

import click

from . import __version__
from .config import TOLERANCES, load_config
from .errors import MorphError


class _UserError(click.ClickException):
    exit_code = 2


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
                            help="Model to use instead of the config's: hub id, folder, tiny or toy.")
DEVICE_OPTION = click.option("--device", metavar="D", help="Device instead of the config's: auto, cpu, cuda, "
                                                            "cuda:N or mps.")


def _show_warning(message, category, filename, lineno, file=None, line=None):
    click.echo(f"morph: warning: {message}", err=True)


def _call(fn, *args, **kwargs):
    warnings.showwarning = _show_warning
    try:
        return fn(*args, **kwargs)
    except MorphError as e:
        raise _UserError(str(e)) from None


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
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run(config, output, model, frames, batch_size, device, compile_, quiet):
    """Render the job described by CONFIG (a YAML file)."""
    from .job import run_job

    job = _call(load_config, config, output=output, model=model, batch_size=batch_size, device=device,
                compile=compile_)
    manifest = _call(run_job, job, frames=frames, quiet=quiet)
    if manifest["nsfw_flagged"]:
        click.echo(f"morph: warning: the safety checker blacked out frames {manifest['nsfw_flagged']}", err=True)
    made = manifest["video"] or manifest["grid"] or manifest["frames_dir"]
    click.echo(f"{manifest['rendered']} frames in {manifest['timings']['total_s']:.1f} s "
               f"({manifest['timings']['frames_per_s']} frames/s) -> {made}")


@cli.command()
@click.argument("sentence")
@click.option("--model", default="tiny", show_default=True, metavar="M", help="Whose tokenizer to use.")
def tokens(sentence, model):
    """Show the token slots of SENTENCE: index (BOS = 0), token, and the word it belongs to."""
    from .encode import slot_table
    from .pipeline import load_tokenizer

    tokenizer = _call(load_tokenizer, model)
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
@MODEL_OPTION
@DEVICE_OPTION
@click.option("--quiet", is_flag=True, help="No progress output from the libraries.")
def golden_save(config, frames, every, directory, model, device, quiet):
    """Render chosen frames of CONFIG and store them as lossless goldens."""
    from .golden import golden_dir, pick_frames, save_golden

    if frames and every:
        raise click.UsageError("give --frames or --every, not both")
    job = _call(load_config, config, model=model, device=device)
    target = golden_dir(job, directory)
    indices = _call(pick_frames, job.frame_count(), frames, every)
    saved = _call(save_golden, job, indices, target, quiet=quiet)
    click.echo(f"saved {len(saved['frames'])} golden frames ({saved['device']} {saved['dtype']}) to {target}")


@golden.command("check", epilog="Example: morph golden check configs/tiny_demo.yaml --tolerance cross-device")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--dir", "directory", metavar="DIR", help="Golden folder (default: golden/<name>/ next to CONFIG).")
@click.option("--tolerance", type=click.Choice(TOLERANCES),
              help="Preset (default: from the config's golden: section, else by the environments compared).")
@click.option("--report", metavar="DIR", help="Report folder (default: <output>/golden-report).")
@click.option("--force", is_flag=True, help="Compare even if the config differs from the goldens' config.")
@click.option("--update", is_flag=True, help="Show the comparison, then accept the new renders as goldens.")
@MODEL_OPTION
@DEVICE_OPTION
@click.option("--quiet", is_flag=True, help="No progress output from the libraries.")
def golden_check(config, directory, tolerance, report, force, update, model, device, quiet):
    """Re-render the golden frames of CONFIG and compare. Exit 0: all pass; 1: a frame regressed; 2: usage error."""
    from pathlib import Path

    from .golden import check_golden, format_table, golden_dir, update_golden

    job = _call(load_config, config, model=model, device=device)
    target = golden_dir(job, directory)
    result = _call(check_golden, job, target, preset=tolerance, force=force or update,
                   report_dir=Path(report) if report else None, quiet=quiet)
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


def main():
    cli(prog_name="morph")


if __name__ == "__main__":
    sys.exit(main())
