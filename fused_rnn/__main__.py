"""`python -m fused_rnn info`: how this fused_rnn was built and what it can run on."""
import argparse
import sys

import torch

from ._extension import build_info, torch_mismatch
from ._version import __version__


def info_lines():
    info = build_info()
    lines = [
        f"fused_rnn {__version__}",
        f"built against torch {info['torch_version']}; running torch {torch.__version__}",
        f"CPU kernels: {info['cpu_capability']} SIMD, GEMMs via {info['cpu_blas']}",
    ]
    if info["cuda"]:
        gpu = (torch.cuda.get_device_name() if torch.cuda.is_available()
               else "no GPU visible to this process")
        lines.append(f"CUDA kernels: compiled for archs {info['cuda_archs']}; {gpu}")
    else:
        lines.append("CUDA kernels: not compiled in (CPU only). Rebuild with a CUDA build of "
                     "torch and nvcc on PATH to get them.")
    warning = torch_mismatch(info)
    if warning:
        lines.append("WARNING: " + warning)
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fused_rnn")
    parser.add_argument("command", choices=["info"], help="info: build and runtime details")
    parser.parse_args(argv)
    print("\n".join(info_lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
