"""The reference pages, generated from the code: the config keys from the pydantic schema, the commands from click.

    python docs/generate.py          # rewrites docs/reference/config.md and docs/reference/cli.md
    python docs/generate.py --filmstrip outputs/toy_demo    # docs/images/toy_demo_filmstrip.png from a toy demo run

tests/test_docs.py fails when a committed page is not what this writes: never edit the pages by hand.
"""

import json
import sys
from pathlib import Path

import click

from morph.cli import cli
from morph.config.jobs import json_schema

PAGES = Path(__file__).parent / "reference"
KINDS = {"WalkJob": "A walk (`prompts:`)", "EditJob": "A one-word edit (`base:` and `edit:`)",
         "GridJob": "A grid (`grid:`)"}


def type_of(schema: dict) -> str:
    """A key's type in words: string, number, list of …, one of …, a section's name."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return f"[{name}](#{name.lower()})"
    if "enum" in schema:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " or ".join(dict.fromkeys(type_of(s) for s in schema[key]))
    if schema.get("type") == "array":
        return f"list of {type_of(schema.get('items', {}))}"
    return {"integer": "whole number", "number": "number", "string": "text", "boolean": "true or false",
            "null": "null", "object": "mapping"}.get(schema.get("type"), "any")


def range_of(schema: dict) -> str:
    """What values a key takes beyond its type: bounds, lengths, patterns (of it or of its alternatives)."""
    parts = []
    for key, word in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"),
                      ("minLength", "characters >="), ("maxLength", "characters <="), ("minItems", "entries >="),
                      ("multipleOf", "multiple of")):
        if key in schema:
            parts.append(f"{word} {schema[key]}")
    if "pattern" in schema:
        parts.append(f"matches `{schema['pattern']}`".replace("|", "\\|"))  # a table cell: its pipes escaped
    for key in ("anyOf", "oneOf"):
        parts += [r for s in schema.get(key, []) for r in [range_of(s)] if r]
    return "; ".join(dict.fromkeys(parts))


def table(section: dict) -> list[str]:
    rows = ["| key | type | default | values | what it does |", "|---|---|---|---|---|"]
    required = set(section.get("required", []))
    for key, schema in section.get("properties", {}).items():
        default = "*(required)*" if key in required else f"`{json.dumps(schema.get('default'))}`"
        description = " ".join(schema.get("description", "").split()).replace("|", "\\|")
        rows.append(f"| `{key}` | {type_of(schema)} | {default} | {range_of(schema)} | {description} |")
    return rows


def config_page() -> str:
    schema = json_schema()
    lines = ["# Config reference", "", "Every key of a job config, generated from morph's schema by "
             "`python docs/generate.py` (`morph schema` prints the same schema as JSON). A job is one of three "
             "kinds, told apart by which of `prompts:`, `edit:` or `grid:` it has.", ""]
    for name, title in KINDS.items():
        lines += [f"## {title}", "", *table(schema["$defs"][name]), ""]
    for name, section in sorted(schema["$defs"].items()):
        if name not in KINDS:
            doc = " ".join(section.get("description", "").split())
            lines += [f"## {name}", "", *([doc, ""] if doc else []), *table(section), ""]
    return "\n".join(lines)


def commands(group, prefix="morph"):
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from commands(command, f"{prefix} {name}")
        else:
            yield f"{prefix} {name}", command


def cli_page() -> str:
    lines = ["# Command reference", "", "Every command and option, generated from morph's click commands by "
             "`python docs/generate.py`. `--help` on any command says the same.", ""]
    for name, command in commands(cli):
        context = click.Context(command, info_name=name)
        lines += [f"## `{name}`", "", f"`{command.get_usage(context).removeprefix('Usage: ')}`", "",
                  " ".join((command.help or "").split()), ""]
        options = [p for p in command.params if isinstance(p, click.Option) and "--help" not in p.opts]
        if options:
            lines += ["| option | takes | what it does |", "|---|---|---|"]
            for option in options:
                takes = "" if option.is_flag else (option.metavar or option.type.name).replace("|", "\\|")
                if isinstance(option.type, click.Choice):
                    takes = " \\| ".join(f"`{c}`" for c in option.type.choices)
                lines.append(f"| `{', '.join(option.opts)}` | {takes} | {' '.join((option.help or '').split())} |")
            lines.append("")
        if command.epilog:
            lines += [command.epilog, ""]
    return "\n".join(lines)


PAGE_MAKERS = {"config.md": config_page, "cli.md": cli_page}


def filmstrip(output: Path, columns: int = 8):
    """The README's picture: `columns` frames spread evenly over a walk's output folder, first and last included."""
    from morph.analysis.sheet import contact_sheet

    manifest = json.loads((output / "manifest.json").read_text())
    frames = manifest["frames"]
    picked = [frames[round(i * (len(frames) - 1) / (columns - 1))] for i in range(columns)]
    keyframes = " -> ".join(p["source"] for p in manifest["prompts"])  # the sheet's font has no arrow
    return contact_sheet([[Path(manifest["frames_dir"]) / f["file"] for f in picked]],
                         f"{keyframes}: {len(frames)} frames", ["frame"], [str(f["index"]) for f in picked])


if __name__ == "__main__":
    if sys.argv[1:2] == ["--filmstrip"]:
        image = Path(__file__).parent / "images" / "toy_demo_filmstrip.png"
        image.parent.mkdir(exist_ok=True)
        filmstrip(Path(sys.argv[2])).save(image, optimize=True)
        sys.exit(print(f"wrote {image}", file=sys.stderr))
    PAGES.mkdir(exist_ok=True)
    for file, make in PAGE_MAKERS.items():
        (PAGES / file).write_text(make())
        print(f"wrote {PAGES / file}", file=sys.stderr)
