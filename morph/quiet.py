"""Quieting the libraries morph drives, through the variables they read when imported. No torch."""

import os


def quiet_environment() -> None:
    """Ask transformers, diffusers and the hub client for errors only and no progress bars (morph shows its own);
    a variable the user set wins."""
    for name in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
        os.environ.setdefault(name, "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
