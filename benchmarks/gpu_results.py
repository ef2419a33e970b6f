"""The figures of a benchmarks/gpu_check.sh run in one JSON file: machine, libraries, tests, throughput.

    python benchmarks/gpu_results.py OUT      # reads OUT/junit.xml and OUT/bench.txt, writes OUT/gpu-check.json

Copy a GPU run's file to benchmarks/results/gpu-<date>.json; a --smoke run's figures are the CPU's.
"""

import json
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path


def test_counts(junit: Path) -> dict:
    """Passed, failed and skipped tests, all and those of tests/test_gpu.py, from pytest's JUnit XML."""
    counts = {"tests_passed": 0, "tests_failed": 0, "tests_skipped": 0, "gpu_tests_passed": 0, "gpu_tests_failed": 0,
              "gpu_tests_skipped": 0}
    for case in ElementTree.parse(junit).iter("testcase"):
        outcome = "failed" if case.find("failure") is not None or case.find("error") is not None else \
            "skipped" if case.find("skipped") is not None else "passed"
        counts[f"tests_{outcome}"] += 1
        if case.get("classname", "").endswith("test_gpu"):
            counts[f"gpu_tests_{outcome}"] += 1
    return counts


def main():
    out = Path(sys.argv[1])
    import diffusers
    import torch

    bench = json.loads((out / "bench.txt").read_text().strip().splitlines()[-1])
    record = {"device": bench["device"], "torch": torch.__version__, "cuda": torch.version.cuda,
              "diffusers": diffusers.__version__, **test_counts(out / "junit.xml"),
              "size": bench["size"], "num_inference_steps": bench["num_inference_steps"], **bench["summary"]}
    (out / "gpu-check.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
