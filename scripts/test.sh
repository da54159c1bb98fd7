#!/usr/bin/env bash
# Sets everything up on a fresh machine and runs the test suite against the installed wheel:
#   1. a build environment with torch; an sdist, and a wheel built from that sdist
#      (CUDA kernels compiled too when nvcc and a CUDA build of torch are present);
#   2. a fresh environment with torch and the wheel installed (not editable);
#   3. pytest on a copy of tests/, so the package comes from site-packages, not the source tree.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
source scripts/_env.sh

BUILD_VENV=${FUSED_RNN_VENV:-$ROOT/.venv}
TEST_VENV=${FUSED_RNN_TEST_VENV:-$ROOT/.venv-test}
DIST=$ROOT/dist
rm -rf "$DIST" build ./*.egg-info

echo "== build environment ($BUILD_VENV)"
make_venv "$BUILD_VENV"
export FUSED_RNN_CUDA=${FUSED_RNN_CUDA:-$(cuda_build_flag)}
echo "== sdist, then a wheel from it (FUSED_RNN_CUDA=$FUSED_RNN_CUDA, MAX_JOBS=$MAX_JOBS)"
python setup.py -q sdist -d "$DIST"
start=$(date +%s)
python -m pip wheel -q --no-build-isolation --no-deps -w "$DIST" "$DIST"/fused_rnn-*.tar.gz
echo "   wheel built in $(( $(date +%s) - start )) s: $(ls "$DIST"/*.whl)"
deactivate

echo "== test environment ($TEST_VENV)"
rm -rf "$TEST_VENV"
make_venv "$TEST_VENV"
python -m pip install -q pytest hypothesis expecttest matplotlib onnx onnxscript  # onnx*: tests/test_onnx_export.py
python -m pip install -q --no-deps "$DIST"/fused_rnn-*.whl

# Outside the source tree, so that `import fused_rnn` finds the installed wheel.
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cp -r tests "$WORK/tests"
cd "$WORK"
python -c 'import fused_rnn, sys; assert "site-packages" in fused_rnn.__file__, fused_rnn.__file__'
python -m fused_rnn info
python -m pytest -q -p no:cacheprovider tests "$@"
