"""What the GPU check carries to the GPU machine, derived from what morph and its suite import, and the check there.

    python benchmarks/gpu_wheels.py carried             # the wheels to carry, name==version, one a line
    python benchmarks/gpu_wheels.py fetch DIR [--python-version 3.12]   # download exactly those into DIR
    python benchmarks/gpu_wheels.py image-share         # what the image holds of what morph could import (rehearsal)
    python benchmarks/gpu_wheels.py check [--json PATH] # on the machine: import all of it; exit 1, loudly, if not
    python benchmarks/gpu_wheels.py strangers           # installed distributions the image does not hold (rehearsal)

`carried`, `fetch` and `image-share` run in the development environment (`pip install -e '.[test]'`): the versions
they pin are the ones the suite passes with there. `check` needs only the standard library and `packaging`.

What is imported is read from the source: every import statement under morph/, tests/, benchmarks/ and docs/,
less the standard library and the repository's own modules. A module that some file imports behind a guard
(pytest.importorskip, or a try that catches ImportError) is optional: the code runs without it and its tests skip.
Optional modules are not carried; each other one is needed, with its distribution and what that requires (markers
evaluated for the image's Python). What benchmarks/gpu_image.txt lists is not carried, so nothing shadows the image's
own packages, except where the image's version is not one morph can use (OVER_THE_IMAGE, or a version read there
that a requirement refuses).
"""

import argparse
import ast
import functools
import importlib
import importlib.metadata as metadata
import importlib.util
import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("morph", "tests", "benchmarks", "docs")
IMAGE = Path(__file__).with_name("gpu_image.txt")
# carried although the image has them: its version there is unread, and an older one breaks morph's LoRA loading
OVER_THE_IMAGE = {"peft": "morph needs peft >= 0.21 (pyproject.toml) and the image's version was never read",
                  "typing-extensions": "pydantic 2.14 needs typing-extensions >= 4.16 (2026-07) and the image's version "
                                       "was never read"}
# a version other than this environment's: imageio-ffmpeg 0.8's wheel (ffmpeg 9.0.2) is 68 MB, over the 64 MiB a
# device call carries; 0.7.0's (ffmpeg 7.0.2) is 29.5 MB. The tests that read ffmpeg's messages take either
PINNED = {"imageio-ffmpeg": "0.7.0"}
# what the check itself runs beside the imports: packaging for this file's check, pytest-xdist (and its execnet) for
# `-n`. The image's other pytest plugins (pytest-cov, -mock, -timeout, -benchmark) load into every run there but
# act only when asked to: the rehearsal leaves them out
TOOLS = ("packaging", "pytest-xdist", "execnet")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages(path: Path = IMAGE) -> dict[str, str | None]:
    """The image's packages, canonical name -> version (None where only the name was read); 'python' included."""
    packages = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            packages[canonical(name)] = version or None
    return packages


def _guards_imports(node: ast.Try) -> bool:
    """Whether a try names ImportError or ModuleNotFoundError among what it catches: a wider handler (Exception)
    is there for other failures, not for a package that may be missing."""
    def names(expr):
        return [e.id for e in expr.elts if isinstance(e, ast.Name)] if isinstance(expr, ast.Tuple) else \
            [expr.id] if isinstance(expr, ast.Name) else []
    return any(h.type is not None and {"ImportError", "ModuleNotFoundError"} & set(names(h.type))
               for h in node.handlers)


def _imports_of(tree: ast.AST):
    """(dotted module, guarded) for each absolute import in `tree`, and importorskip's modules as guarded."""
    def visit(node, guarded):
        if isinstance(node, ast.Import):
            yield from ((alias.name, guarded) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, guarded
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == \
                "importorskip" and node.args and isinstance(node.args[0], ast.Constant):
            yield node.args[0].value, True
        if isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))) and _guards_imports(node):
            for child in node.body:
                yield from visit(child, True)
            for child in (*node.handlers, *node.orelse, *node.finalbody):
                yield from visit(child, guarded)
            return
        for child in ast.iter_child_nodes(node):
            yield from visit(child, guarded)
    yield from visit(tree, False)


def imported_modules(root: Path = ROOT) -> tuple[set[str], set[str]]:
    """(needed, optional) dotted third-party modules that morph, its suite, benchmarks and docs import."""
    files = [f for folder in SCANNED for f in (root / folder).rglob("*.py")]
    # the repository's own: its packages, and the scripts and test modules that import one another as top-level
    local = {p.name for p in root.iterdir() if p.is_dir()} | {f.stem for f in files if f.parent.name != "morph" and
                                                             f.parent.parent == root}
    sites = {}
    for f in files:
        for module, guarded in _imports_of(ast.parse(f.read_text(), str(f))):
            top = module.split(".")[0]
            if top not in sys.stdlib_module_names and top not in local:
                sites.setdefault(module, []).append(guarded)
    optional_tops = {m.split(".")[0] for m, guards in sites.items() if any(guards)}
    needed = {m for m in sites if m.split(".")[0] not in optional_tops}
    return needed, set(sites) - needed


@functools.cache
def _packages() -> dict:
    return metadata.packages_distributions()


def _distribution_of(module: str) -> str:
    found = _packages().get(module.split(".")[0])
    if not found:
        sys.exit(f"gpu_wheels.py: no installed distribution provides {module!r}, which morph or its suite imports: "
                 "run this in the development environment (pip install -e '.[test]')")
    return canonical(found[0])


def _marker_environment(python_version: str) -> dict:
    return {"python_version": ".".join(python_version.split(".")[:2]), "python_full_version": python_version,
            "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
            "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


def requirements(dist: str, python_version: str):
    """The requirements (packaging Requirement) `dist` has on the machine: no extras, markers evaluated."""
    from packaging.requirements import Requirement

    environment = _marker_environment(python_version)
    for line in metadata.requires(dist) or []:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(environment):
            yield requirement


def needed_distributions(python_version: str, modules: set[str], image: dict, through_image: bool = False):
    """(distribution -> why, those of them the image holds): what `modules` and TOOLS come from and what they require,
    transitively through the distributions the image lacks (the image's own have their requirements there), or
    `through_image` too, where this environment knows them (the rehearsal installs each one without its own)."""
    why, in_image = {}, set()
    todo = [(canonical(t), "the check runs it") for t in TOOLS] + \
        [(_distribution_of(m), f"imported ({m})") for m in sorted(modules)]
    while todo:
        dist, reason = todo.pop()
        if dist in why:
            continue
        why[dist] = reason
        if dist in image and dist not in OVER_THE_IMAGE:
            in_image.add(dist)
            if not (through_image and _version_here(dist)):
                continue
        elif not _version_here(dist):
            sys.exit(f"gpu_wheels.py: {dist} ({reason}) is neither in {IMAGE.name} nor installed here: run this in "
                     "the development environment (pip install -e '.[test]')")
        todo += [(canonical(r.name), f"required by {dist} ({r})") for r in requirements(dist, python_version)]
    return why, in_image


def morph_requirements() -> list:
    """What pyproject.toml asks for morph and its tests (packaging Requirements; the studio's extra is optional)."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in (*project["dependencies"], *project["optional-dependencies"]["test"])
            if not r.startswith("morph")]


def refused_image_versions(carried: set[str], python_version: str, image: dict) -> dict[str, str]:
    """Image packages whose version, where it was read, morph or a carried distribution refuses: name -> why."""
    refused = {}
    wants = [("morph", r) for r in morph_requirements()] + \
        [(dist, r) for dist in sorted(carried) for r in requirements(dist, python_version)]
    for who, r in wants:
        version = image.get(canonical(r.name))
        if version and r.specifier and not r.specifier.contains(version, prereleases=True):
            refused[canonical(r.name)] = f"{who} needs {r}, the image has {version}"
    return refused


def carried(python_version: str = "3.12", root: Path = ROOT, image_path: Path = IMAGE) -> dict[str, str]:
    """name==version of each wheel to carry -> why it goes."""
    image = image_packages(image_path)
    needed, in_image = needed_distributions(python_version, imported_modules(root)[0], image)
    go = {d: why for d, why in needed.items() if d not in in_image}
    go.update({d: OVER_THE_IMAGE[d] for d in OVER_THE_IMAGE if d in needed})
    go.update(refused_image_versions(set(go), python_version, image))
    return {f"{d}=={PINNED.get(d) or metadata.version(d)}": why for d, why in sorted(go.items())}


def image_share(python_version: str, root: Path = ROOT, image_path: Path = IMAGE) -> list[str]:
    """name==version of what the image holds of what morph, its suite and the check could import (the optional
    modules too): the rehearsal venv's packages, at the image's versions where they were read, else this one's."""
    image = image_packages(image_path)
    needed, optional = imported_modules(root)
    installed = {m for m in optional if _packages().get(m.split(".")[0])}
    shared = needed_distributions(python_version, needed | installed, image, through_image=True)[1] - {"torch"}
    return [f"{d}=={version}" if (version := _rehearsal_version(d, image[d], python_version)) else d
            for d in sorted(shared)]


def _rehearsal_version(dist: str, on_the_image: str | None, python_version: str) -> str | None:
    """The image's version of `dist` where one was read and it is published for `python_version` (numpy 2.5 is not
    for 3.11, the only Python with a CPU torch on this disk), else this environment's; None: the newest."""
    if on_the_image:
        listed = subprocess.run([sys.executable, "-m", "pip", "index", "versions", dist, "--python-version",
                                 python_version], capture_output=True, text=True).stdout
        if on_the_image in re.findall(r"[\w.+]+", listed.partition("Available versions:")[2].split("\n")[0]):
            return on_the_image
        print(f"rehearsal: {dist} {on_the_image}, the image's, is not published for Python {python_version}; "
              f"taking {_version_here(dist) or 'the newest'}", file=sys.stderr)
    return _version_here(dist)


def _version_here(dist: str) -> str | None:
    """The installed version of `dist`; None where it is not installed (pip then takes the newest)."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def fetch(folder: Path, python_version: str) -> None:
    """Download the carried wheels for `python_version` into `folder`, nothing else there: one version of each."""
    wanted = carried(python_version)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.whl"):
        old.unlink()
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", python_version, "--implementation", "cp", *platforms, "-d", str(folder),
                    *wanted], check=True)
    got = sorted(canonical(w.name.split("-")[0]) for w in folder.glob("*.whl"))
    assert got == sorted(canonical(w.split("==")[0]) for w in wanted), got
    size = sum(w.stat().st_size for w in folder.glob("*.whl"))
    print(f"{len(got)} wheels for Python {python_version}, {size / 2**20:.1f} MiB, in {folder}:")
    for name, why in wanted.items():
        print(f"  {name:<36} {why}")


def _import(module: str, optional: set[str]) -> str | None:
    """None if `module` imports, 'skipped (needs X)' where what it lacks is optional, else the error."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] in optional:
            return f"skipped (needs {e.name}, optional)"
        return f"{type(e).__name__}: {e}"
    except Exception as e:  # any error importing it is a failure of the check
        return f"{type(e).__name__}: {e}"
    return None


def _locations() -> dict[str, list[str]]:
    """Each distribution this Python sees -> 'version in folder' for every copy of it on sys.path."""
    locations = {}
    for dist in metadata.distributions():
        name = canonical(dist.metadata["Name"] or "")
        locations.setdefault(name, []).append(f"{dist.version} in {Path(str(dist.locate_file(''))).resolve()}")
    return locations


def _unmet(wants) -> list[str]:
    """Those of the (who, Requirement) pairs `wants` that what is installed does not satisfy."""
    from packaging.version import InvalidVersion

    unmet = []
    for who, r in wants:
        try:
            have = metadata.version(r.name)
            if r.specifier and not r.specifier.contains(have, prereleases=True):
                unmet.append(f"{who} needs {r}, found {have}")
        except metadata.PackageNotFoundError:
            unmet.append(f"{who} needs {r}: not installed")
        except InvalidVersion:
            unmet.append(f"{who} needs {r}, found {have!r}")
    return unmet


def check(root: Path = ROOT, package: str = "morph") -> dict:
    """Import every module morph and its suite import, and every module of `package`. The report: what failed to
    import (the check fails), what was skipped for want of an optional module, the needed distributions' versions
    and folders, requirements that what is installed does not meet, and distributions found twice (the check
    fails: one version of each, but OVER_THE_IMAGE's)."""
    needed, optional = imported_modules(root)
    optional_tops = {m.split(".")[0] for m in optional}
    report = {"python": sys.version.split()[0], "failed": {}, "skipped": {}}
    for module in sorted(needed):
        if error := _import(module, optional_tops):
            report["failed"][module] = error
    sys.path.insert(0, str(root))
    for info in pkgutil.walk_packages(importlib.import_module(package).__path__, f"{package}."):
        if info.name.endswith(".__main__"):  # importing it runs the command line
            continue
        if error := _import(info.name, optional_tops):
            report["skipped" if error.startswith("skipped") else "failed"][info.name] = error
    report["optional_absent"] = sorted(t for t in optional_tops if importlib.util.find_spec(t) is None)
    locations, packages = _locations(), metadata.packages_distributions()
    dists = sorted({canonical(packages[m.split(".")[0]][0]) for m in needed if m.split(".")[0] in packages})
    report["versions"] = {d: locations[d][0] for d in dists}
    wants = [(package, r) for r in morph_requirements() if canonical(r.name) in dists] + \
        [(d, r) for d in dists for r in requirements(d, report["python"])]
    report["unmet"] = _unmet(wants)
    report["twice"] = {n: places for n, places in locations.items()
                       if len(places) > 1 and n not in (*OVER_THE_IMAGE, package)}  # this tree beside its egg-info
    if torch := sys.modules.get("torch"):
        report["machine"] = {"torch": torch.__version__, "cuda": torch.version.cuda,
                             "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    report["ok"] = not report["failed"] and not report["twice"]
    return report


def strangers(image_path: Path = IMAGE) -> list[str]:
    """Distributions this Python sees that the image does not list (the rehearsal venv must have none)."""
    image = image_packages(image_path)
    return sorted({f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions()
                   if canonical(d.metadata["Name"] or "") not in image})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["carried", "fetch", "image-share", "check", "strangers"])
    parser.add_argument("folder", nargs="?", type=Path, help="fetch: where the wheels go")
    parser.add_argument("--python-version", default=image_packages()["python"],
                        help="the Python the wheels are for (default: the image's)")
    parser.add_argument("--json", type=Path, help="check: also write the report here")
    parser.add_argument("--root", type=Path, default=ROOT, help="check: the tree whose imports are checked")
    parser.add_argument("--package", default="morph", help="check: the tree's package, each module imported")
    args = parser.parse_args()
    if args.what == "carried":
        print("\n".join(carried(args.python_version)))
    elif args.what == "image-share":
        print("\n".join(image_share(args.python_version)))
    elif args.what == "fetch":
        fetch(args.folder or ROOT / "wheels", args.python_version)
    elif args.what == "strangers":
        if found := strangers():
            sys.exit(f"!!! installed here, not in the GPU image ({IMAGE.name}): {' '.join(found)}")
        print(f"every installed distribution is one the GPU image holds ({IMAGE.name})")
    else:
        report = check(args.root, args.package)
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        for dist, where in report["versions"].items():
            print(f"  {dist:<28} {where}")
        for key in ("skipped", "optional_absent", "unmet", "twice"):
            if report[key]:
                print(f"{'!!! ' if key in ('unmet', 'twice') else ''}{key}: {json.dumps(report[key], indent=2)}")
        if not report["ok"]:
            problems = [f"{m}: {e}" for m, e in report["failed"].items()] + \
                [f"{n} found twice: {places}" for n, places in report["twice"].items()]
            sys.exit("\n!!! IMPORT CHECK FAILED: " + "; ".join(problems))
        print(f"imports: all {len(report['versions'])} needed distributions import, morph's modules too; "
              f"{report.get('machine')}")


if __name__ == "__main__":
    main()
