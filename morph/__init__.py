"""morph: render videos that walk through Stable Diffusion prompt space.

Library API (the CLI is a thin layer over it)::

    from morph import load_config, run_job
    manifest = run_job(load_config("configs/cat_kitten.yaml", model="tiny"))
"""

from .config.jobs import JobConfig
from .config.yaml_file import load_config  # no torch: keeps `morph --help` fast
from .errors import MorphError
from .version import __version__


def run_job(config, frames=None, quiet=False, verbose=False, fresh=False):
    """Render a job; see morph.job.run_job. Imported lazily so that importing morph stays light."""
    from .job import run_job as _run_job

    return _run_job(config, frames=frames, quiet=quiet, verbose=verbose, fresh=fresh)


__all__ = ["JobConfig", "MorphError", "load_config", "run_job", "__version__"]
