"""benchmarks/gpu_check.sh, the GPU proof in one run, checked where no GPU is: the script parses, and its figures
count the tests as pytest's JUnit XML reports them."""

import importlib.util
import subprocess
from pathlib import Path

ROOT = Path(__file__).parents[1]


def gpu_results():
    spec = importlib.util.spec_from_file_location("gpu_results", ROOT / "benchmarks" / "gpu_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_parses():
    done = subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_figures_count_passed_failed_and_skipped_tests_and_the_gpu_ones_apart(tmp_path):
    (tmp_path / "junit.xml").write_text("""<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
<testcase classname="tests.test_gpu" name="test_a"/>
<testcase classname="tests.test_gpu" name="test_b"><failure message="boom"/></testcase>
<testcase classname="tests.test_gpu" name="test_c"><skipped message="needs a second CUDA GPU"/></testcase>
<testcase classname="tests.test_render" name="test_d"/>
<testcase classname="tests.test_render" name="test_e"><error message="fixture"/></testcase>
</testsuite></testsuites>""")
    assert gpu_results().test_counts(tmp_path / "junit.xml") == {
        "tests_passed": 2, "tests_failed": 2, "tests_skipped": 1,
        "gpu_tests_passed": 1, "gpu_tests_failed": 1, "gpu_tests_skipped": 1}
