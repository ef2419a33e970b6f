#!/usr/bin/env bash
# The GPU proof in two device calls, each inside 8 minutes: every step runs under `timeout`, the limits adding up to
# 8 minutes a call, and each call writes its JSON ($OUT/gpu-<call>.json, benchmarks/gpu_results.py) step by step,
# so that a call cut off still says what ran. Everything printed also goes to $OUT/gpu_check-<call>.log.
#
#   bash benchmarks/gpu_check.sh --fetch-wheels  # here, connected: wheels/, what the GPU image lacks (gpu_wheels.py)
#   bash benchmarks/gpu_check.sh tests           # call 1: wheels, imports, the CUDA tests, a sample of the suite
#   bash benchmarks/gpu_check.sh bench           # call 2: wheels, imports, the SD-1.5-shaped benchmark
#   bash benchmarks/gpu_check.sh --rehearse [PYTEST ARGS]  # here: both calls in a venv holding the image's share
#
# On the GPU machine: run(command="bash benchmarks/gpu_check.sh tests", carry=["wheels"], timeout_s=570), then the
# same with bench; `python benchmarks/gpu_results.py merge` makes the record for benchmarks/results/ of their JSON.
#
# Estimates (docs/development.md, "The GPU check", says what each part is measured from):
#   tests: wheels 10 s, imports 30 s, tests/test_gpu.py alone 2.3-3.8 min (3 cold compiles of a tiny model, at most
#          the 64 s SD 1.5's took on an H200), the sample under -n 8 about 1.5 min: 4.3-6 min
#   bench: wheels 10 s, imports 30 s, the benchmark at 48 frames with one compiled row about 4 min: about 4.6 min
#
# --rehearse: a clean venv under /tmp/morph-rehearsal with only what the GPU image holds of what morph and its suite
# could import (torch 2.13.0's CPU build standing in for the image's CUDA one), the carried wheels (fetched for this
# Python, the same names and versions) installed as the GPU machine installs them, then both calls' steps, the CUDA
# tests skipping, the sample replaced by the whole suite (or PYTEST ARGS, e.g. --collect-only -q) and the benchmark
# at the tiny model's shapes on the CPU. Run it from the development venv. Its figures are the CPU's: never record
# them as the GPU's.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
shift || true

SITE=${SITE:-/tmp/site}    # the carried wheels go here (pip --target), on PYTHONPATH after this tree
WHEELS=${WHEELS:-wheels}
CACHE=/tmp/morph-sd15-shaped  # 2 GB of random weights: under /tmp, never under $OUT, whose files come back
WORKERS=(-n 8)          # pytest-xdist, in the GPU image: 16 cores
# the sample of the suite that call 1 runs beside the CUDA tests: what meets the image's own packages (ffmpeg, peft,
# torchrun, the goldens, the CLI's quiet libraries) and the tests of this check
SAMPLE=(tests/test_delivery.py tests/test_platform_files.py tests/test_writer.py tests/test_lora.py
        tests/test_resume.py tests/test_golden.py tests/test_toy.py tests/test_cli.py tests/test_half_precision.py
        tests/test_gpu_check.py)
BENCH=(--frames 48)
SAMPLE_S=120 BENCH_S=390  # the two longest steps' limits (the rehearsal's whole suite on 2 cores takes longer)
call=

step() { echo; echo "== $* ($(date +%T))"; }

timed() {  # timed NAME LIMIT_S [--junit X | --json Y] -- COMMAND...: one step under `timeout`, recorded in the JSON
  local name=$1 limit=$2 started=$SECONDS rc
  shift 2
  local extra=()
  while [ "$1" != -- ]; do extra+=("$1"); shift; done
  shift
  step "$name (at most ${limit} s)"
  python3 benchmarks/gpu_results.py running "$JSON" "$name"
  timeout -s INT -k 45 "$limit" "$@"  # INT: pytest still writes its JUnit XML, bench_render its rows so far
  rc=$?
  python3 benchmarks/gpu_results.py done "$JSON" "$name" "$rc" "$((SECONDS - started))" --limit "$limit" "${extra[@]}"
  [ "$rc" = 0 ] || echo "!!! $name: exit $rc$([ "$rc" = 124 ] && echo ", stopped at its ${limit} s limit")"
  return "$rc"
}

begin() {  # begin CALL: the output folder, the log, the wheels beside the machine's own packages, the imports
  call=$1
  OUT=${OUT:-$(mktemp -d)}
  mkdir -p "$OUT"
  JSON=$OUT/gpu-$call.json
  rm -f "$JSON"
  exec > >(tee "$OUT/gpu_check-$call.log") 2>&1
  local tee=$!
  # at the call's end (or its exit on a failed step) tee writes the log's last lines before the folder comes back
  trap "exec >&- 2>&-; wait $tee" EXIT
  [ -n "$(ls "$WHEELS"/*.whl 2>/dev/null)" ] || {
    echo "!!! no wheels in $WHEELS: run 'bash benchmarks/gpu_check.sh --fetch-wheels' first and carry them"; exit 1; }
  timed wheels 45 -- python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEELS"/*.whl || exit
  # morph from this tree (not installed), the carried wheels next, then whatever the machine already had there
  export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
  timed imports 120 --json "$OUT/imports.json" -- python3 benchmarks/gpu_wheels.py check --json "$OUT/imports.json" \
    || exit
}

tests_call() {  # tests_call [PYTEST ARGS for the sample]
  begin tests
  local sample=("${SAMPLE[@]}")
  [ $# -gt 0 ] && sample=("$@")
  # the CUDA tests alone first: batch_size: auto reads the GPU's free memory, which other workers would take
  timed gpu_tests 270 --junit "$OUT/junit-gpu.xml" -- python3 -m pytest -q -p no:cacheprovider -m gpu \
    --junitxml="$OUT/junit-gpu.xml" tests/test_gpu.py
  timed sample "$SAMPLE_S" --junit "$OUT/junit-sample.xml" -- env OMP_NUM_THREADS=2 python3 -m pytest -q \
    -p no:cacheprovider -m "not gpu" "${WORKERS[@]}" --junitxml="$OUT/junit-sample.xml" "${sample[@]}"
}

bench_call() {
  begin bench
  timed benchmark "$BENCH_S" --json "$OUT/bench.json" -- python3 benchmarks/bench_render.py --sd15-shaped \
    --cache "$CACHE" --one-compiled-row --json "$OUT/bench.json" "${BENCH[@]}"
}

rehearse() {  # rehearse [PYTEST ARGS]: both calls here, in a venv holding only the image's share
  local home=/tmp/morph-rehearsal version
  version=$(python3 -c 'import platform; print(platform.python_version())')
  mkdir -p "$home"
  python3 benchmarks/gpu_wheels.py image-share --python-version "$version" >"$home/share.new" || exit
  python3 benchmarks/gpu_wheels.py fetch "$home/wheels" --python-version "$version" || exit
  if ! cmp -s "$home/share.new" "$home/venv/share.txt"; then
    rm -rf "$home/venv"
    "$(python3 -c 'import sys; print(sys._base_executable)')" -m venv "$home/venv" || exit
    # the CPU build of torch that lies on this disk first, so that no requirement below fetches a CUDA build
    "$home/venv/bin/python3" -m pip install -q torch==2.13.0 || exit
    # each without its own requirements: the list holds them, and a newer release's would bring what the image lacks
    "$home/venv/bin/python3" -m pip install -q --no-deps -r "$home/share.new" || exit
    cp "$home/share.new" "$home/venv/share.txt"
  fi
  env -u PYTHONPATH "$home/venv/bin/python3" benchmarks/gpu_wheels.py strangers || exit
  env -u PYTHONPATH "$home/venv/bin/python3" -m pip check  # the image's packages among themselves: a note, no stop
  export PATH="$home/venv/bin:$PATH"
  unset PYTHONPATH VIRTUAL_ENV
  SITE=$home/site WHEELS=$home/wheels CACHE=$home/tiny-shaped WORKERS=()
  BENCH=(--smoke --device cpu --size 64 --steps 2 --frames 6) SAMPLE_S=7200 BENCH_S=600
  rm -rf "$SITE" "$home/out"
  export OUT=$home/out
  [ $# -gt 0 ] || set -- tests
  (tests_call "$@")
  (bench_call)
  echo "rehearsal: $OUT"
}

main() {
  case $mode in
    --fetch-wheels) python3 benchmarks/gpu_wheels.py fetch "$WHEELS" && du -sh "$WHEELS" ;;
    tests) tests_call "$@" ;;
    bench) bench_call ;;
    --rehearse) rehearse "$@" ;;
    *) sed -n '2,13p' "$0"; exit 2 ;;
  esac
}

main "$@"; exit  # on one line: bash has read all of it before the rehearsal's long run, so the file may change
