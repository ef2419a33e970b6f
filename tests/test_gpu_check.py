"""benchmarks/gpu_check.sh, the GPU proof in two device calls, checked where no GPU is: the script parses and offers
both calls and the rehearsal; what it carries is derived from the imports, less the GPU image's packages
(benchmarks/gpu_wheels.py); its import check fails loudly; each call's JSON says how each step ended
(benchmarks/gpu_results.py)."""

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def benchmark_module(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tree(root, files):
    """Write `files` ({relative path: text}) under `root`; return root."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_script_parses_and_offers_the_two_calls_and_the_rehearsal():
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    usage = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert usage.returncode == 2
    for call in ("gpu_check.sh tests", "gpu_check.sh bench", "gpu_check.sh --rehearse", "--fetch-wheels"):
        assert call in usage.stdout, call


def test_a_call_without_the_carried_wheels_stops_at_once_and_says_so(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "WHEELS": str(tmp_path / "no-wheels")}
    done = subprocess.run(["bash", str(SCRIPT), "tests"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1 and "no wheels in" in done.stdout
    assert "no wheels in" in (tmp_path / "out" / "gpu_check-tests.log").read_text()


def test_imports_behind_importorskip_or_an_importerror_handler_are_optional_the_others_needed(tmp_path):
    root = tree(tmp_path, {"tests/conftest.py": "", "morph/__init__.py": "from .part import x\n", "tests/test_a.py": """
import json
import pytest
import yaml
from PIL import Image
from conftest import helper
import morph.part
gradio_client = pytest.importorskip("gradio_client")
try:
    import lpips
except ImportError:
    lpips = None
try:
    from click import echo
except Exception:  # there for other errors: click is still needed
    pass

def test_it():
    import jsonschema.validators
"""})
    needed, optional = benchmark_module("gpu_wheels").imported_modules(root)
    assert needed == {"pytest", "yaml", "PIL", "click", "jsonschema.validators"}
    assert optional == {"gradio_client", "lpips"}


def test_the_carried_wheels_are_what_the_imports_need_less_the_image_one_version_each(tmp_path):
    root = tree(tmp_path, {"tests/test_a.py": "import yaml\nimport pydantic\nimport peft\nimport click\n"})
    image = tree(tmp_path, {"image.txt": "# a test image\npython==3.12.3\npyyaml\nclick==8.0.0\ntyping-extensions\n"
                                         "packaging\npytest-xdist\nexecnet\npeft\nnumpy\npsutil\ntorch\n"
                                         "transformers\ntqdm\naccelerate\nsafetensors\nhuggingface-hub\n"})
    carried = benchmark_module("gpu_wheels").carried("3.12", root, image / "image.txt")
    names = [wheel.split("==")[0] for wheel in carried]
    # pydantic and what it requires that the image lacks; not pyyaml, which the image has
    assert set(names) == {"pydantic", "pydantic-core", "annotated-types", "typing-inspection", "peft", "click",
                          "typing-extensions"}
    assert len(names) == len(set(names))
    assert f"pydantic=={importlib.metadata.version('pydantic')}" in carried  # the version the suite passes with here
    assert "never read" in carried[f"peft=={importlib.metadata.version('peft')}"]  # over the image's: said why
    assert "click>=8.1" in carried[f"click=={importlib.metadata.version('click')}"]  # the image's 8.0 is too old


def test_what_the_gpu_check_carries_today():
    carried = benchmark_module("gpu_wheels").carried()
    names = {wheel.split("==")[0] for wheel in carried}
    assert {"diffusers", "pydantic", "pydantic-core", "jsonschema", "imageio-ffmpeg"} <= names
    assert "imageio-ffmpeg==0.7.0" in carried  # 0.8's wheel is over the carry limit
    image = benchmark_module("gpu_wheels").image_packages()
    assert names & set(image) == {"peft", "typing-extensions"}  # nothing else shadows the image's packages
    assert not names & {"gradio", "gradio-client", "playwright", "mkdocs-material"}  # optional: their tests skip


def test_the_import_check_fails_loudly_naming_each_missing_module(tmp_path):
    root = tree(tmp_path, {"fakepkg/__init__.py": "", "fakepkg/part.py": "import no_such_module_for_the_check\n",
                           "tests/test_a.py": "import no_such_module_for_the_check\n"
                                              "try:\n    import nor_this_one\nexcept ImportError:\n    pass\n"})
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_wheels.py"), "check", "--root", str(root),
                           "--package", "fakepkg", "--json", str(tmp_path / "imports.json")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "IMPORT CHECK FAILED" in done.stderr
    report = json.loads((tmp_path / "imports.json").read_text())
    assert set(report["failed"]) == {"no_such_module_for_the_check", "fakepkg.part"} and not report["ok"]
    assert report["optional_absent"] == ["nor_this_one"]


def test_strangers_are_the_installed_distributions_the_image_does_not_list(tmp_path):
    image = tree(tmp_path, {"image.txt": "python==3.12.3\npytest\n"})
    found = benchmark_module("gpu_wheels").strangers(image / "image.txt")
    assert f"pytest=={pytest.__version__}" not in found
    assert f"pydantic=={importlib.metadata.version('pydantic')}" in found


def junit(path, cases):
    path.write_text(f'<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">{cases}'
                    '</testsuite></testsuites>')
    return path


def test_the_figures_count_passed_failed_and_skipped_tests_and_the_gpu_ones_apart(tmp_path):
    xml = junit(tmp_path / "junit.xml", """
<testcase classname="tests.test_gpu" name="test_a"/>
<testcase classname="tests.test_gpu" name="test_b"><failure message="boom"/></testcase>
<testcase classname="tests.test_gpu" name="test_c"><skipped message="needs a second CUDA GPU"/></testcase>
<testcase classname="tests.test_render" name="test_d"/>
<testcase classname="tests.test_render" name="test_e"><error message="fixture"/></testcase>""")
    assert benchmark_module("gpu_results").test_counts(xml) == {
        "tests_passed": 2, "tests_failed": 2, "tests_skipped": 1,
        "gpu_tests_passed": 1, "gpu_tests_failed": 1, "gpu_tests_skipped": 1,
        "failed": ["tests.test_gpu::test_b", "tests.test_render::test_e"]}


def results(*args):
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_results.py"), *map(str, args)], check=True)


def test_each_step_is_in_the_calls_json_as_it_starts_and_ends_and_a_timed_out_one_says_so(tmp_path):
    call = tmp_path / "gpu-tests.json"
    results("running", call, "imports")
    assert json.loads(call.read_text())["steps"]["imports"]["state"] == "running"  # a call cut off here says so
    (tmp_path / "imports.json").write_text(json.dumps({"python": "3.12.3", "versions": {"torch": "2.11.0"}}))
    results("done", call, "imports", 0, 21.4, "--json", tmp_path / "imports.json", "--limit", 90)
    results("running", call, "gpu_tests")
    xml = junit(tmp_path / "junit-gpu.xml", '<testcase classname="tests.test_gpu" name="test_a"/>')
    results("done", call, "gpu_tests", 124, 240, "--junit", xml, "--limit", 240)
    steps = json.loads(call.read_text())["steps"]
    assert steps["imports"]["state"] == "passed" and steps["imports"]["figures"]["python"] == "3.12.3"
    assert steps["gpu_tests"]["state"] == "timed out" and steps["gpu_tests"]["gpu_tests_passed"] == 1
    assert steps["gpu_tests"]["limit_s"] == 240 and not list(tmp_path.glob("*.partial"))


def test_the_two_calls_make_one_record(tmp_path):
    tests, bench = tmp_path / "gpu-tests.json", tmp_path / "gpu-bench.json"
    tests.write_text(json.dumps({"steps": {
        "imports": {"state": "passed", "figures": {"python": "3.12.3", "versions": {"torch": "2.11.0"}}},
        "gpu_tests": {"state": "passed", "tests_passed": 20, "tests_failed": 0, "gpu_tests_passed": 20},
        "sample": {"state": "passed", "tests_passed": 300, "tests_failed": 1, "gpu_tests_passed": 0}}}))
    bench.write_text(json.dumps({"steps": {"benchmark": {"state": "passed", "figures": {
        "device": "NVIDIA H200", "size": 512, "num_inference_steps": 25, "summary": {"morph_eager_fps": 4.1}}}}}))
    record = benchmark_module("gpu_results").merge(tests, bench)
    assert (record["device"], record["python"], record["morph_eager_fps"]) == ("NVIDIA H200", "3.12.3", 4.1)
    assert (record["tests_passed"], record["tests_failed"], record["gpu_tests_passed"]) == (320, 1, 20)
