#!/usr/bin/env bash
# One-command GPU verification of fused_rnn, for a machine with an NVIDIA GPU and no
# network: builds the extension for the local GPU arch, runs the whole test suite, runs the
# benchmark against cuDNN, runs compute-sanitizer (memcheck, racecheck, synccheck) over a
# small CUDA workload, diagnoses any test that crashed its process (crash_diag.sh), runs the
# CUDA tests with each forward-step path forced, then more benchmark tables, and writes every
# log plus a results table to the output folder.
#
#   scripts/gpu_check.sh [OUT_DIR]      (default: $OUT, else ./gpu_check_out)
#
# Environment: PYTHON (default python3), GPU_CHECK_BUDGET_S (total seconds, default 570:
# each stage gets what is left, so the whole run ends within ~10 minutes), MAX_JOBS.
# The summary table is printed last; the exit status is non-zero if any stage failed.
set -u
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-$PWD/gpu_check_out}}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
PY="${PYTHON:-python3}"
# The in-place build lives in this tree: scripts/*.py import fused_rnn from here.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
BUDGET="${GPU_CHECK_BUDGET_S:-570}"
START=$(date +%s)
RESULTS="$OUT_DIR/results.md"
: > "$OUT_DIR/summary.tsv"

remaining() { echo $(( BUDGET - ($(date +%s) - START) )); }

# run_stage NAME CAP_SECONDS LOGFILE CMD...: runs CMD with a time limit of
# min(CAP, time left), logs its output, records status, seconds and a detail line.
run_stage() {
  local name="$1" cap="$2" log="$3"; shift 3
  local left; left=$(remaining)
  local limit=$(( cap < left ? cap : left ))
  local t0; t0=$(date +%s)
  local status
  if (( limit < 10 )); then
    echo "skipped: out of time budget" > "$log"
    status="SKIP (no time left)"
  else
    echo "== $name (limit ${limit}s): $*" | tee -a "$OUT_DIR/gpu_check.log"
    timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1
    local rc=$?
    if (( rc == 0 )); then status="PASS"
    elif (( rc == 124 || rc == 137 )); then status="FAIL (timed out after ${limit}s)"
    else status="FAIL (exit $rc)"; fi
  fi
  local secs=$(( $(date +%s) - t0 ))
  local detail; detail="$(stage_detail "$name" "$log")"
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$secs" "$detail" >> "$OUT_DIR/summary.tsv"
  echo "   -> $status (${secs}s) $detail" | tee -a "$OUT_DIR/gpu_check.log"
}

stage_detail() {
  local name="$1" log="$2"
  case "$name" in
    tests*) grep -E "^(=+ )?[0-9]+ (passed|failed)|passed|failed|error" "$log" | tail -n 1 \
              | sed 's/=//g;s/^ *//;s/ *$//' ;;
    sanitizer*) grep -E "ERROR SUMMARY|RACECHECK SUMMARY|sanitize case" "$log" | tr '\n' ' ' ;;
    bench*) local md="$OUT_DIR/$(basename "$log" .log).md"
            [ -f "$md" ] && echo "table: $(basename "$md")" || tail -n 1 "$log" ;;
    *) tail -n 1 "$log" | cut -c1-120 ;;
  esac
}

# ------------------------------------------------------------------------ environment
{
  echo "date: $(date -u)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
  command -v nvcc >/dev/null && nvcc --version | tail -n 2
  "$PY" -c "import sys, torch; print('python', sys.version.split()[0]); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version()); print('gpu', torch.cuda.get_device_name(0), 'capability', torch.cuda.get_device_capability(0))"
  "$PY" -c "import torch.utils.cpp_extension as c; print('ninja', c.is_ninja_available())"
  # The host side matters too: a CPU-only crash was seen on one of these machines (GPU-RUNS.md).
  echo "c++: $(command -v "${CXX:-c++}") $("${CXX:-c++}" --version 2>&1 | head -n 1)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores," \
       "$(grep -m1 -o -w 'avx512f' /proc/cpuinfo || echo 'no avx512f')"
} > "$OUT_DIR/env.txt" 2>&1
cat "$OUT_DIR/env.txt"

ARCH="$("$PY" -c "import torch; c = torch.cuda.get_device_capability(0); print('%d.%d' % c)" 2>/dev/null)"
if [ -z "$ARCH" ]; then
  echo "gpu_check: torch sees no CUDA GPU (see $OUT_DIR/env.txt)" | tee -a "$OUT_DIR/gpu_check.log"
  printf 'environment\tFAIL (no CUDA GPU visible to torch)\t0\t\n' >> "$OUT_DIR/summary.tsv"
fi

# -------------------------------------------------------------------------------- build
# Without ninja, torch's BuildExtension compiles one file at a time (MAX_JOBS is ignored):
# the nvcc files alone then take several minutes, so give the build more of the budget.
BUILD_CAP=240
"$PY" -c "import sys, torch.utils.cpp_extension as c; sys.exit(not c.is_ninja_available())" \
  2>/dev/null || BUILD_CAP=360
if [ -n "$ARCH" ]; then
  run_stage "build (sm_${ARCH/./})" "$BUILD_CAP" "$OUT_DIR/build.log" \
    env TORCH_CUDA_ARCH_LIST="$ARCH" FUSED_RNN_CUDA=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    "$PY" setup.py build_ext --inplace
  "$PY" -c "import fused_rnn; print(fused_rnn.build_info())" >> "$OUT_DIR/build.log" 2>&1
  # Registers, stack and spills of our kernels (local memory means a spilled array).
  command -v cuobjdump >/dev/null && for o in build/temp*/csrc/cuda/*.o; do
    cuobjdump --dump-resource-usage "$o" 2>/dev/null | grep -A1 "Function.*fused_rnn" \
      | grep -oE "Function [^:]+|REG:[0-9]+|STACK:[0-9]+|LOCAL:[0-9]+" | paste - - - - \
      | cut -c1-200
  done > "$OUT_DIR/kernel_resources.txt"
fi
BUILT=0
grep -q "^build.*PASS" "$OUT_DIR/summary.tsv" && BUILT=1

# -------------------------------------------------------------------------------- tests
if (( BUILT )); then
  CUDA_TESTS=$(ls tests/test_cuda*.py 2>/dev/null | tr '\n' ' ')
  if "$PY" -c "import pytest" 2>/dev/null; then
    # Every test, the CPU ones too (the CUDA ones run on the GPU here), carried on past a test
    # that kills the process; such tests are listed in crashed.txt and diagnosed below.
    run_stage "tests (all)" 240 "$OUT_DIR/tests.log" bash scripts/suite_until_done.sh "$OUT_DIR"
  else
    echo "pytest is not installed: running the CUDA tests with scripts/mini_pytest.py" \
      | tee -a "$OUT_DIR/gpu_check.log"
    run_stage "tests (CUDA, mini runner)" 180 "$OUT_DIR/tests.log" \
      "$PY" scripts/mini_pytest.py $CUDA_TESTS
  fi
fi

# ---------------------------------------------------------------------------- benchmark
if (( BUILT )); then
  if "$PY" -c "import fused_rnn.bench" 2>/dev/null; then
    run_stage "bench vs cuDNN" 120 "$OUT_DIR/bench.log" \
      "$PY" -m fused_rnn.bench --device cuda --suite quick --no-progress --json "$OUT_DIR/bench.json" \
      --csv "$OUT_DIR/bench.csv" --markdown "$OUT_DIR/bench.md"
  else
    echo "fused_rnn.bench is missing from this tree: no benchmark run" > "$OUT_DIR/bench.log"
    printf 'bench vs cuDNN\tSKIP (fused_rnn.bench not in this tree)\t0\t\n' >> "$OUT_DIR/summary.tsv"
  fi
fi

# --------------------------------------------------------------------------- sanitizers
SAN=""
for c in "$(command -v compute-sanitizer 2>/dev/null)" "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" \
         "${CUDA_HOME:-/usr/local/cuda}/compute-sanitizer/compute-sanitizer" \
         /usr/local/cuda*/bin/compute-sanitizer /usr/local/cuda*/compute-sanitizer/compute-sanitizer; do
  if [ -n "$c" ] && [ -x "$c" ]; then SAN="$c"; break; fi
done
if (( BUILT )); then
  if [ -z "$SAN" ]; then
    printf 'sanitizer\tSKIP (compute-sanitizer not found)\t0\t\n' >> "$OUT_DIR/summary.tsv"
  else
    # memcheck sees every kernel (cuBLAS reading our buffers included); racecheck and
    # synccheck only ours (every fused_rnn kernel name holds its namespace "fused_rnn").
    # Without torch's caching allocator every tensor is its own cudaMalloc, so memcheck
    # sees an access past the end of one (inside a cached block it would go unnoticed).
    run_stage "sanitizer memcheck" 100 "$OUT_DIR/memcheck.log" \
      env CUDA_MODULE_LOADING=LAZY PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SAN" --tool memcheck --error-exitcode 1 --leak-check no "$PY" scripts/cuda_sanitize_case.py
    # racecheck over every kernel: with --kernel-name kns=fused_rnn and lazy module loading
    # the sanitizer itself failed ("Internal Sanitizer Error ... hardware exception", H100,
    # CUDA 13.0) on a run where the unfiltered check found no hazard.
    run_stage "sanitizer racecheck" 90 "$OUT_DIR/racecheck.log" \
      "$SAN" --tool racecheck --error-exitcode 1 "$PY" scripts/cuda_sanitize_case.py
    run_stage "sanitizer synccheck" 60 "$OUT_DIR/synccheck.log" \
      env CUDA_MODULE_LOADING=LAZY "$SAN" --tool synccheck --error-exitcode 1 --kernel-name kns=fused_rnn "$PY" scripts/cuda_sanitize_case.py
  fi
fi

# ------------------------------------------------- crashes; the forward step's two paths
if (( BUILT )) && [ -s "$OUT_DIR/crashed.txt" ]; then
  run_stage "crash diagnosis" 240 "$OUT_DIR/crash_diag.log" \
    bash scripts/crash_diag.sh "$OUT_DIR" $(cat "$OUT_DIR/crashed.txt")
fi
# The forward step has two paths chosen by batch size (csrc/cuda/fused_step.cuh): run the
# CUDA tests once more with each forced, so both meet every shape.
if (( BUILT )) && "$PY" -c "import pytest" 2>/dev/null; then
  for mode in 0 1; do
    run_stage "tests (CUDA, FUSED_RNN_CUDA_STEP_KERNEL=$mode)" 180 "$OUT_DIR/tests_step$mode.log" \
      env FUSED_RNN_CUDA_STEP_KERNEL=$mode "$PY" -m pytest -q -p no:cacheprovider $CUDA_TESTS
  done
fi

# ------------------------------------------------------- benchmarks against the targets
# The issue's GPU targets: float16 and bfloat16, projection, a batch that is not a multiple
# of 8, packed variable lengths. Each writes bench_<name>.md; they run last, on what is left.
bench_extra() {  # bench_extra NAME CAP ARGS...
  local name="$1" cap="$2"; shift 2
  run_stage "bench $name" "$cap" "$OUT_DIR/bench_$name.log" "$PY" -m fused_rnn.bench \
    --device cuda --no-progress --markdown "$OUT_DIR/bench_$name.md" "$@"
}
if (( BUILT )) && [ "${GPU_CHECK_EXTRA_BENCH:-1}" = 1 ]; then
  # varlen first: session 14's change to it (no stream syncs on packed calls) awaits a GPU.
  bench_extra varlen 90 --suite varlen
  bench_extra float16 90 --suite quick --dtype float16
  bench_extra bfloat16 90 --suite quick --dtype bfloat16
  bench_extra proj 60 --cell lstm --seq-len 100 --batch 64 --hidden-size 1024 --proj-size 256
  bench_extra batch100 60 --seq-len 100 --batch 100 --hidden-size 512
  bench_extra tf32 90 --suite quick --tf32 on
  bench_extra latency 90 --suite latency
  # One step per call, where the module's and cells' C++ route (session 17) matters most.
  bench_extra streaming 60 --suite streaming
  bench_extra cells 60 --suite cells
  # A/B of the fused forward step: the quick suite with the cuBLAS + pointwise path only.
  FUSED_RNN_CUDA_STEP_KERNEL=0 bench_extra quick_step0 90 --suite quick
  FUSED_RNN_CUDA_STEP_KERNEL=0 bench_extra latency_step0 90 --suite latency
  FUSED_RNN_CUDA_STEP_KERNEL=0 bench_extra float16_step0 90 --suite quick --dtype float16
fi

# ------------------------------------------------------------------------------ summary
{
  echo "# fused_rnn GPU check"
  echo
  echo '```'; cat "$OUT_DIR/env.txt"; echo '```'
  echo
  echo "| stage | status | seconds | detail |"
  echo "|---|---|---|---|"
  awk -F'\t' '{ printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4 }' "$OUT_DIR/summary.tsv"
  for f in "$OUT_DIR"/bench.md "$OUT_DIR"/bench_*.md; do
    [ -f "$f" ] && { echo; echo "## $(basename "$f" .md)"; echo; cat "$f"; }
  done
} > "$RESULTS"

echo
echo "fused_rnn GPU check: logs and results.md in $OUT_DIR (total $(( $(date +%s) - START ))s)"
awk -F'\t' 'BEGIN { printf "%-28s %-34s %7s  %s\n", "STAGE", "STATUS", "SECONDS", "DETAIL" }
            { printf "%-28s %-34s %7s  %s\n", $1, $2, $3, substr($4, 1, 60) }' "$OUT_DIR/summary.tsv"
! grep -q "	FAIL" "$OUT_DIR/summary.tsv"
