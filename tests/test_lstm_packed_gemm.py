"""The CPU LSTM's per-step GEMMs through PackedB (csrc/cpu/blas.h) keep parity with
torch.nn.LSTM: float32 packs W_hh once per call (into panel_gemm.h's panels at these
batch sizes, MKL's layout for large tiles; up to 8 rows, and up to 32 on AVX-512, only
from 8 or 16 steps, T = 9 here, below that thin_gemm.h reads it as it is; with AVX-512
outside Intel only past 32 steps, and one row never), with every row count a varlen
batch produces, and with the switch FUSED_RNN_PACKED_GEMM=0 plain sgemm
throughout (=panels, =mkl: that packing for every packed product, whichever the CPU would
pick); float64 never packs (dgemm, or thin_gemm.h up to 8 rows)."""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fused_rnn

PACKED_B = 12  # > 8 rows: float32 takes the 9+-row packed path (panels or MKL)


def _pair(dtype, **kw):
    torch.manual_seed(0)
    ref = torch.nn.LSTM(dtype=dtype, **kw)
    ours = fused_rnn.LSTM(dtype=dtype, **kw)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _run(m, x, h0c0):
    x = x.detach().requires_grad_(True) if not hasattr(x, "batch_sizes") else \
        x._replace(data=x.data.detach().requires_grad_(True))
    h0, c0 = (s.detach().requires_grad_(True) for s in h0c0)
    out, (h, c) = m(x, (h0, c0))
    y = out.data if hasattr(out, "batch_sizes") else out
    g = torch.Generator().manual_seed(5)
    loss = (y * torch.randn(y.shape, generator=g, dtype=y.dtype)).sum() + (h * 0.3).sum() \
        + (c * 0.7).sum()
    loss.backward()
    leaf = x.data if hasattr(x, "batch_sizes") else x
    return [y, h, c, leaf.grad, h0.grad, c0.grad] + [p.grad for _, p in
                                                     sorted(m.named_parameters())]


def test_build_reports_packed_gemm():
    assert fused_rnn.build_info()["cpu_packed_gemm"] in ("0", "1")


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("varlen", [False, True])
@pytest.mark.parametrize("proj,bidir", [(0, False), (5, True)])
@pytest.mark.parametrize("B", [PACKED_B, 8, 3, 1])
@pytest.mark.parametrize("switch", ["1", "0", "panels", "mkl"])
def test_packed_and_small_paths_match_torch(dtype, tol, varlen, proj, bidir, B, switch,
                                            monkeypatch):
    monkeypatch.setenv("FUSED_RNN_PACKED_GEMM", switch)
    if switch != "1" and (B != PACKED_B or dtype != torch.float32):
        pytest.skip("the switch only matters for float32; one batch size is enough")
    if switch == "mkl" and fused_rnn.build_info()["cpu_packed_gemm"] != "1":
        pytest.skip("no MKL packing in this torch")
    # H = 21: 84 gate columns, no multiple of any SIMD width.
    T, I, H = 9, 7, 21
    ref, ours = _pair(dtype, input_size=I, hidden_size=H, proj_size=proj, bidirectional=bidir)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, I, generator=g, dtype=dtype) * 0.5
    D, P = (2 if bidir else 1), (proj or H)
    h0 = torch.randn(D, B, P, generator=g, dtype=dtype) * 0.5
    c0 = torch.randn(D, B, H, generator=g, dtype=dtype) * 0.5
    if varlen:  # every count of active rows from B down to 1 occurs
        lengths = torch.tensor([T, T, 8, 8, 7, 6, 5, 4, 3, 3, 2, 1][:B])
        lengths[0] = T
        x = pack_padded_sequence(x, lengths, enforce_sorted=False)
    for a, b in zip(_run(ref, x, (h0, c0)), _run(ours, x, (h0, c0))):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= tol * max(1.0, a.abs().max().item())


@pytest.mark.parametrize("proj", [0, 5])
@pytest.mark.parametrize("switch", ["1", "panels"])
def test_one_row_long_call_both_paths(switch, proj, monkeypatch):
    """One row over 20 steps (a split by units gives every product one row): the choice
    reads W as it is with AVX-512 outside Intel (thin_gemm.h; blas.cpp's
    thin_reads_as_is) and packs it elsewhere; =panels packs it on any CPU. Both paths,
    forward and backward, match torch.nn."""
    monkeypatch.setenv("FUSED_RNN_PACKED_GEMM", switch)
    T, B, I, H = 20, 1, 7, 37
    ref, ours = _pair(torch.float32, input_size=I, hidden_size=H, proj_size=proj)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(T, B, I, generator=g) * 0.5
    P = proj or H
    h0, c0 = torch.randn(1, B, P, generator=g) * 0.5, torch.randn(1, B, H, generator=g) * 0.5
    for a, b in zip(_run(ref, x, (h0, c0)), _run(ours, x, (h0, c0))):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= 1e-5 * max(1.0, a.abs().max().item())
