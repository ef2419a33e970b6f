#!/usr/bin/env bash
# The GPU proof in one run: install the carried wheels (offline), say what the machine is, run the whole test suite
# with CUDA visible (the `gpu` tests included), then the SD-1.5-shaped benchmark. Everything it prints also goes to
# $OUT/gpu_check.log; the figures to $OUT/gpu-check.json (benchmarks/gpu_results.py). About 8 minutes on an H200.
#
#   bash benchmarks/gpu_check.sh --fetch-wheels   # on a connected machine: the wheels the GPU machine lacks, in wheels/
#   bash benchmarks/gpu_check.sh --smoke          # the same steps on the CPU at toy size: try the script itself
#   bash benchmarks/gpu_check.sh                  # on the GPU machine, from the repo root, wheels/ beside it
#
# A smoke run's figures are the CPU's: never record them as the GPU's.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-gpu}
# what the render path and the core tests need that the GPU machine's image (Python 3.12, torch, transformers, peft,
# matplotlib, hypothesis, pytest) lacks, or has too old; imageio-ffmpeg 0.5.1, since newer wheels are too large to carry
WHEELS="diffusers==0.42.1 imageio-ffmpeg==0.5.1 importlib_metadata pydantic==2.14.4 pydantic-core==2.50.5
annotated-types typing-inspection jsonschema jsonschema-specifications referencing rpds-py peft==0.21.2"

if [ "$mode" = --fetch-wheels ]; then
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux2010_x86_64 -d wheels $WHEELS
  du -sh wheels
  exit
fi

OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1

step() { echo; echo "== $* ($(date +%T))"; }

step "wheels"
if [ "$mode" != --smoke ] && [ -d wheels ]; then  # beside the machine's own packages, ahead of them
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site wheels/*.whl \
    || exit
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1  # morph from this tree, not installed

step "machine"
python3 - <<'EOF'
import torch, diffusers, transformers
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, diffusers {diffusers.__version__}, "
      f"transformers {transformers.__version__}")
print("GPU:", torch.cuda.get_device_name() if torch.cuda.is_available() else "none (torch sees no CUDA)")
EOF

step "tests"
tests=() workers=()
if [ "$mode" = --smoke ]; then
  tests=(tests/test_gpu.py tests/test_tiny_run.py tests/test_lora.py)  # a sample: the whole suite is for the GPU
elif python3 -c "import xdist" 2>/dev/null; then
  workers=(-n 8)  # pytest-xdist, in the GPU image: the suite in a few minutes on 16 cores (it passes under -n)
  export OMP_NUM_THREADS=2
fi
python3 -m pytest -q -p no:cacheprovider --junitxml="$OUT/junit.xml" "${workers[@]}" "${tests[@]}"
unset OMP_NUM_THREADS

step "benchmark"
if [ "$mode" = --smoke ]; then
  bench=(--smoke --device cpu --size 64 --steps 2 --frames 6)
else
  bench=(--frames 48)
fi
python3 benchmarks/bench_render.py --sd15-shaped --cache "$OUT/sd15-shaped" "${bench[@]}" | tee "$OUT/bench.txt"

step "figures"
python3 benchmarks/gpu_results.py "$OUT" && cat "$OUT/gpu-check.json"
rm -rf "$OUT/sd15-shaped"  # 2 GB of random weights
