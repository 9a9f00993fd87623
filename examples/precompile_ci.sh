#!/usr/bin/env bash
# Precompiling a kernel cache in CI, on a machine with no GPU (NVRTC is enough), to ship with a
# deployment: every kernel a model needs at its tensor-parallel size, for each target arch, then
# an integrity check of the file. The runtime opens the result read-only, layered under its local
# cache (attnjit_context_options.readonly_cache_path), and compiles nothing at startup.
#
#   examples/precompile_ci.sh [MODEL] [TP] [ARCHS] [OUT]
#   examples/precompile_ci.sh mimo-v2.5 8 sm_90a,sm_80 kernels.sqlite
set -euo pipefail

model=${1:-mimo-v2.5}
tp=${2:-8}
archs=${3:-sm_90a}
out=${4:-attnjit-kernels.sqlite}
attn_cache=${ATTN_CACHE:-build/tools/attn-cache}

"$attn_cache" precompile --model "$model" --tp "$tp" --arch "$archs" --cache "$out" &&
  "$attn_cache" verify --cache "$out"
