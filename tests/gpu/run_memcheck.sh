#!/usr/bin/env bash
# Runs a subset of attnjit_gpu_tests under compute-sanitizer's memcheck tool.
#
#   tests/gpu/run_memcheck.sh [path/to/attnjit_gpu_tests] [extra gtest flags...]
#
# Exits non-zero when memcheck reports an error or a test fails; 77 (skipped) without a GPU.
# ATTNJIT_MEMCHECK_FILTER overrides the gtest filter; COMPUTE_SANITIZER the tool's path.
set -euo pipefail

bin="${1:-}"
if [[ -z "$bin" ]]; then
  for candidate in build/tests/gpu/attnjit_gpu_tests ./attnjit_gpu_tests; do
    if [[ -x "$candidate" ]]; then bin="$candidate"; break; fi
  done
fi
[[ $# -gt 0 ]] && shift
if [[ -z "$bin" || ! -x "$bin" ]]; then
  echo "usage: $0 path/to/attnjit_gpu_tests [gtest flags...]" >&2
  exit 2
fi

sanitizer="${COMPUTE_SANITIZER:-}"
if [[ -z "$sanitizer" ]]; then
  sanitizer="$(command -v compute-sanitizer || true)"
  for dir in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda; do
    if [[ -z "$sanitizer" && -n "$dir" && -x "$dir/bin/compute-sanitizer" ]]; then sanitizer="$dir/bin/compute-sanitizer"; fi
  done
fi
if [[ -z "$sanitizer" ]]; then
  echo "compute-sanitizer not found (set COMPUTE_SANITIZER)" >&2
  exit 2
fi

if ! "$bin" --probe-device; then
  echo "no GPU: memcheck skipped"
  exit 77
fi

# Both families (decode_long and the 8209-key case take the split-KV + reduce path), every layout
# and storage kind, the graph path and the host-side refusals (which must launch nothing). About
# 40 tests; ~15 s on an H100. Plus a few pattern cases whose addressing differs: block masks with
# garbage past each row's count, windowed split-KV, 1-byte fp8 KV with split-KV (and swizzled
# 256-byte rows, and row-by-row copies), skip-softmax.
filter="${ATTNJIT_MEMCHECK_FILTER:-*prefill_mixed*:*decode_batch*:*decode_long*:Targeted/*single_token*:Targeted/*page1_packed*:Targeted/*cross_attention_contig*:Targeted/decode_one_seq_kv8209*:Runtime/RuntimeFlavor.Captured*:RunValidation.*:BlockSparse/*unsorted*:Window/*w500_s0_long*:Fp8/*packed_head_long*:Fp8/*swizzled*:SkipSoftmax/*one_split*:PinnedTiles/*d192x128_swa_sinks_wgmma*:PinnedTiles/*nm2of4_wgmma_bm64*}"

echo "memcheck: $sanitizer on $bin, filter $filter"
# --error-exitcode makes memcheck findings fail the run even when every test passes.
"$sanitizer" --tool memcheck --error-exitcode 86 --print-limit 50 \
  "$bin" --gtest_filter="$filter" --gtest_color=no "$@"
