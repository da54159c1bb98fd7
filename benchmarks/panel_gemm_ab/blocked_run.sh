#!/usr/bin/env bash
# Builds blocked_ab.cpp with the repository's blocked_gemm.cpp and runs it on each shape.
# Needs an AVX2 CPU and $PYTHON (default: python) with torch installed.
#   bash benchmarks/panel_gemm_ab/blocked_run.sh "M N K TA TB THREADS" ...
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
torch_dir=$("${PYTHON:-python}" -c "import os, torch; print(os.path.dirname(torch.__file__))")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
flags=(-O3 -std=c++20 -fopenmp ${ARCH_FLAGS:--mavx2 -mfma -mf16c -DCPU_CAPABILITY=AVX2 -DCPU_CAPABILITY_AVX2}
       -D_GLIBCXX_USE_CXX11_ABI=1 -I"$torch_dir/include" -I"$torch_dir/include/torch/csrc/api/include"
       -I"$repo/csrc/cpu")
g++ "${flags[@]}" "$here/blocked_ab.cpp" "$repo/csrc/cpu/blocked_gemm.cpp" \
    "$repo/csrc/cpu/panel_gemm.cpp" "$repo/csrc/cpu/blas.cpp" \
    "$repo/csrc/cpu/thin_gemm.cpp" -o "$work/ab" \
    -L"$torch_dir/lib" -ltorch_cpu -lc10 -Wl,-rpath,"$torch_dir/lib"
for s in "$@"; do "$work/ab" $s; done
