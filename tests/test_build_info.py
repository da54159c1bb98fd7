"""What the installed binary says about itself, and how it fails when it cannot run."""
import subprocess
import sys

import pytest
import torch

import fused_rnn


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


@pytest.mark.skipif(fused_rnn.build_info()["cuda"], reason="CUDA kernels are compiled in")
def test_cuda_input_without_cuda_kernels_is_a_clear_error():
    from fused_rnn._extension import check_device
    with pytest.raises(RuntimeError, match="built without CUDA kernels"):
        check_device("LSTM", torch.device("cuda"))
