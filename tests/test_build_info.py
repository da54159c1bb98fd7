"""What the installed binary says about itself, and how it fails when it cannot run."""
import shutil
import subprocess
import sys

import pytest
import torch

import fused_rnn
from fused_rnn._extension import _cpu_flags


def test_build_info_fields():
    info = fused_rnn.build_info()
    assert info["torch_version"] == torch.__version__
    assert info["cpu_capability"] in ("avx512", "avx2", "default")
    assert isinstance(info["cuda"], bool)
    if torch.version.cuda is None:
        assert info["cuda"] is False  # a CPU build of torch cannot have our CUDA kernels


def test_info_cli():
    out = subprocess.run([sys.executable, "-m", "fused_rnn", "info"], capture_output=True,
                         text=True, check=True).stdout
    assert f"fused_rnn {fused_rnn.__version__}" in out
    assert f"built against torch {torch.__version__}" in out
    assert ("CUDA kernels: compiled for archs" in out) == fused_rnn.build_info()["cuda"]
    assert "WARNING" not in out


def test_torch_mismatch_sentence():
    from fused_rnn._extension import torch_mismatch
    assert torch_mismatch() is None
    msg = torch_mismatch({"torch_version": "1.0.0"})
    assert "built against torch 1.0.0" in msg and "rebuild" in msg


def test_load_error_explains_abi_mismatch():
    from fused_rnn._extension import _explain
    err = _explain(ImportError("/x/_C.so: undefined symbol: _ZN3c104impl8GPUTrace"))
    assert isinstance(err, ImportError)
    assert "built against another torch" in str(err) and "--no-build-isolation" in str(err)
    err = _explain(ImportError("No module named 'fused_rnn._C'"))
    assert "was not built" in str(err)


def test_simd_level_is_recorded_outside_the_binary():
    """setup.py writes the level next to the extension, so it is read before loading it."""
    from fused_rnn._extension import _recorded_capability
    assert _recorded_capability() == fused_rnn.build_info()["cpu_capability"]


def test_missing_simd_level_is_an_import_error(monkeypatch):
    from fused_rnn import _extension
    monkeypatch.setattr(_extension, "_cpu_flags", lambda: {"sse2", "avx2", "fma", "f16c"})
    with pytest.raises(ImportError, match="compiled for avx512 CPUs.*FUSED_RNN_CPU_CAPABILITY"):
        _extension._check_cpu_capability("avx512")
    _extension._check_cpu_capability("avx2")
    _extension._check_cpu_capability("default")
    _extension._check_cpu_capability(None)  # nothing recorded: nothing to check


@pytest.mark.skipif("avx512f" in (_cpu_flags() or {"avx512f"}),  # unknown flags: skip too
                    reason="this CPU has AVX-512")
def test_an_avx512_build_is_refused_before_it_loads():
    """On a CPU without AVX-512, an AVX-512 build must fail with the ImportError before its
    library is loaded (loading it runs AVX-512 code: SIGILL). Simulated by recording avx512."""
    code = (
        "import sys, types\n"
        "rec = types.ModuleType('fused_rnn._build_cpu'); rec.CPU_CAPABILITY = 'avx512'\n"
        "sys.modules['fused_rnn._build_cpu'] = rec\n"
        "try:\n"
        "    import fused_rnn\n"
        "except ImportError as e:\n"
        "    print('refused:', e)\n"
        "print('loaded' if 'fused_rnn._C' in sys.modules else 'not loaded')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "refused: fused_rnn was compiled for avx512 CPUs" in out and "not loaded" in out


@pytest.mark.skipif(fused_rnn.build_info()["cuda"], reason="CUDA kernels are compiled in")
def test_cuda_input_without_cuda_kernels_is_a_clear_error():
    from fused_rnn._extension import check_device
    with pytest.raises(RuntimeError, match="built without CUDA kernels"):
        check_device("LSTM", torch.device("cuda"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF and /proc are Linux's")
def test_one_libstdcxx_in_the_process():
    """_C must use the shared libstdc++ torch loaded: a private static copy garbles or crashes
    every error message that formats a number (seen with a g++ wrapper on a GPU machine)."""
    import fused_rnn._C  # noqa: F401  (loaded by fused_rnn already; named for clarity)
    with open("/proc/self/maps") as f:
        paths = {line.split()[-1] for line in f if "/" in line}
    stdcxx = {p for p in paths if p.rsplit("/", 1)[-1].startswith("libstdc++.so")}
    assert len(stdcxx) == 1, stdcxx
    ext = next(p for p in paths if p.rsplit("/", 1)[-1].startswith("_C.") and "fused_rnn" in p)
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf is not available")
    dyn = subprocess.run([readelf, "-d", "-W", ext], capture_output=True, text=True, check=True)
    assert "libstdc++.so" in dyn.stdout  # NEEDED: linked dynamically


def test_error_messages_format_numbers():
    # The symptom of a second libstdc++: "lengths[" and nothing after it, or a segfault.
    x = torch.zeros(4, 2, 3)
    w_ih, w_hh = torch.zeros(8, 3), torch.zeros(8, 2)
    h0 = c0 = torch.zeros(2, 2)
    with pytest.raises(RuntimeError, match=r"lengths\[0\] = 5 is outside \[0, seq_len = 4\]"):
        torch.ops.fused_rnn.lstm_forward(x, w_ih, w_hh, None, None, None, h0, c0,
                                         torch.tensor([5, 1]), False)
