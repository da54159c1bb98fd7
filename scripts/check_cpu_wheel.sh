#!/usr/bin/env bash
# A wheel built against the CPU-only build of torch: it must build without nvcc's help, import,
# say that CUDA is not compiled in, refuse CUDA inputs with a clear error, and pass a parity
# smoke test. (scripts/test.sh covers the wheel built against the CUDA build of torch.)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
source scripts/_env.sh
VENV=${FUSED_RNN_CPU_VENV:-$ROOT/.venv-cpu}
DIST=$ROOT/dist-cpu
rm -rf "$DIST" build ./*.egg-info
TORCH_SPEC=${CPU_TORCH_SPEC:-torch==2.13.0} make_venv "$VENV"
python -m pip install -q pytest
python -c 'import torch, sys; assert torch.version.cuda is None, torch.__version__'
python -m pip wheel -q --no-build-isolation --no-deps -w "$DIST" .
python -m pip install -q --force-reinstall --no-deps "$DIST"/fused_rnn-*.whl
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cp -r tests "$WORK/tests"
cd "$WORK"
python -m fused_rnn info | tee info.txt
grep -q "CUDA kernels: not compiled in" info.txt
python -m pytest -q -p no:cacheprovider tests/test_build_info.py tests/test_lstm.py tests/test_gru.py \
  -k "build_info or parity_unbatched or packed"
