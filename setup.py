"""Build of fused_rnn's C++/CUDA extension against the torch that is already installed.

Install with `pip install --no-build-isolation .` (or `-e .`): the extension must be
compiled against the very torch it will run with (torch's C++ ABI changes between
releases), so pip must not build it in an isolated environment with another torch.

Environment variables:
  FUSED_RNN_CUDA=1|0          force the CUDA kernels on or off (default: on when torch is
                              a CUDA build and nvcc is found; no GPU is needed to build)
  FUSED_RNN_CPU_CAPABILITY    avx512 | avx2 | default: SIMD level of the CPU kernels
                              (default: the best this build machine supports)
  TORCH_CUDA_ARCH_LIST        CUDA archs to compile for (default "8.0;9.0")
  MAX_JOBS                    parallel compile jobs (default: number of CPUs)
  CUDA_HOME                   the CUDA toolkit (default: found from nvcc on PATH)
"""
import glob
import os
import platform
import re
import shutil
import subprocess
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))

try:
    import torch
except ImportError:
    sys.exit(
        "fused_rnn: torch is not importable in the Python that builds this package.\n"
        "fused_rnn compiles against the torch you already have. Install torch first, then\n"
        "install fused_rnn with build isolation off:\n"
        "    pip install torch\n"
        "    pip install --no-build-isolation .\n"
        "(With build isolation on, pip builds in a fresh environment that has no torch.)"
    )


def read_version():
    with open(os.path.join(HERE, "fused_rnn", "_version.py")) as f:
        return re.search(r'__version__ = "([^"]+)"', f.read()).group(1)


def find_cuda_home():
    """The toolkit folder. nvcc on PATH may be a wrapper script that execs the real one."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return "/usr/local/cuda" if os.path.exists("/usr/local/cuda/bin/nvcc") else None
    nvcc = os.path.realpath(nvcc)
    try:
        with open(nvcc, "rb") as f:
            head = f.read(4096)
        if head.startswith(b"#!"):
            m = re.search(rb"exec\s+(\S+/nvcc)\b", head)
            if m:
                nvcc = os.path.realpath(m.group(1).decode())
    except OSError:
        pass
    return os.path.dirname(os.path.dirname(nvcc))


def want_cuda(cuda_home):
    flag = os.environ.get("FUSED_RNN_CUDA", "").strip().lower()
    if flag in ("0", "false", "no", "off"):
        return False
    available = torch.version.cuda is not None and cuda_home is not None and os.path.exists(
        os.path.join(cuda_home, "bin", "nvcc"))
    if flag in ("1", "true", "yes", "on"):
        if not available:
            sys.exit("fused_rnn: FUSED_RNN_CUDA=1 but torch %s is not a CUDA build or nvcc was "
                     "not found (CUDA_HOME=%s)" % (torch.__version__, cuda_home))
        return True
    return available


def cpu_capability():
    """SIMD level of the CPU kernels: at::vec is compiled for exactly one level here."""
    flag = os.environ.get("FUSED_RNN_CPU_CAPABILITY", "").strip().lower()
    if flag:
        if flag not in ("avx512", "avx2", "default"):
            sys.exit("fused_rnn: FUSED_RNN_CPU_CAPABILITY must be avx512, avx2 or default")
        return flag
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return "default"
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(re.search(r"^flags\s*:(.*)$", f.read(), re.M).group(1).split())
    except (OSError, AttributeError):
        return "default"
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "fma"} <= flags:
        return "avx512"
    if {"avx2", "fma", "f16c"} <= flags:
        return "avx2"
    return "default"


CPU_FLAGS = {
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c",
               "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"],
    "avx2": ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"],
    "default": ["-DCPU_CAPABILITY=DEFAULT"],
}


def source_commit():
    """HEAD of the git checkout setup.py runs in ("-dirty" with changes to tracked files), or
    None when it runs outside one (a wheel built from an sdist) or inside another project's."""
    def git(*args):
        out = subprocess.run(["git", "-C", HERE, *args], capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() if out.returncode == 0 else None
    try:
        top = git("rev-parse", "--show-toplevel")
        if top is None or os.path.realpath(top) != os.path.realpath(HERE):
            return None
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return None if head is None else head + ("-dirty" if dirty else "")


def write_build_cpu(cap):
    """Records the SIMD level where Python reads it before loading the extension (an AVX-512
    build loaded on a CPU without AVX-512 dies (SIGILL) in its static initializers, before
    fused_rnn could say why), and the commit the build is from (the benchmark reports it).
    Building from an sdist, which has no git, keeps the commit the sdist recorded."""
    path = os.path.join(HERE, "fused_rnn", "_build_cpu.py")
    commit = source_commit()
    if commit is None and os.path.exists(path):
        recorded = {}
        with open(path) as f:
            exec(f.read(), recorded)
        commit = recorded.get("SOURCE_COMMIT")
    with open(path, "w") as f:
        f.write("# Written by setup.py: the SIMD level fused_rnn._C was compiled for, and the\n"
                "# commit it was built from (None: unknown).\n"
                "CPU_CAPABILITY = %r\nSOURCE_COMMIT = %r\n" % (cap, commit))


def nvidia_wheel_dirs(sub):
    """Headers/libraries shipped in torch's nvidia-* dependency wheels (cuBLAS, cuSPARSE...)."""
    found = []
    for base in sys.path:
        for d in glob.glob(os.path.join(base, "nvidia", "*", sub)) + glob.glob(
                os.path.join(base, "nvidia", "*", "*", sub)):
            if os.path.isdir(d) and d not in found:
                found.append(d)
    return found


def extensions():
    cuda_home = find_cuda_home()
    with_cuda = want_cuda(cuda_home)
    if with_cuda:
        os.environ["CUDA_HOME"] = cuda_home  # read by torch.utils.cpp_extension at import
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    cap = cpu_capability()
    write_build_cpu(cap)
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    cxx = ["-O3", "-fopenmp", "-fvisibility=hidden"] + CPU_FLAGS[cap]
    defines = [
        ("FUSED_RNN_TORCH_VERSION", '"%s"' % torch.__version__),
        ("FUSED_RNN_CPU_CAPABILITY", '"%s"' % cap),
    ]
    # The shared libstdc++ this torch runs with, named ahead of the driver's own libraries, so it
    # provides every C++ runtime symbol even from a compiler whose search path holds only
    # libstdc++.a (see check_shared_libstdcxx).
    kwargs = dict(extra_link_args=["-fopenmp"] + loaded_libstdcxx())
    if with_cuda:
        sources += sorted(glob.glob("csrc/cuda/*.cu") + glob.glob("csrc/cuda/*.cpp"))
        archs = os.environ["TORCH_CUDA_ARCH_LIST"]
        defines += [("FUSED_RNN_WITH_CUDA", None), ("FUSED_RNN_CUDA_ARCHS", '"%s"' % archs.replace(";", " "))]
        nvcc = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
        kwargs["include_dirs"] = nvidia_wheel_dirs("include")
        kwargs["library_dirs"] = nvidia_wheel_dirs("lib")
        ext = CUDAExtension("fused_rnn._C", sources, define_macros=defines,
                            extra_compile_args={"cxx": cxx, "nvcc": nvcc}, **kwargs)
    else:
        ext = CppExtension("fused_rnn._C", sources, define_macros=defines,
                           extra_compile_args={"cxx": cxx}, **kwargs)
    print("fused_rnn: building CPU kernels for %s, CUDA kernels %s" % (
        cap, "for " + os.environ["TORCH_CUDA_ARCH_LIST"] if with_cuda else "off"))
    return [ext]


def loaded_libstdcxx():
    """Link arguments naming the libstdc++.so this process (which imported torch) has loaded."""
    if not sys.platform.startswith("linux"):
        return []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1]
                if os.path.basename(path).startswith("libstdc++.so"):
                    return [path]
    except OSError:
        pass
    return ["-lstdc++"]


def check_shared_libstdcxx(path):
    """Fails the build if libstdc++ was linked statically into the extension. torch loads the
    shared libstdc++; a second, private copy inside _C then mixes its own std::locale facet ids
    with the shared copy's locale objects, and the first error message that formats a number
    (TORCH_CHECK with an int) segfaults. Seen with a g++ wrapper on one GPU machine."""
    readelf = shutil.which("readelf")
    if readelf is None or not path.endswith(".so"):
        return
    dyn = subprocess.run([readelf, "-d", "-W", path], capture_output=True, text=True).stdout
    if "libstdc++.so" in dyn:
        return
    syms = subprocess.run([readelf, "-s", "-W", path], capture_output=True, text=True).stdout
    if not any("_ZNSt6locale" in l and " UND " not in l for l in syms.splitlines()):
        return  # no C++ runtime defined inside: nothing to mix up
    os.remove(path)
    sys.exit(
        "fused_rnn: the compiler (%s) linked libstdc++ statically into %s, although the link\n"
        "named the shared one (%s).\n"
        "torch uses the shared libstdc++, and two copies in one process crash (a segfault in\n"
        "the first error message that prints a number). Build with a compiler that links\n"
        "libstdc++ dynamically, e.g. CXX=/usr/bin/g++ pip install --no-build-isolation ."
        % (os.environ.get("CXX", "c++"), os.path.basename(path), " ".join(loaded_libstdcxx())))


def build_ext_cmdclass():
    from torch.utils.cpp_extension import BuildExtension

    class Build(BuildExtension.with_options(use_ninja=True)):
        def build_extension(self, ext):
            super().build_extension(ext)
            check_shared_libstdcxx(self.get_ext_fullpath(ext.name))

    return {"build_ext": Build}


with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="fused_rnn",
    version=read_version(),
    description="Fused LSTM and GRU kernels for PyTorch: drop-in torch.nn replacements",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    license_files=["LICENSE"],
    packages=find_packages(include=["fused_rnn", "fused_rnn.*"]),
    ext_modules=extensions(),
    cmdclass=build_ext_cmdclass(),
    python_requires=">=3.10",
    # The oldest torch verified here (2.13.0 CPU, 2.14.1 CUDA 13.0). The GPU check builds in place
    # against the GPU machine's torch 2.11 (scripts/gpu_check.sh), so install_requires does not bind it.
    install_requires=["torch>=2.13"],
    extras_require={"plot": ["matplotlib"], "test": ["pytest", "hypothesis", "numpy"]},
    entry_points={"console_scripts": ["fused-rnn-bench=fused_rnn.bench:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: C++",
        "Environment :: GPU :: NVIDIA CUDA",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
    zip_safe=False,
)
