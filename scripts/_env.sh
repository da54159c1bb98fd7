# Sourced by the scripts in this folder: create (or reuse) a virtual environment with torch
# and the build tools, and activate it.
#   FUSED_RNN_VENV   where (default: .venv in the repository)
#   TORCH_SPEC       which torch to install (default: torch==2.14.1, the CUDA 13.0 build, which also
#                    runs on CPU; torch==2.13.0 is a small CPU-only build)
make_venv() {
  local dir=$1
  if [ ! -x "$dir/bin/python" ]; then
    python3 -m venv "$dir"
  fi
  # shellcheck disable=SC1091
  source "$dir/bin/activate"
  python -m pip install -q --upgrade pip setuptools wheel
  python -m pip install -q "${TORCH_SPEC:-torch==2.14.1}" ninja numpy
}

# nvcc and a CUDA build of torch: build (and so check) the CUDA kernels too.
cuda_build_flag() {
  if command -v nvcc >/dev/null 2>&1 && python -c 'import sys, torch; sys.exit(torch.version.cuda is None)'; then
    echo 1
  else
    echo 0
  fi
}

export MAX_JOBS=${MAX_JOBS:-$(nproc)}
