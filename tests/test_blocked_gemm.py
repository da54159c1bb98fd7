"""The large float32 products of a CPU layer (input projection, dx, weight gradients) go
to csrc/cpu/blocked_gemm.cpp where it beats MKL. Its tails (rows not a multiple of the
6-row block, columns not a multiple of a panel, k cut into slices with a shorter last
one), its row chunks shared by 1-3 threads and the three transposes a layer uses must
keep parity with torch.nn. FUSED_RNN_BLOCKED_GEMM=force sends every such product through
it, whatever its size; the default chooses by measurement (on CPUs not made by Intel,
build_info's cpu_blocked_gemm); "0" keeps MKL. Products inside the time loops never
take it."""
import fused_rnn
import pytest
import torch

from _cells import CELLS, make, make_state
from _parity import assert_same, clone_inputs, packed_input, run


def _results(module, x, hx):
    inp, state = clone_inputs(x, hx)
    out, grads = run(module, inp, state)
    return out + list(grads)


@pytest.mark.parametrize("threads", (1, 2, 3), indirect=True)
@pytest.mark.parametrize("cell", CELLS, ids=str)
# (T, B, I, H): tiny products, all tails; k = 301 (slices of 151 and 150) in the
# projection and T * B = 427 rows (3 chunks on one thread; k of the weight gradients in
# slices of 214 and 213)
@pytest.mark.parametrize("shape", [(3, 5, 3, 10), (61, 7, 301, 37)], ids=str)
def test_forced_for_every_product(threads, cell, shape, monkeypatch):
    monkeypatch.setenv("FUSED_RNN_BLOCKED_GEMM", "force")
    T, B, I, H = shape
    torch.manual_seed(T)
    gen = torch.Generator().manual_seed(B)
    ref, ours = make(cell, torch.float32, input_size=I, hidden_size=H, num_layers=2,
                     bidirectional=True)
    x = packed_input(T, B, I, torch.float32, gen=gen)
    hx = make_state(cell, 4, B, H, dtype=torch.float32, gen=gen)
    assert_same(ref, ours, x, hx, torch.float32, tol=2e-4 if T * B > 100 else 1e-5)


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
    assert_same(ref, ours, x, hx, torch.float32, tol=2e-4)


@pytest.mark.parametrize("cell", CELLS, ids=str)
def test_chosen_and_switched_off_agree(cell, monkeypatch):
    """T * B = 640 rows, I = 320 and H = 264 (792-1056 gate columns): where the default
    prefers the blocked GEMM it takes it for the projection (2 slices of k, rows in
    chunks, columns with a tail), so the outputs are bit for bit those of "force";
    elsewhere they are MKL's. All three match torch.nn to float32 rounding, and so do
    the gradients."""
    torch.manual_seed(11)
    gen = torch.Generator().manual_seed(11)
    ref, ours = make(cell, torch.float32, input_size=320, hidden_size=264)
    x = torch.randn(40, 16, 320, generator=gen) * 0.5
    results = {}
    for switch in ("auto", "force", "0"):
        monkeypatch.setenv("FUSED_RNN_BLOCKED_GEMM", switch)
        results[switch] = _results(ours, x, None)
    chosen = fused_rnn.build_info()["cpu_blocked_gemm"] == "1"
    y = {switch: r[0] for switch, r in results.items()}
    assert torch.equal(y["auto"], y["force" if chosen else "0"])
    for a, *ours_results in zip(_results(ref, x, None), *results.values()):
        for b in ours_results:
            torch.testing.assert_close(b, a, atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("cell", CELLS, ids=str)
def test_forced_with_per_step_sgemm_and_varlen(cell, monkeypatch):
    """Forced, with MKL's per-step packing switched off: a varlen batch's per-step
    products (every row count) run on plain sgemm inside the time loop, the large ones on
    the blocked GEMM outside it; parity with torch.nn holds."""
    monkeypatch.setenv("FUSED_RNN_PACKED_GEMM", "0")
    monkeypatch.setenv("FUSED_RNN_BLOCKED_GEMM", "force")
    torch.manual_seed(4)
    gen = torch.Generator().manual_seed(4)
    ref, ours = make(cell, torch.float32, input_size=9, hidden_size=33)
    x = packed_input(12, 9, 9, torch.float32, gen=gen)
    hx = make_state(cell, 1, 9, 33, dtype=torch.float32, gen=gen)
    assert_same(ref, ours, x, hx, torch.float32, tol=2e-5)
