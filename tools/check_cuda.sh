#!/usr/bin/env bash
# Compile-checks the CUDA code on machines without a GPU (`make check-cuda`):
#  1. every csrc/cuda/*.cu with nvcc alone (they include no torch headers), for sm_80 and sm_90;
#  2. where torch is importable, the C++ that only CUDA builds compile (csrc/cuda/*.cpp, and ops.cpp
#     with SWISHKERNELS_WITH_CUDA) against torch's headers, through nvcc for the CUDA include path.
# Without nvcc it prints that it is skipped and exits 0; any compile error exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."

find_nvcc() {
  if command -v nvcc >/dev/null 2>&1; then
    command -v nvcc
    return
  fi
  local dir
  for dir in "${CUDA_HOME:-}" /usr/local/cuda; do
    if [ -n "$dir" ] && [ -x "$dir/bin/nvcc" ]; then
      echo "$dir/bin/nvcc"
      return
    fi
  done
}

NVCC=$(find_nvcc)
if [ -z "$NVCC" ]; then
  echo "check_cuda: skipped, nvcc not found (looked in PATH, \$CUDA_HOME/bin, /usr/local/cuda/bin)"
  exit 0
fi
echo "check_cuda: $NVCC ($("$NVCC" --version | grep -o 'release [0-9.]*'))"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The defines are those torch's CUDAExtension passes, which take away __half's implicit conversions.
torch_nvcc_flags=(-D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__
  -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__ --expt-relaxed-constexpr)
for cu in csrc/cuda/*.cu; do
  for arch in 80 90; do
    "$NVCC" -c -std=c++17 -O3 -I csrc "${torch_nvcc_flags[@]}" -Xcompiler -Wall \
      -gencode "arch=compute_$arch,code=sm_$arch" "$cu" -o "$tmp/$(basename "$cu" .cu).sm_$arch.o"
    echo "  compiled $cu for sm_$arch"
  done
done

PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
if ! torch_includes=$("$PYTHON" -c \
    'from torch.utils.cpp_extension import include_paths; print("\n".join(include_paths()))' \
    2>/dev/null); then
  echo "check_cuda: torch not importable with $PYTHON, CUDA glue not checked"
  exit 0
fi
mapfile -t torch_dirs <<<"$torch_includes"
include_flags=()
have_cmake_macros=
for dir in "${torch_dirs[@]}"; do
  include_flags+=(-I "$dir")
  if [ -f "$dir/c10/cuda/impl/cuda_cmake_macros.h" ]; then have_cmake_macros=1; fi
done
# A CPU-only torch ships c10/cuda's headers without this generated one-liner; stand in for it.
if [ -z "$have_cmake_macros" ]; then
  mkdir -p "$tmp/include/c10/cuda/impl"
  echo '#define C10_CUDA_BUILD_SHARED_LIBS' >"$tmp/include/c10/cuda/impl/cuda_cmake_macros.h"
  include_flags+=(-I "$tmp/include")
fi
for cpp in csrc/cuda/*.cpp csrc/ops.cpp; do
  "$NVCC" -c -std=c++20 -DSWISHKERNELS_WITH_CUDA -I csrc "${include_flags[@]}" \
    -Xcompiler -Wall,-Wno-unknown-pragmas "$cpp" -o "$tmp/$(basename "$cpp" .cpp).o"
  echo "  compiled $cpp with SWISHKERNELS_WITH_CUDA"
done
echo "check_cuda: all compiled"
