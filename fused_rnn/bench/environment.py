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


def _build_commit():
    """The commit this fused_rnn build was made from, recorded by setup.py (None: unknown)."""
    from fused_rnn import _build_cpu
    return getattr(_build_cpu, "SOURCE_COMMIT", None)


def _checkout_commit():
    """HEAD of the git checkout fused_rnn runs from now ("-dirty" with changes to tracked
    files), or None: only when the package's folder is that checkout's own fused_rnn/ (a
    wheel installed in a venv inside some other repository must not report its HEAD)."""
    pkg = os.path.dirname(os.path.abspath(fused_rnn.__file__))
    here = os.path.dirname(pkg)

    def git(*args):
        out = subprocess.run(["git", "-C", here, *args], capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() if out.returncode == 0 else None
    try:
        top = git("rev-parse", "--show-toplevel")
        if top is None or os.path.realpath(top) != os.path.realpath(here):
            return None
        if git("ls-files", "--error-unmatch", "fused_rnn/__init__.py") is None:
            return None
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return None if head is None else head + ("-dirty" if dirty else "")


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
        # The build's commit, and the checkout's HEAD when run from one: they differ when
        # the extension was built before the last commit or edit (rebuild it).
        "fused_rnn_commit": _build_commit(),
        "source_commit": _checkout_commit(),
        "fused_rnn_build": fused_rnn.build_info(),
        "dtype": str(dtype).replace("torch.", ""),
        "gemm_peak_gflops": gemm_peak_gflops,
    }
    return env
