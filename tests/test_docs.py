"""The README documents every command and config key, and every shipped config is valid."""

from pathlib import Path

import pytest

from morph.cli import cli
from morph.config import JOB_KINDS, load_config

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


def commands(group, prefix="morph"):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from commands(command, f"{prefix} {name}")
        else:
            yield f"{prefix} {name}"


@pytest.mark.parametrize("command", sorted(commands(cli)))
def test_every_command_is_in_the_readme(command):
    assert command in README


@pytest.mark.parametrize("key", sorted({f.alias or name for cls in JOB_KINDS.values()
                                         for name, f in cls.model_fields.items()}))
def test_every_config_key_is_in_the_readme(key):
    assert f"`{key}`" in README


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    assert load_config(path).name == path.stem
