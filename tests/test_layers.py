"""The package's layout follows the data flow: each module imports only from its own layer or the ones before it,
and the pure math imports only torch and numpy."""

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "morph"
# in the order data flows; a module may import from its own layer and the layers before it
LAYERS = [
    {"morph.errors", "morph.files", "morph.quiet", "morph.torchrun", "morph.version"},
    {"morph.media"},
    {"morph.config"},
    {"morph.models"},
    {"morph.prompts"},
    {"morph.render"},
    {"morph.analysis"},
    {"morph.output"},
    {"morph.job", "morph.explain", "morph.golden", "morph.testing", "morph.studio", "morph.cli", "morph.__main__",
     "morph"},
]
PURE_MATH = ["prompts/ops.py", "prompts/path.py", "prompts/easing.py", "analysis/spacing.py", "analysis/metrics.py",
             "analysis/storm.py", "models/ip_rows.py", "render/attention_math.py",
             "render/controlnet_math.py"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    """The layer of a morph module: its own name's, else its subpackage's."""
    for rank, names in enumerate(LAYERS):
        if module in names or any(module.startswith(name + ".") for name in names if name != "morph"):
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function, as absolute names."""
    return imports_in(path.read_text(), module_name(path), path.name == "__init__.py")


def imports_in(source: str, module: str, is_package: bool) -> set[str]:
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                # `from . import x` names a module x when there is one
                found.update(f"{target}.{a.name}" if (PACKAGE.parent / target.replace(".", "/") / f"{a.name}.py").exists()
                             else target for a in node.names)
            else:
                found.add(node.module)
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "weights" not in p.parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_imports_nothing_downstream_of_it(path):
    own = layer(module_name(path))
    later = sorted(m for m in imports(path) if m.split(".")[0] == "morph" and layer(m) > own)
    assert not later, f"{module_name(path)} imports {later}, downstream of it"


def test_at_most_a_dozen_modules_stay_at_the_top_and_each_subpackage_says_what_it_holds():
    assert len(list(PACKAGE.glob("*.py"))) <= 12
    for package in PACKAGE.glob("*/__init__.py"):
        docstring = ast.get_docstring(ast.parse(package.read_text()))
        assert docstring and len(docstring) > 40, package


@pytest.mark.parametrize("file", PURE_MATH)
def test_pure_math_imports_only_torch_numpy_and_the_standard_library(file):
    outside = {m.split(".")[0] for m in imports(PACKAGE / file)} - {"torch", "numpy", "morph"} - \
        set(sys.stdlib_module_names)
    ours = {m for m in imports(PACKAGE / file) if m.startswith("morph")}
    assert not outside, outside
    assert all(m.replace(".", "/") + ".py" in [f"morph/{p}" for p in PURE_MATH] for m in ours), ours


def test_the_checker_sees_an_import_that_goes_back_up():
    """A module of the config layer that imports the render layer, even inside a function, is caught."""
    source = "def f():\n    from ..render.batch import render_batch\n"
    found = imports_in(source, "morph.config.sections", is_package=False)
    assert found == {"morph.render.batch"} and layer("morph.render.batch") > layer("morph.config.sections")
