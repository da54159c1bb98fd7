"""What a result was measured on: versions, device model, threads, fused_rnn build and commit."""
import os
import platform
import subprocess

import torch

import fused_rnn


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit():
    """The commit of the fused_rnn source tree this runs from (None for an installed copy
    outside a git checkout)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(fused_rnn.__file__)))
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def environment(device, dtype, gemm_peak_gflops):
    env = {
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
        else None,
        "device": str(device),
        "device_model": torch.cuda.get_device_name(device) if device.type == "cuda"
        else _cpu_model(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "mkl": torch.backends.mkl.is_available(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "fused_rnn_version": fused_rnn.__version__,
        "fused_rnn_commit": _git_commit(),
        "fused_rnn_build": fused_rnn.build_info(),
        "dtype": str(dtype).replace("torch.", ""),
        "gemm_peak_gflops": gemm_peak_gflops,
    }
    return env
