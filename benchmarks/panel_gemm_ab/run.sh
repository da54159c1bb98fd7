#!/usr/bin/env bash
# Builds ab.cpp with each given copy of panel_gemm.cpp (default: the repository's) in a
# namespace of its own and runs it on the listed shapes. Needs torch installed (headers,
# libtorch_cpu with MKL) and an AVX2 CPU.
#   bash benchmarks/panel_gemm_ab/run.sh [variant.cpp ...] [-- "M N K" ...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
torch_dir=$(python -c "import os, torch; print(os.path.dirname(torch.__file__))")
variants=() shapes=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do variants+=("$(realpath "$1")"); shift; done
[ $# -gt 0 ] && shift
shapes=("$@")
[ ${#variants[@]} -eq 0 ] && variants=("$repo/csrc/cpu/panel_gemm.cpp")
[ ${#shapes[@]} -eq 0 ] && shapes=("1 1024 256" "8 1024 256" "16 1024 256" "64 2048 512" "64 1024 1024" "256 1024 512")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
flags=(-O3 -std=c++17 -fopenmp ${ARCH_FLAGS:--mavx2 -mfma -mf16c -DCPU_CAPABILITY=AVX2 -DCPU_CAPABILITY_AVX2}
       -D_GLIBCXX_USE_CXX11_ABI=1 -I"$torch_dir/include" -I"$repo/csrc/cpu")
decl="" table="" objs=()
for i in "${!variants[@]}"; do
  g++ "${flags[@]}" -Dfused_rnn=v$i -c "${variants[$i]}" -o "$work/v$i.o"
  objs+=("$work/v$i.o")
  decl+="DECLARE(v$i) "
  table+="{\"$i:$(basename "${variants[$i]}" .cpp)\", v$i::cpu::panel_buffer_size, v$i::cpu::panel_pack, v$i::cpu::panel_gemm},"
done
sed -e "s|^VARIANT_DECLARATIONS.*|$decl|" -e "s|VARIANT_TABLE|$table|" "$here/ab.cpp" > "$work/ab.cpp"
g++ "${flags[@]}" "$work/ab.cpp" "${objs[@]}" -o "$work/ab" -L"$torch_dir/lib" -ltorch_cpu -lc10 \
    -Wl,-rpath,"$torch_dir/lib"
for s in "${shapes[@]}"; do "$work/ab" $s; done
