"""The large float32 products around the CPU time loops (input projection, dx, weight
gradients) go to csrc/cpu/blocked_gemm.cpp where it beats MKL. Its tails (rows not a
multiple of the 6-row block, columns not a multiple of a panel, k cut into 256-deep
slices with a shorter last one), its row chunks shared by 1-3 threads and all three
transposes must keep parity with torch.nn. FUSED_RNN_BLOCKED_GEMM=force sends every
float32 product through it, whatever its size; "auto" (the default) at a size where it
is chosen by measurement; "0" keeps MKL, and both must agree."""
import pytest
import torch

from _cells import CELLS, make, make_state
from _parity import clone_inputs, packed_input, run


def _results(module, x, hx):
    inp, state = clone_inputs(x, hx)
    out, grads = run(module, inp, state)
    return out + list(grads)


def _assert_close(ref, ours, x, hx, tol):
    for a, b in zip(_results(ref, x, hx), _results(ours, x, hx)):
        torch.testing.assert_close(b, a, atol=tol, rtol=tol)


@pytest.mark.parametrize("threads", (1, 2, 3), indirect=True)
@pytest.mark.parametrize("cell", CELLS, ids=str)
# (T, B, I, H): tiny products, all tails; k = 300 (two slices) in the projection and
# T * B = 420 rows (3 chunks on one thread, k of the weight gradients in two slices)
@pytest.mark.parametrize("shape", [(3, 5, 3, 10), (60, 7, 300, 37)], ids=str)
def test_forced_for_every_product(threads, cell, shape, monkeypatch):
    monkeypatch.setenv("FUSED_RNN_BLOCKED_GEMM", "force")
    T, B, I, H = shape
    torch.manual_seed(T)
    gen = torch.Generator().manual_seed(B)
    ref, ours = make(cell, torch.float32, input_size=I, hidden_size=H, num_layers=2,
                     bidirectional=True)
    x = packed_input(T, B, I, torch.float32, gen=gen)
    hx = make_state(cell, 4, B, H, dtype=torch.float32, gen=gen)
    _assert_close(ref, ours, x, hx, 2e-4 if T * B > 100 else 1e-5)


@pytest.mark.parametrize("threads", (1, 2), indirect=True)
@pytest.mark.parametrize("proj_size", [0, 29])
def test_forced_lstm_projection(threads, proj_size, monkeypatch):
    monkeypatch.setenv("FUSED_RNN_BLOCKED_GEMM", "force")
    lstm = CELLS[0]
    torch.manual_seed(proj_size)
    gen = torch.Generator().manual_seed(2)
    ref, ours = make(lstm, torch.float32, input_size=40, hidden_size=67, proj_size=proj_size,
                     bidirectional=True)
    x = packed_input(30, 11, 40, torch.float32, gen=gen)
    hx = make_state(lstm, 2, 11, 67, proj_size=proj_size, dtype=torch.float32, gen=gen)
    _assert_close(ref, ours, x, hx, 2e-4)


@pytest.mark.parametrize("cell", CELLS, ids=str)
def test_chosen_and_switched_off_agree(cell, monkeypatch):
    """T * B = 640 rows, I = 320 and H = 264 (792-1056 gate columns): the default picks
    the blocked GEMM for the projection and dx (2 slices of k, rows in chunks, columns
    with a tail); with the switch at "0" everything runs on MKL. Both match torch.nn and
    each other to float32 rounding."""
    torch.manual_seed(11)
    gen = torch.Generator().manual_seed(11)
    ref, ours = make(cell, torch.float32, input_size=320, hidden_size=264)
    x = torch.randn(40, 16, 320, generator=gen) * 0.5
    results = {}
    for switch in ("auto", "0"):
        monkeypatch.setenv("FUSED_RNN_BLOCKED_GEMM", switch)
        results[switch] = _results(ours, x, None)
    for a, b, c in zip(_results(ref, x, None), results["auto"], results["0"]):
        torch.testing.assert_close(b, a, atol=2e-4, rtol=2e-4)
        torch.testing.assert_close(b, c, atol=2e-4, rtol=2e-4)
