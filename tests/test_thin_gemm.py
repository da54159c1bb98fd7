"""Products of a few rows by a weight matrix read as it is (csrc/cpu/thin_gemm.cpp):
a short call's input projection (T * B <= 8 rows; in float32 on AVX-512, up to 32 rows
by W^T, on the 4 x 4 dot kernel) and dx, and, below the step count where packing W_hh
pays, the per-step products of a small batch (h W_hh^T forward, dgates W_hh backward).
Every row count 1-8, then 12-32 in one step (blocks of 4 rows and the rest; k of whole
vectors and a tail), gate columns that are no multiple of the W rows taken at once (8, 4,
3 or 2), k with a SIMD tail or shorter than one vector, output columns in whole and
partial chunks, columns split over two threads, varlen batches (fewer active rows than
the batch) and the LSTM's projection keep parity with torch.nn in float64 (1e-10) and
float32, outputs and every gradient; FUSED_RNN_THIN_GEMM=0 (the BLAS throughout) agrees
too."""
import pytest
import torch

from _cells import CELLS, make, make_state
from _parity import assert_same, packed_input

FLOAT_TOL = {torch.float64: None, torch.float32: 2e-5}  # None: _parity's TOL (1e-10 in float64)


@pytest.mark.parametrize("threads", (1, 2), indirect=True)
@pytest.mark.parametrize("dtype", (torch.float64, torch.float32), ids=str)
@pytest.mark.parametrize("cell", CELLS, ids=str)
# (T, B): one step of every batch size up to 8 (input projection and step on thin_gemm),
# 12-32 rows in one step (thin in float32 on AVX-512: 4 x 4 blocks, then 1-3 rows left),
# then 3, 5 and 11 steps (the steps thin, except float32 at 6 rows and 11 steps, where
# W_hh is packed from 8 steps; the projection of T * B rows thin up to 32 rows in float32
# on AVX-512, else on the BLAS).
@pytest.mark.parametrize("T,B", [(1, 1), (1, 2), (1, 3), (1, 4), (1, 5), (1, 7), (1, 8),
                                 (1, 12), (1, 16), (1, 19), (1, 32), (3, 13), (5, 3),
                                 (11, 6)], ids=str)
def test_few_rows_match_torch(threads, dtype, cell, T, B):
    # I = 5: k shorter than one vector; H = 13: 4H = 52, 3H = 39 and 13 columns, k = 13 a
    # vector and a tail.
    I, H = 5, 13
    torch.manual_seed(T * 10 + B)
    gen = torch.Generator().manual_seed(B)
    ref, ours = make(cell, dtype, input_size=I, hidden_size=H, num_layers=2)
    x = torch.randn(T, B, I, dtype=dtype, generator=gen)
    hx = make_state(cell, 2, B, H, dtype=dtype, gen=gen)
    assert_same(ref, ours, x, hx, dtype, tol=FLOAT_TOL[dtype])


@pytest.mark.parametrize("threads", (1, 2), indirect=True)
@pytest.mark.parametrize("dtype", (torch.float64, torch.float32), ids=str)
@pytest.mark.parametrize("cell", CELLS, ids=str)
@pytest.mark.parametrize("B", (16, 19, 32))
def test_one_step_long_rows(threads, dtype, cell, B):
    """One step of 16-32 rows with k = I = 40 and k = H = 21: whole SIMD vectors of k and a
    tail in the 4 x 4 blocks (float32, AVX-512), the rows and W rows left over after them."""
    torch.manual_seed(B)
    gen = torch.Generator().manual_seed(B)
    ref, ours = make(cell, dtype, input_size=40, hidden_size=21)
    x = torch.randn(1, B, 40, dtype=dtype, generator=gen)
    hx = make_state(cell, 1, B, 21, dtype=dtype, gen=gen)
    assert_same(ref, ours, x, hx, dtype, tol=FLOAT_TOL[dtype])


@pytest.mark.parametrize("threads", (1, 2), indirect=True)
@pytest.mark.parametrize("dtype", (torch.float64, torch.float32), ids=str)
@pytest.mark.parametrize("cell", CELLS, ids=str)
def test_columns_split_over_threads(threads, dtype, cell):
    """8 rows, k = 600: thin_gemm's share per thread is a few W rows, so with 2 threads
    the input projection's columns are cut between them."""
    torch.manual_seed(3)
    gen = torch.Generator().manual_seed(3)
    ref, ours = make(cell, dtype, input_size=600, hidden_size=16, bidirectional=True)
    x = torch.randn(1, 8, 600, dtype=dtype, generator=gen) * 0.1
    hx = make_state(cell, 2, 8, 16, dtype=dtype, gen=gen)
    assert_same(ref, ours, x, hx, dtype, tol=FLOAT_TOL[dtype])


@pytest.mark.parametrize("dtype", (torch.float64, torch.float32), ids=str)
@pytest.mark.parametrize("cell", CELLS, ids=str)
def test_varlen_batch(dtype, cell):
    """A packed batch of 7 rows over 9 steps: the per-step products take every row count
    from 7 down to 1 as rows finish."""
    torch.manual_seed(5)
    gen = torch.Generator().manual_seed(5)
    ref, ours = make(cell, dtype, input_size=10, hidden_size=19, bidirectional=True)
    x = packed_input(9, 7, 10, dtype, lengths=torch.tensor([9, 1, 4, 9, 2, 7, 3]), gen=gen)
    hx = make_state(cell, 2, 7, 19, dtype=dtype, gen=gen)
    assert_same(ref, ours, x, hx, dtype, tol=FLOAT_TOL[dtype])


@pytest.mark.parametrize("dtype", (torch.float64, torch.float32), ids=str)
@pytest.mark.parametrize("B", (1, 6))
def test_lstm_projection(dtype, B):
    """h = h_raw W_hr^T, one more few-row product per step (k = hidden_size)."""
    lstm = CELLS[0]
    torch.manual_seed(B)
    gen = torch.Generator().manual_seed(B)
    ref, ours = make(lstm, dtype, input_size=6, hidden_size=23, proj_size=9)
    x = torch.randn(4, B, 6, dtype=dtype, generator=gen)
    hx = make_state(lstm, 1, B, 23, proj_size=9, dtype=dtype, gen=gen)
    assert_same(ref, ours, x, hx, dtype, tol=FLOAT_TOL[dtype])


@pytest.mark.parametrize("switch", ("0", "1"))
@pytest.mark.parametrize("cell", CELLS, ids=str)
def test_switch(cell, switch, monkeypatch):
    """FUSED_RNN_THIN_GEMM=0 sends the same products to the BLAS: parity either way."""
    monkeypatch.setenv("FUSED_RNN_THIN_GEMM", switch)
    torch.manual_seed(7)
    gen = torch.Generator().manual_seed(7)
    ref, ours = make(cell, torch.float32, input_size=33, hidden_size=40)
    x = torch.randn(3, 4, 33, generator=gen)
    hx = make_state(cell, 1, 4, 40, dtype=torch.float32, gen=gen)
    assert_same(ref, ours, x, hx, torch.float32, tol=2e-5)
