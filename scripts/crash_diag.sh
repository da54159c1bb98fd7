#!/usr/bin/env bash
# What to learn from a test that killed its process (a segfault, an abort) on the GPU machine,
# where there is no time to debug by hand: called by gpu_check.sh with the crashed tests.
#
#   scripts/crash_diag.sh OUT_DIR NODEID...
#
# A NODEID may be cut short (suite_until_done.sh keeps it up to its first space): each step runs
# the whole test function it names, stopping at the first failure. For each (at most two), into
# OUT_DIR/crash_<n>.log:
#   1. the test alone, to see whether it crashes without the tests before it;
#   2. the test under cuda-gdb (or gdb), for the native backtrace, the faulting instructions
#      and registers: which function of ours, or of torch, and which instruction;
# and once, into OUT_DIR/crash_isa.log, each test again against a CPU-only copy of the
# extension built with FUSED_RNN_CPU_CAPABILITY=avx2 (no -mavx512* flags): a crash that goes
# away there points at the AVX-512 build, one that stays at the code or the compiler.
# Environment: PYTHON (default python3). Exits 0: the findings are in the logs.
set -u
cd "$(dirname "$0")/.."
OUT_DIR="$1"; shift
PY="${PYTHON:-python3}"
DBG="$(command -v gdb || command -v cuda-gdb || ls /usr/local/cuda/bin/cuda-gdb 2>/dev/null | head -n 1)"
n=0
tests=()
for node in "$@"; do  # one entry per test function, however many of its cases crashed
  fn="${node%%\[*}"
  [[ " ${tests[*]} " == *" $fn "* ]] || tests+=("$fn")
done
for node in "${tests[@]}"; do
  n=$((n + 1)); (( n > 2 )) && break
  log="$OUT_DIR/crash_$n.log"
  {
    echo "== $node alone"
    timeout 120 "$PY" -X faulthandler -m pytest -x -q -p no:cacheprovider "$node" 2>&1 | tail -n 40
    echo "exit: ${PIPESTATUS[0]}"
    if [ -n "$DBG" ]; then
      echo "== $node under $DBG"
      timeout 240 "$DBG" -q -batch -ex "set pagination off" -ex run -ex "bt 30" \
        -ex 'x/12i $pc-24' -ex "info registers rip rsp rbp rdi rsi rdx rcx" \
        -ex "info sharedlibrary fused_rnn" \
        --args "$PY" -m pytest -x -q -p no:cacheprovider "$node" 2>&1 \
        | grep -v -E "^\[(New Thread|Thread .* exited|Detaching)" | tail -n 120
    else
      echo "no gdb or cuda-gdb here: no native backtrace"
    fi
  } > "$log" 2>&1
done

# The same tests against an AVX2 build of the CPU code, in a copy of the tree.
copy="$(mktemp -d)"
git ls-files -z | xargs -0 -I{} cp --parents {} "$copy" 2>/dev/null || cp -r . "$copy"
{
  echo "== CPU-only build with FUSED_RNN_CPU_CAPABILITY=avx2 in $copy"
  (cd "$copy" && FUSED_RNN_CUDA=0 FUSED_RNN_CPU_CAPABILITY=avx2 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
     timeout 300 "$PY" setup.py build_ext --inplace > build_avx2.log 2>&1; echo "build exit: $?"; \
     tail -n 3 build_avx2.log)
  for node in "${tests[@]}"; do
    echo "== $node against the avx2 build"
    (cd "$copy" && PYTHONPATH="$copy" timeout 120 "$PY" -X faulthandler -m pytest -x -q \
       -p no:cacheprovider "$node" 2>&1 | tail -n 15; echo "exit: ${PIPESTATUS[0]}")
  done
} > "$OUT_DIR/crash_isa.log" 2>&1
rm -rf "$copy"
exit 0
