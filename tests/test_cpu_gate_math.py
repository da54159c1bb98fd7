"""The CPU kernels' float32 exp and tanh (csrc/cpu/vec_ops.h, vec_math) are our own
polynomials, not Sleef's: measured here to stay within a few ulp of the exact values
over the whole range, and to keep NaN and the infinities as torch does. Read through
the modules, with the values spread over the hidden units (the pointwise loop runs along
them, in SIMD vectors plus a scalar tail): an RNN whose only weight is W_ih, fed one-hot
rows, computes tanh(W_ih[j, b]) at unit j of row b; a GRU whose only weight feeds the
update gate, with h0 = 1, computes sigmoid of it."""
import pytest
import torch

import fused_rnn

F32 = torch.float32
MAX_ULP = 4  # torch's own float32 sigmoid is 2.3 ulp off here, its tanh 0.5

pytestmark = pytest.mark.skipif(fused_rnn.build_info()["cpu_capability"] == "default",
                                reason="no SIMD build: the scalar path uses libm")


def _grid():
    pos = torch.logspace(-30, 2, 20000, dtype=torch.float64)
    return torch.cat([torch.linspace(-100, 100, 200001, dtype=torch.float64),
                      torch.linspace(-1, 1, 200001, dtype=torch.float64), pos, -pos,
                      torch.tensor([0.0, 87.0, 88.7, 89.0, -87.0, -88.7, -89.0],
                                   dtype=torch.float64)]).to(F32)


_UNITS = 2045  # hidden units: whole vectors plus a tail at every vector width


def _spread(x):
    """x as W_ih [units, rows] (x[b * units + j] at [j, b]) and the one-hot input that
    picks column b for batch row b."""
    rows = -(-x.numel() // _UNITS)
    w = torch.zeros(rows * _UNITS, dtype=F32)
    w[:x.numel()] = x
    return w.view(rows, _UNITS).t(), torch.eye(rows, dtype=F32).unsqueeze(0)


def _tanh(x):
    w, onehot = _spread(x)
    m = fused_rnn.RNN(w.shape[1], _UNITS, nonlinearity="tanh", dtype=F32)
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.weight_ih_l0.copy_(w)
        return m(onehot)[0].reshape(-1)[:x.numel()]


def _sigmoid(x):
    w, onehot = _spread(x)
    m = fused_rnn.GRU(w.shape[1], _UNITS, dtype=F32)
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.weight_ih_l0[_UNITS:2 * _UNITS] = w  # rows r, z, n: only z sees x; n = tanh(0) = 0
        h0 = torch.ones(1, w.shape[1], _UNITS)
        return m(onehot, h0)[0].reshape(-1)[:x.numel()]


def _ulps(y, exact):
    ref = exact.to(F32).abs()
    ulp = (torch.nextafter(ref, torch.tensor(float("inf"))) - ref).double()
    ulp = ulp.clamp(min=torch.finfo(F32).tiny)
    return (y.double() - exact).abs() / ulp


@pytest.mark.parametrize("fn,exact", [(_tanh, torch.tanh), (_sigmoid, torch.sigmoid)],
                         ids=["tanh", "sigmoid"])
def test_within_a_few_ulp(fn, exact):
    x = _grid()
    err = _ulps(fn(x), exact(x.double()))
    worst = int(err.argmax())
    assert err.max() <= MAX_ULP, f"{err.max():.2f} ulp at x = {x[worst].item()!r}"


def test_tanh_specials():
    x = torch.tensor([float("inf"), -float("inf"), float("nan"), 1e-40, 20.0, -20.0, 1e10,
                      -1e10, 3e38, -3e38])
    y = _tanh(x)
    assert y[:2].tolist() == [1.0, -1.0]
    assert torch.isnan(y[2])
    assert y[3].item() == pytest.approx(1e-40, rel=1e-3)
    assert y[4:].tolist() == [1.0, -1.0] * 3


def test_sigmoid_saturates_exactly():
    y = _sigmoid(torch.tensor([100.0, -100.0, 1e4, -1e4, 1e10, -1e10, 3e38, -3e38,
                               float("inf"), -float("inf"), float("nan")]))
    assert y[:10].tolist() == [1.0, 0.0] * 5
    assert torch.isnan(y[10])
