#!/usr/bin/env bash
# Sets up attnjit on a Debian or Ubuntu machine: installs the build dependencies (apt, only those
# missing), finds the CUDA toolkit, then configures and builds a Release tree in build/.
#
#   scripts/setup.sh         install and build
#   scripts/setup.sh main    install, build, then attn-tune --model mimo-v2.5 --tp 8 (GPU), else
#                            attn-cache precompile for sm_90a with default configs (no GPU)
#   scripts/setup.sh test    install, build, then the test suite (GPU tests skip without a GPU)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

packages=(build-essential cmake libsqlite3-dev sqlite3 libfmt-dev nlohmann-json3-dev libcli11-dev
          libgtest-dev libgmock-dev libbenchmark-dev llvm-14-tools libxxhash-dev)

die() {
  echo "setup: error: $*" >&2
  exit 1
}

install_packages() {
  if ! command -v dpkg-query >/dev/null; then
    echo "setup: not a Debian-based system: make sure these (or their equivalents) are installed: ${packages[*]}" >&2
    return
  fi
  local missing=() p
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    echo "setup: build dependencies already installed"
    return
  fi
  echo "setup: installing ${missing[*]}"
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "not root and no sudo: install ${missing[*]} first"
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}

# The toolkit root: $CUDA_HOME, else /usr/local/cuda, else the one that holds the nvcc on PATH.
# Only its headers and libnvrtc are used (the driver is opened at run time when there is a GPU).
find_cuda() {
  local candidates=("${CUDA_HOME:-}" /usr/local/cuda) nvcc root
  if nvcc=$(command -v nvcc); then candidates+=("$(dirname "$(dirname "$(readlink -f "$nvcc")")")"); fi
  for root in "${candidates[@]}"; do
    if [ -n "$root" ] && [ -f "$root/include/cuda.h" ] && [ -f "$root/include/nvrtc.h" ]; then
      echo "$root"
      return
    fi
  done
  die "no CUDA toolkit found (looked at \$CUDA_HOME, /usr/local/cuda and nvcc on PATH): install one, or set
  CUDA_HOME to its root (the directory with include/cuda.h, include/nvrtc.h and lib64/libnvrtc.so)"
}

build() {
  local cuda
  cuda=$(find_cuda)
  echo "setup: CUDA toolkit at $cuda"
  export CUDA_HOME=$cuda
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCUDAToolkit_ROOT="$cuda"
  cmake --build build -j"$(nproc)"
}

command=${1:-build}
case "$command" in
  build | main | test) ;;
  -h | --help | help)
    sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "usage: scripts/setup.sh [main|test]" >&2
    exit 2
    ;;
esac

install_packages
build
case "$command" in
  main)
    # Tune where a GPU is present; otherwise precompile the default tile configs for sm_90a (the
    # CI use). attn-tune itself probes the driver, so this check only picks which job runs.
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
      echo "GPU found: tuning mimo-v2.5 at TP 8 on it"
      build/tools/attn-tune --model mimo-v2.5 --tp 8
    else
      cache="${ATTNJIT_CACHE:-build/mimo-v2.5-tp8.sqlite}"
      echo "no GPU found: precompiling mimo-v2.5 at TP 8 for sm_90a with default tile configs into $cache"
      echo "(tuning needs a GPU; run this again on one, or see attn-cache precompile --help)"
      build/tools/attn-cache precompile --model mimo-v2.5 --tp 8 --arch sm_90a --cache "$cache"
    fi
    ;;
  test) ctest --test-dir build --output-on-failure -j2 ;;
esac
