"""fused_rnn.LSTM against torch.nn.LSTM on the same weights, and the raw LSTM ops."""
import io

import pytest
import torch

import fused_rnn
from _parity import assert_same, packed_input, twin

CONFIGS = [
    dict(input_size=5, hidden_size=7),
    dict(input_size=5, hidden_size=7, num_layers=2),
    dict(input_size=3, hidden_size=9, num_layers=3, bidirectional=True),
    dict(input_size=6, hidden_size=11, bidirectional=True, batch_first=True),
    dict(input_size=4, hidden_size=10, proj_size=3),
    dict(input_size=4, hidden_size=10, proj_size=6, num_layers=2, bidirectional=True),
    dict(input_size=5, hidden_size=8, bias=False),
    dict(input_size=5, hidden_size=8, bias=False, proj_size=5, batch_first=True),
    dict(input_size=17, hidden_size=33, num_layers=2),  # vector rows plus scalar tails
]
SHAPES = [(6, 3), (1, 4), (5, 1), (1, 1)]  # (T, B)


def _inputs(cfg, T, B, dtype, with_state, gen):
    L = cfg.get("num_layers", 1) * (2 if cfg.get("bidirectional") else 1)
    P = cfg.get("proj_size", 0) or cfg["hidden_size"]
    shape = (B, T, cfg["input_size"]) if cfg.get("batch_first") else (T, B, cfg["input_size"])
    x = torch.randn(*shape, dtype=dtype, generator=gen)
    hx = None
    if with_state:
        hx = (torch.randn(L, B, P, dtype=dtype, generator=gen),
              torch.randn(L, B, cfg["hidden_size"], dtype=dtype, generator=gen))
    return x, hx


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("T,B", SHAPES)
@pytest.mark.parametrize("with_state", [False, True])
def test_parity_batched(cfg, T, B, dtype, with_state):
    gen = torch.Generator().manual_seed(T * 100 + B)
    ref, ours = twin(torch.nn.LSTM, fused_rnn.LSTM, dtype=dtype, **cfg)
    x, hx = _inputs(cfg, T, B, dtype, with_state, gen)
    assert_same(ref, ours, x, hx, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("cfg", CONFIGS[:6], ids=str)
@pytest.mark.parametrize("with_state", [False, True])
def test_parity_unbatched(cfg, dtype, with_state):
    gen = torch.Generator().manual_seed(7)
    cfg = {k: v for k, v in cfg.items() if k != "batch_first"}
    ref, ours = twin(torch.nn.LSTM, fused_rnn.LSTM, dtype=dtype, **cfg)
    x, hx = _inputs(cfg, 5, 1, dtype, with_state, gen)
    x = x[:, 0]
    hx = tuple(h[:, 0] for h in hx) if hx is not None else None
    assert_same(ref, ours, x, hx, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[2], CONFIGS[5], CONFIGS[7]], ids=str)
@pytest.mark.parametrize("sorted_lengths", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_parity_packed(cfg, dtype, sorted_lengths, with_state):
    gen = torch.Generator().manual_seed(3)
    T, B = 7, 5
    ref, ours = twin(torch.nn.LSTM, fused_rnn.LSTM, dtype=dtype, **cfg)
    lengths = torch.tensor([7, 6, 3, 3, 1]) if sorted_lengths else torch.tensor([3, 7, 1, 6, 3])
    inp = packed_input(T, B, cfg["input_size"], dtype, lengths=lengths,
                       enforce_sorted=sorted_lengths)
    _, hx = _inputs(cfg, T, B, dtype, with_state, gen)
    assert_same(ref, ours, inp, hx, dtype)


def test_parity_bfloat16():
    """bfloat16 where torch.nn.LSTM accepts it on CPU: close to torch in bfloat16 and to a
    float32 reference (our cell state accumulates in float32)."""
    ref, ours = twin(torch.nn.LSTM, fused_rnn.LSTM, dtype=torch.float32, input_size=8,
                     hidden_size=16, num_layers=2)
    x = torch.randn(10, 4, 8)
    y32, _ = ref(x)
    y_ours, (h, c) = ours.bfloat16()(x.bfloat16())
    assert y_ours.dtype == h.dtype == c.dtype == torch.bfloat16
    torch.testing.assert_close(y_ours.float(), y32, atol=3e-2, rtol=3e-2)
    y_ours.float().sum().backward()
    assert ours.weight_hh_l1.grad.dtype == torch.bfloat16
    assert torch.isfinite(ours.weight_hh_l1.grad.float()).all()


def test_dropout_matches_torch_masks():
    """In training mode dropout is applied between layers; with the same seed torch's CPU
    LSTM and ours draw the same masks."""
    ref, ours = twin(torch.nn.LSTM, fused_rnn.LSTM, dtype=torch.float64, input_size=4,
                     hidden_size=6, num_layers=3, dropout=0.5, bidirectional=True)
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    torch.manual_seed(11)
    y_ref, _ = ref(x)
    torch.manual_seed(11)
    y_ours, _ = ours(x)
    torch.testing.assert_close(y_ours, y_ref, atol=1e-10, rtol=1e-10)
    ours.eval()
    ref.eval()
    torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=1e-10, rtol=1e-10)


def test_state_dict_both_ways_and_init():
    torch.manual_seed(0)
    ref = torch.nn.LSTM(4, 6, num_layers=2, proj_size=3, bidirectional=True)
    torch.manual_seed(0)
    ours = fused_rnn.LSTM(4, 6, num_layers=2, proj_size=3, bidirectional=True)
    # Same names, shapes and (same-seed) initial values as torch.nn.LSTM.
    assert [(n, p.shape) for n, p in ref.named_parameters()] == \
           [(n, p.shape) for n, p in ours.named_parameters()]
    for (n, a), (_, b) in zip(ref.named_parameters(), ours.named_parameters()):
        assert torch.equal(a, b), n
    fresh_ref = torch.nn.LSTM(4, 6, num_layers=2, proj_size=3, bidirectional=True)
    fresh_ref.load_state_dict(ours.state_dict())
    fresh_ours = fused_rnn.LSTM(4, 6, num_layers=2, proj_size=3, bidirectional=True)
    fresh_ours.load_state_dict(ref.state_dict())
    buf = io.BytesIO()
    torch.save(fresh_ours, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    x = torch.randn(3, 2, 4)
    torch.testing.assert_close(loaded(x)[0], ref(x)[0])
    assert repr(ours).replace("fused_rnn.", "") == repr(ref)


def test_module_to_dtype_and_functional_call():
    ref, ours = twin(torch.nn.LSTM, fused_rnn.LSTM, dtype=torch.float32, input_size=3,
                     hidden_size=5)
    ours.double()
    ref.double()
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=1e-6, rtol=1e-6)
    params = {k: torch.zeros_like(v) for k, v in ours.named_parameters()}
    y, _ = torch.func.functional_call(ours, params, (x,))
    assert torch.count_nonzero(y) == 0


# ----------------------------------------------------------------------------- raw ops

def _op_args(T=4, B=3, I=3, H=4, P=0, bias=True, lengths=None, reverse=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    S = P or H

    def r(*shape):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * 0.5).requires_grad_()
    return (r(T, B, I), r(4 * H, I), r(4 * H, S), r(4 * H) if bias else None,
            r(4 * H) if bias else None, r(P, H) if P else None, r(B, S), r(B, H), lengths,
            reverse)


OP_CASES = [
    dict(),
    dict(reverse=True),
    dict(P=3),
    dict(bias=False, P=2, reverse=True),
    dict(lengths=torch.tensor([4, 2, 3])),
    dict(lengths=torch.tensor([1, 4, 3]), reverse=True, P=4),
    dict(lengths=torch.tensor([0, 4, 2]), reverse=True),
]


@pytest.mark.parametrize("case", OP_CASES, ids=str)
def test_gradcheck_raw_op(case):
    args = _op_args(**case)

    def f(*a):
        return fused_rnn.ops.lstm_layer(*a)
    # The full Jacobian once; random projections of it (fast mode) for the other cases.
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-8, fast_mode=bool(case))


@pytest.mark.parametrize("case", OP_CASES, ids=str)
def test_opcheck_raw_op(case):
    args = _op_args(**case)
    torch.library.opcheck(torch.ops.fused_rnn.lstm_forward.default, args)


def test_reverse_with_lengths_matches_per_row_reference():
    """Row b of a reverse, length-masked call equals a reverse call on that row alone,
    truncated to its length; its padded outputs are zero."""
    lengths = torch.tensor([2, 5, 0, 4])
    x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, _, _ = _op_args(T=5, B=4, lengths=None)
    y, h, c = fused_rnn.ops.lstm_layer(x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, lengths, True)
    for b, n in enumerate(lengths.tolist()):
        if n == 0:
            torch.testing.assert_close(h[b], h0[b])
            torch.testing.assert_close(c[b], c0[b])
            assert torch.count_nonzero(y[:, b]) == 0
            continue
        yb, hb, cb = fused_rnn.ops.lstm_layer(x[:n, b:b + 1], w_ih, w_hh, b_ih, b_hh, None,
                                              h0[b:b + 1], c0[b:b + 1], None, True)
        torch.testing.assert_close(y[:n, b], yb[:, 0], atol=1e-12, rtol=0)
        assert torch.count_nonzero(y[n:, b]) == 0
        torch.testing.assert_close(h[b], hb[0], atol=1e-12, rtol=0)
        torch.testing.assert_close(c[b], cb[0], atol=1e-12, rtol=0)


def test_backward_does_not_overwrite_saved_tensors():
    """Two backward passes through one graph (retain_graph) give the same gradients."""
    ours = fused_rnn.LSTM(4, 5, num_layers=2).double()
    x = torch.randn(6, 2, 4, dtype=torch.float64, requires_grad=True)
    y, _ = ours(x)
    g1 = torch.autograd.grad(y.sum(), x, retain_graph=True)[0]
    g2 = torch.autograd.grad(y.sum(), x)[0]
    assert torch.equal(g1, g2)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(backend):
    torch._dynamo.reset()
    ref, ours = twin(torch.nn.LSTM, fused_rnn.LSTM, dtype=torch.float32, input_size=4,
                     hidden_size=6, num_layers=2, bidirectional=True, proj_size=2)
    compiled = torch.compile(ours, fullgraph=True, backend=backend)
    x = torch.randn(5, 3, 4, requires_grad=True)
    y, (h, c) = compiled(x)
    y_ref, (h_ref, c_ref) = ref(x)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    (y.sum() + h.sum() + c.sum()).backward()
    g = x.grad.clone()
    x.grad = None
    (y_ref.sum() + h_ref.sum() + c_ref.sum()).backward()
    torch.testing.assert_close(g, x.grad, atol=1e-5, rtol=1e-5)
