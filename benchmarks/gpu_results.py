"""The figures of benchmarks/gpu_check.sh, one JSON file per device call, written as the call goes.

    python benchmarks/gpu_results.py running CALL.json STEP              # STEP has started
    python benchmarks/gpu_results.py done CALL.json STEP RC SECONDS [--junit X] [--json Y] [--limit S]
    python benchmarks/gpu_results.py merge TESTS.json BENCH.json         # one record for benchmarks/results/

A step killed by its `timeout` (RC 124 or 137) is recorded as timed out, with what its JUnit XML or JSON file held.
A call cut off by the device tool itself leaves its last step 'running'. Copy a GPU run's merged record to
benchmarks/results/gpu-<date>.json; a rehearsal's figures are the CPU's and are never recorded as a GPU's.
"""

import argparse
import datetime
import json
import os
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path


def test_counts(junit: Path) -> dict:
    """Passed, failed and skipped tests, all and those of tests/test_gpu.py, from pytest's JUnit XML; and the
    failed ones' names."""
    counts = {"tests_passed": 0, "tests_failed": 0, "tests_skipped": 0, "gpu_tests_passed": 0, "gpu_tests_failed": 0,
              "gpu_tests_skipped": 0, "failed": []}
    for case in ElementTree.parse(junit).iter("testcase"):
        outcome = "failed" if case.find("failure") is not None or case.find("error") is not None else \
            "skipped" if case.find("skipped") is not None else "passed"
        counts[f"tests_{outcome}"] += 1
        if case.get("classname", "").endswith("test_gpu"):
            counts[f"gpu_tests_{outcome}"] += 1
        if outcome == "failed":
            counts["failed"].append(f"{case.get('classname')}::{case.get('name')}")
    return counts


def update(path: Path, step: str, record: dict) -> None:
    """Set one step's record in the call's JSON file; written whole to a new file, then renamed over the old one,
    so that the file is complete whenever the call is cut off."""
    data = json.loads(path.read_text()) if path.exists() else {"steps": {}}
    data["steps"][step] = record
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(partial, path)


def now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def finished(rc: int, seconds: float, junit: Path | None = None, figures: Path | None = None,
             limit: float | None = None) -> dict:
    """A step's record: how it ended, how long it took, and what it measured (JUnit counts, a JSON file's figures)."""
    state = "passed" if rc == 0 else "timed out" if rc in (124, 137) else "failed"
    record = {"state": state, "rc": rc, "seconds": round(seconds, 1), "ended": now()}
    if limit:
        record["limit_s"] = limit
    if junit and junit.exists():
        record.update(test_counts(junit))
    if figures and figures.exists():
        record["figures"] = json.loads(figures.read_text())
    return record


def merge(tests: Path, bench: Path) -> dict:
    """The two calls' records in one, with the fields a results file has kept (device, versions, test counts,
    throughput) on top."""
    a, b = (json.loads(p.read_text()) for p in (tests, bench))
    machine = a["steps"].get("imports", {}).get("figures", {})
    counts = {}
    for name in ("gpu_tests", "sample"):
        for key, value in a["steps"].get(name, {}).items():
            if key.startswith(("tests_", "gpu_tests_")):
                counts[key] = counts.get(key, 0) + value
    figures = b["steps"].get("benchmark", {}).get("figures", {})
    return {"device": figures.get("device"), "python": machine.get("python"),
            "versions": machine.get("versions"), **counts, "size": figures.get("size"),
            "num_inference_steps": figures.get("num_inference_steps"), **figures.get("summary", {}),
            "calls": {"tests": a, "bench": b}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    running = sub.add_parser("running")
    done = sub.add_parser("done")
    for p in (running, done):
        p.add_argument("call", type=Path)
        p.add_argument("step")
    done.add_argument("rc", type=int)
    done.add_argument("seconds", type=float)
    done.add_argument("--junit", type=Path)
    done.add_argument("--json", type=Path, help="a JSON file of figures the step wrote")
    done.add_argument("--limit", type=float, help="the step's timeout, in seconds")
    merging = sub.add_parser("merge")
    merging.add_argument("tests", type=Path)
    merging.add_argument("bench", type=Path)
    args = parser.parse_args()
    if args.what == "running":
        update(args.call, args.step, {"state": "running", "started": now()})
    elif args.what == "done":
        update(args.call, args.step, finished(args.rc, args.seconds, args.junit, args.json, args.limit))
    else:
        json.dump(merge(args.tests, args.bench), sys.stdout, indent=2)
        print()


if __name__ == "__main__":
    main()
