"""The command line: parse, call the library, turn MorphError into one line and exit code 2.

torch and diffusers are imported inside the commands, so `morph --help` stays fast.
"""

import sys
import warnings

import click

from . import __version__
from .config import load_config
from .errors import MorphError


class _UserError(click.ClickException):
    exit_code = 2


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
@click.option("--model", metavar="M", help="Model to use instead of the config's: hub id, folder, tiny or toy.")
@click.option("--frames", metavar="SPEC", help="Render only these frames, e.g. 0,17,100-120 (PNGs, no video).")
@click.option("--batch-size", type=click.IntRange(min=1), metavar="N", help="Frames per UNet batch.")
@click.option("--device", metavar="D", help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run(config, output, model, frames, batch_size, device, quiet):
    """Render the job described by CONFIG (a YAML file)."""
    from .job import run_job

    job = _call(load_config, config, output=output, model=model, batch_size=batch_size, device=device)
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


def main():
    cli(prog_name="morph")


if __name__ == "__main__":
    sys.exit(main())
