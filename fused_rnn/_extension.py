"""Loads the compiled extension, turning load failures into an ImportError that says why."""
import importlib
import warnings

import torch


def _explain(err):
    msg = str(err)
    hint = (
        "Build it against the torch you run with, from the source tree:\n"
        "    pip install --no-build-isolation .\n"
        "(see README.md, 'Install').")
    if "undefined symbol" in msg:
        why = ("fused_rnn's compiled extension does not match the installed torch %s: it was "
               "built against another torch (the C++ ABI differs between torch releases)."
               % torch.__version__)
    elif "No module named" in msg:
        why = "fused_rnn's compiled extension (fused_rnn._C) is missing: the package was not built."
    else:
        why = "fused_rnn's compiled extension failed to load."
    return ImportError("%s\n%s\nOriginal error: %s" % (why, hint, msg))


_NEEDS = {
    "avx512": {"avx512f", "avx512bw", "avx512vl", "avx512dq", "fma"},
    "avx2": {"avx2", "fma", "f16c"},
}


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def _check_cpu_capability(cap):
    """The CPU kernels use one SIMD level chosen at build time; refuse to run them on a CPU
    without it (that would die with SIGILL) and say how to rebuild."""
    needs = _NEEDS.get(cap)
    if needs is None:
        return
    flags = _cpu_flags()
    if flags is not None:
        ok = needs <= flags
    else:  # no /proc/cpuinfo: trust what torch detected for its own kernels
        ok = torch.backends.cpu.get_cpu_capability().lower().startswith(cap)
    if not ok:
        raise ImportError(
            "fused_rnn was compiled for %s CPUs, which this CPU is not. Rebuild on this machine, "
            "or with FUSED_RNN_CPU_CAPABILITY=avx2 (or default) for a portable build." % cap)


def _recorded_capability():
    """The level setup.py wrote next to the extension, readable without loading it (loading
    an AVX-512 build on another CPU already executes AVX-512 code); None in a tree that was
    never built, where _load() explains."""
    try:
        from ._build_cpu import CPU_CAPABILITY
    except ImportError:
        return None
    return CPU_CAPABILITY


def _load():
    try:
        return importlib.import_module("fused_rnn._C")
    except ImportError as err:
        raise _explain(err) from err


_check_cpu_capability(_recorded_capability())
_C = _load()


def build_info():
    """How this fused_rnn binary was built, as a dict (see `python -m fused_rnn info`)."""
    raw = torch.ops.fused_rnn.build_info()
    info = dict(line.split("=", 1) for line in raw.strip().splitlines())
    info["cuda"] = info.get("cuda") == "1"
    return info


def empty_cpu_cache():
    """Returns to the system the memory fused_rnn's CPU ops keep for their next call (their
    large work buffers, as torch.cuda.empty_cache does for torch's GPU memory); returns the
    bytes freed. At most FUSED_RNN_CPU_CACHE_MB megabytes (default 1024; 0: none) are kept."""
    return torch.ops.fused_rnn.empty_cpu_cache()


def _release(version):
    return tuple(version.split("+")[0].split(".")[:2])


def torch_mismatch(info=None):
    """A sentence if the running torch is not the release this binary was built against
    (torch's C++ ABI is only stable within one release), else None."""
    built = (info or build_info())["torch_version"]
    if _release(built) != _release(torch.__version__):
        return ("fused_rnn was built against torch %s but torch %s is running; rebuild fused_rnn "
                "(pip install --no-build-isolation .) to avoid crashes from ABI differences."
                % (built, torch.__version__))
    return None


_check_cpu_capability(build_info()["cpu_capability"])  # what the binary itself says
_mismatch = torch_mismatch()
if _mismatch:
    warnings.warn(_mismatch, RuntimeWarning, stacklevel=2)
HAS_CUDA = build_info()["cuda"]
if not HAS_CUDA and torch.cuda.is_available():
    warnings.warn("fused_rnn was built without its CUDA kernels (CPU only), but a GPU is visible: "
                  "CUDA inputs will raise. Rebuild with nvcc and a CUDA build of torch.",
                  RuntimeWarning, stacklevel=2)


def check_device(name, device):
    """A clear error for a device our kernels were not built for."""
    if device.type == "cuda" and not HAS_CUDA:
        raise RuntimeError(f"{name}: fused_rnn was built without CUDA kernels; move the module and "
                           f"input to the CPU or rebuild fused_rnn with CUDA (see README, Install)")
    if device.type not in ("cpu", "cuda", "meta"):
        raise RuntimeError(f"{name}: fused_rnn runs on cpu and cuda devices, got {device}")
