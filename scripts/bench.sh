#!/usr/bin/env bash
# Sets everything up on a fresh machine and runs the benchmark's quick suite against torch.nn on
# whatever device is there (CUDA if visible, else CPU). Extra arguments go to fused-rnn-bench,
# e.g. `bash scripts/bench.sh --suite training --json out.json`.
set -euo pipefail
caller_dir=$(pwd)  # output paths given as arguments are relative to where this was run
cd "$(dirname "$0")/.."
source scripts/_env.sh
make_venv "${FUSED_RNN_VENV:-$(pwd)/.venv}"
export FUSED_RNN_CUDA=${FUSED_RNN_CUDA:-$(cuda_build_flag)}
python -m pip install -q --no-build-isolation --no-deps .
# The console script imports the installed package (its own folder, not the current one, is
# on sys.path), so it can run from the caller's folder.
cd "$caller_dir"
if [ "$#" -eq 0 ]; then set -- --suite quick; fi
fused-rnn-bench "$@"
