"""The docs: every command and config key documented, the generated reference current, the site building
strictly, a README that fits on a few screens; and every shipped config is valid."""

from pathlib import Path

import click
import pytest

from morph.cli import cli
from morph.config.jobs import JOB_KINDS
from morph.config.yaml_file import load_config

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
PAGES = {path.name: path.read_text() for path in (ROOT / "docs").glob("*.md")}  # the hand-written pages


def commands(group, prefix="morph"):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from commands(command, f"{prefix} {name}")
        else:
            yield f"{prefix} {name}", command


SYNOPSIS = PAGES["commands.md"].split("# Command line\n\n```\n", 1)[1].split("```", 1)[0]


@pytest.mark.parametrize("name, command", sorted(commands(cli)), ids=lambda x: x if isinstance(x, str) else "")
def test_every_command_and_option_is_in_the_synopsis(name, command):
    line = next((line for line in SYNOPSIS.splitlines() if line.startswith(name + " ") or line == name), None)
    assert line is not None, f"{name} is missing from the synopsis"
    for param in command.params:
        for option in getattr(param, "opts", []):
            if option.startswith("--") and option != "--help" and isinstance(param, click.Option):
                assert option in line, f"{name} {option}"
        for value in getattr(param.type, "choices", []):
            assert any(f"`{value}`" in page for page in PAGES.values()) or value in line, f"{name} {param.name}: {value}"


@pytest.mark.parametrize("key", sorted({f.alias or name for cls in JOB_KINDS.values()
                                         for name, f in cls.model_fields.items()}))
def test_every_config_key_is_explained_on_the_config_page(key):
    assert f"`{key}`" in PAGES["config.md"]


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    assert load_config(path).name == path.stem


def test_the_generated_reference_pages_are_current():
    """docs/reference/ is written by docs/generate.py from the schema and the commands: `python docs/generate.py`."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("generate", ROOT / "docs" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    for file, make in generate.PAGE_MAKERS.items():
        assert (ROOT / "docs" / "reference" / file).read_text() == make(), f"run python docs/generate.py ({file})"
    assert "| `ease` |" in generate.config_page() and "## `morph golden save`" in generate.cli_page()


def test_the_readme_fits_on_a_few_screens_and_links_every_page():
    assert len(README.splitlines()) <= 200
    linked = {page for page in PAGES if f"(docs/{page})" in README}
    assert linked == set(PAGES) - {"index.md"}, set(PAGES) - linked


def test_the_site_builds_with_strict_checks(tmp_path):
    """`mkdocs build --strict`: a broken link, a missing anchor or a page left out of the nav fails."""
    pytest.importorskip("material", reason="mkdocs-material is not installed (pip install -e '.[test]')")
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "loras" / "index.html").is_file()
