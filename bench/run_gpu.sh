#!/usr/bin/env bash
# Everything that needs the GPU, in one go: the GPU test suite, a compute-sanitizer memcheck
# subset, attnjit's benchmark and the peers' (PyTorch SDPA cuDNN/flash, FlexAttention) in the
# same run. Logs go to $OUT (default: ./gpu-run).
#
#   bench/run_gpu.sh [BUILD_DIR]
set -uo pipefail
build="${1:-build}"
out="${OUT:-gpu-run}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.draw --format=csv | tee "$out/device.txt"

echo "== GPU tests"
"$build/tests/gpu/attnjit_gpu_tests" --gtest_brief=1 > "$out/gpu_tests.txt" 2>&1
echo "gpu tests exit $?"; grep -E "^\[  (PASSED|FAILED|SKIPPED) " "$out/gpu_tests.txt"

echo "== memcheck subset"
ATTNJIT_MEMCHECK_LOG="$out/memcheck.txt" bash tests/gpu/run_memcheck.sh "$build/tests/gpu/attnjit_gpu_tests" > "$out/memcheck_run.txt" 2>&1
echo "memcheck exit $?"; tail -4 "$out/memcheck_run.txt"

echo "== peers"
PYTHONUNBUFFERED=1 python3 bench/peers/peers.py --json "$out/peers.json" > "$out/peers.txt" 2>&1
echo "peers exit $?"
# The tensor-core floor uses the matrix-product rate the peer script measured in this run.
mma=$(python3 -c "import json;print(json.load(open('$out/peers.json'))['ceilings']['matmul']['tflops'])" 2>/dev/null || echo 737)

echo "== attnjit"
"$build/bench/attnjit_gpu_bench" --mma-tflops "$mma" --json "$out/bench.json" | tee "$out/bench.txt"
tail -25 "$out/peers.txt"
