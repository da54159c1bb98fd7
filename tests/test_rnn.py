"""fused_rnn.RNN / RNNCell against torch.nn.RNN / RNNCell on the same weights (tanh and
relu), and the raw RNN ops."""
import io

import pytest
import torch

import fused_rnn
from _parity import TOL, assert_same, packed_input, twin



@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The cases are tiny: on a loaded 2-core machine, waking a second OpenMP thread per
    op makes them ~50x slower (torch.nn's and ours alike) and tests nothing more."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


NONLINEARITIES = ["tanh", "relu"]
CONFIGS = [
    dict(input_size=5, hidden_size=7),
    dict(input_size=5, hidden_size=7, num_layers=2),
    dict(input_size=3, hidden_size=9, num_layers=3, bidirectional=True),
    dict(input_size=6, hidden_size=11, bidirectional=True, batch_first=True),
    dict(input_size=5, hidden_size=8, bias=False),
    dict(input_size=5, hidden_size=8, bias=False, num_layers=2, batch_first=True),
    dict(input_size=17, hidden_size=33, num_layers=2),  # vector rows plus scalar tails
]
SHAPES = [(6, 3), (1, 4), (5, 1)]  # (T, B)


def _cfg_id(c):
    return "-".join(f"{k}={v}" for k, v in c.items())


def _inputs(cfg, T, B, dtype, with_state, gen):
    L = cfg.get("num_layers", 1) * (2 if cfg.get("bidirectional") else 1)
    shape = (B, T, cfg["input_size"]) if cfg.get("batch_first") else (T, B, cfg["input_size"])
    x = torch.randn(*shape, dtype=dtype, generator=gen)
    hx = torch.randn(L, B, cfg["hidden_size"], dtype=dtype, generator=gen) if with_state else None
    return x, hx


@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("cfg", CONFIGS, ids=_cfg_id)
@pytest.mark.parametrize("T,B", SHAPES)
@pytest.mark.parametrize("with_state", [False, True])
def test_parity_batched(cfg, T, B, dtype, with_state, nonlinearity):
    gen = torch.Generator().manual_seed(T * 100 + B)
    ref, ours = twin(torch.nn.RNN, fused_rnn.RNN, dtype=dtype, nonlinearity=nonlinearity, **cfg)
    x, hx = _inputs(cfg, T, B, dtype, with_state, gen)
    assert_same(ref, ours, x, hx, dtype)


@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("cfg", CONFIGS[:4], ids=_cfg_id)
@pytest.mark.parametrize("with_state", [False, True])
def test_parity_unbatched(cfg, dtype, with_state, nonlinearity):
    gen = torch.Generator().manual_seed(7)
    cfg = {k: v for k, v in cfg.items() if k != "batch_first"}
    ref, ours = twin(torch.nn.RNN, fused_rnn.RNN, dtype=dtype, nonlinearity=nonlinearity, **cfg)
    x, hx = _inputs(cfg, 5, 1, dtype, with_state, gen)
    assert_same(ref, ours, x[:, 0], hx[:, 0] if hx is not None else None, dtype)


@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[2], CONFIGS[3], CONFIGS[5]], ids=_cfg_id)
@pytest.mark.parametrize("sorted_lengths", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_parity_packed(cfg, dtype, sorted_lengths, with_state, nonlinearity):
    gen = torch.Generator().manual_seed(3)
    T, B = 7, 5
    cfg = {k: v for k, v in cfg.items() if k != "batch_first"}  # packed input ignores it
    ref, ours = twin(torch.nn.RNN, fused_rnn.RNN, dtype=dtype, nonlinearity=nonlinearity, **cfg)
    lengths = torch.tensor([7, 6, 3, 3, 1]) if sorted_lengths else torch.tensor([3, 7, 1, 6, 3])
    inp = packed_input(T, B, cfg["input_size"], dtype, lengths=lengths,
                       enforce_sorted=sorted_lengths)
    _, hx = _inputs(cfg, T, B, dtype, with_state, gen)
    assert_same(ref, ours, inp, hx, dtype)


@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
def test_relu_dead_units_get_no_gradient(nonlinearity):
    """Large negative biases drive many relu units to exactly 0 (where relu' = 0); the
    gradients still match torch, which also uses the output's sign."""
    torch.manual_seed(2)
    ref, ours = twin(torch.nn.RNN, fused_rnn.RNN, dtype=torch.float64, input_size=4,
                     hidden_size=9, num_layers=2, nonlinearity=nonlinearity)
    with torch.no_grad():
        for m in (ref, ours):
            m.bias_ih_l0.fill_(-0.7)
            m.bias_hh_l1.fill_(-0.5)
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    if nonlinearity == "relu":
        y, _ = ref(x)
        assert (y == 0).float().mean() > 0.3
    assert_same(ref, ours, x, None, torch.float64)


@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
def test_parity_wide_rows_on_two_threads(nonlinearity):
    """Rows wide enough that parallel_rows splits each into pieces across threads."""
    gen = torch.Generator().manual_seed(4)
    ref, ours = twin(torch.nn.RNN, fused_rnn.RNN, dtype=torch.float64, input_size=3,
                     hidden_size=700, bidirectional=True, nonlinearity=nonlinearity)
    lengths = torch.tensor([3, 1, 2, 3, 2, 3])
    inp = packed_input(3, 6, 3, torch.float64, lengths=lengths, gen=gen)
    torch.set_num_threads(2)
    try:
        assert_same(ref, ours, inp, None, torch.float64)
    finally:
        torch.set_num_threads(1)


@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
def test_parity_bfloat16(nonlinearity):
    """bfloat16: close to a float32 reference (our states are computed in float32)."""
    ref, ours = twin(torch.nn.RNN, fused_rnn.RNN, dtype=torch.float32, input_size=8,
                     hidden_size=16, num_layers=2, nonlinearity=nonlinearity)
    x = torch.randn(10, 4, 8)
    y32, _ = ref(x)
    y_ours, h = ours.bfloat16()(x.bfloat16())
    assert y_ours.dtype == h.dtype == torch.bfloat16
    torch.testing.assert_close(y_ours.float(), y32, atol=3e-2, rtol=3e-2)
    y_ours.float().sum().backward()
    assert ours.weight_hh_l1.grad.dtype == torch.bfloat16
    assert torch.isfinite(ours.weight_hh_l1.grad.float()).all()


@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
def test_dropout_matches_torch_masks(nonlinearity):
    """In training mode dropout is applied between layers; with the same seed torch's CPU
    RNN and ours draw the same masks."""
    ref, ours = twin(torch.nn.RNN, fused_rnn.RNN, dtype=torch.float64, input_size=4,
                     hidden_size=6, num_layers=3, dropout=0.5, bidirectional=True,
                     nonlinearity=nonlinearity)
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    torch.manual_seed(11)
    y_ref, _ = ref(x)
    torch.manual_seed(11)
    y_ours, _ = ours(x)
    torch.testing.assert_close(y_ours, y_ref, atol=1e-10, rtol=1e-10)
    ours.eval()
    ref.eval()
    torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=1e-10, rtol=1e-10)


# ----------------------------------------------------------------------------- module API

@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
def test_state_dict_both_ways_and_init(nonlinearity):
    kw = dict(num_layers=2, bidirectional=True, nonlinearity=nonlinearity)
    torch.manual_seed(0)
    ref = torch.nn.RNN(4, 6, **kw)
    torch.manual_seed(0)
    ours = fused_rnn.RNN(4, 6, **kw)
    assert ours.mode == ref.mode and ours.nonlinearity == ref.nonlinearity
    # Same names, shapes and (same-seed) initial values as torch.nn.RNN.
    assert [(n, p.shape) for n, p in ref.named_parameters()] == \
           [(n, p.shape) for n, p in ours.named_parameters()]
    for (n, a), (_, b) in zip(ref.named_parameters(), ours.named_parameters()):
        assert torch.equal(a, b), n
    fresh_ref = torch.nn.RNN(4, 6, **kw)
    fresh_ref.load_state_dict(ours.state_dict())
    fresh_ours = fused_rnn.RNN(4, 6, **kw)
    fresh_ours.load_state_dict(ref.state_dict())
    buf = io.BytesIO()
    torch.save(fresh_ours, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    x = torch.randn(3, 2, 4)
    torch.testing.assert_close(loaded(x)[0], ref(x)[0])
    torch.testing.assert_close(ours(x)[0], fresh_ref(x)[0])
    assert repr(ours).replace("fused_rnn.", "") == repr(ref)


def test_constructor_positional_nonlinearity_like_torch():
    """torch.nn.RNN takes nonlinearity as its 4th positional argument, then bias, ..."""
    args = (3, 5, 2, "relu", False, True, 0.0, True)
    ref, ours = torch.nn.RNN(*args), fused_rnn.RNN(*args)
    for attr in ("mode", "nonlinearity", "num_layers", "bias", "batch_first", "bidirectional"):
        assert getattr(ours, attr) == getattr(ref, attr), attr
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 4, 3)  # batch_first
    torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=1e-5, rtol=1e-5)
    assert fused_rnn.RNN(3, 5).mode == "RNN_TANH"


@pytest.mark.parametrize("args,kwargs", [
    ((3, 5, 1, "sigmoid"), {}),
    ((3, 5), dict(nonlinearity="gelu")),
    ((3, 5), dict(proj_size=2)),
])
def test_constructor_errors_like_torch(args, kwargs):
    with pytest.raises(ValueError) as ref_err:
        torch.nn.RNN(*args, **kwargs)
    with pytest.raises(ValueError) as our_err:
        fused_rnn.RNN(*args, **kwargs)
    assert str(our_err.value) == str(ref_err.value)


def _bad_forward_cases():
    x = torch.randn(4, 2, 3)
    return [
        ("4-D input", (torch.randn(4, 2, 3, 1),), {}),
        ("wrong input_size", (torch.randn(4, 2, 5),), {}),
        ("h0 wrong batch", (x, torch.randn(1, 3, 5)), {}),
        ("h0 wrong hidden", (x, torch.randn(1, 2, 4)), {}),
        ("h0 wrong layers", (x, torch.randn(2, 2, 5)), {}),
        ("h0 2-D for batched", (x, torch.randn(2, 5)), {}),
        ("h0 3-D for unbatched", (torch.randn(4, 3), torch.randn(1, 1, 5)), {}),
        ("h0 dtype", (x, torch.randn(1, 2, 5, dtype=torch.float64)), {}),
    ]


@pytest.mark.parametrize("name,args,kwargs", _bad_forward_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_forward_errors_like_torch(name, args, kwargs):
    ref, ours = torch.nn.RNN(3, 5), fused_rnn.RNN(3, 5)
    with pytest.raises(Exception) as ref_err:
        ref(*args, **kwargs)
    with pytest.raises(Exception) as our_err:
        ours(*args, **kwargs)
    assert type(our_err.value) is type(ref_err.value), (our_err.value, ref_err.value)


def test_never_calls_torchs_rnn_kernels(monkeypatch):
    """Forward and backward of ours run with torch's RNN kernels made to fail."""
    def refuse(*args, **kwargs):
        raise AssertionError("torch's own RNN kernel was called")
    for name in ("rnn_tanh", "rnn_relu", "rnn_tanh_cell", "rnn_relu_cell"):
        monkeypatch.setattr(torch._VF, name, refuse, raising=False)
        monkeypatch.setattr(torch, name, refuse)
    rnn = fused_rnn.RNN(3, 4, num_layers=2, bidirectional=True, nonlinearity="relu")
    cell = fused_rnn.RNNCell(3, 4)
    x = torch.randn(5, 2, 3, requires_grad=True)
    y, h = rnn(x)
    (y.sum() + h.sum() + cell(x[0]).sum()).backward()
    assert x.grad is not None


# ----------------------------------------------------------------------------- RNNCell

@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("form", ["batched", "batched_no_hx", "unbatched", "unbatched_no_hx"])
def test_cell_parity(nonlinearity, dtype, bias, form):
    gen = torch.Generator().manual_seed(5)
    ref, ours = twin(torch.nn.RNNCell, fused_rnn.RNNCell, dtype=dtype, input_size=6,
                     hidden_size=19, bias=bias, nonlinearity=nonlinearity)
    batch = () if form.startswith("unbatched") else (4,)
    x = torch.randn(*batch, 6, dtype=dtype, generator=gen)
    hx = None if form.endswith("no_hx") else torch.randn(*batch, 19, dtype=dtype, generator=gen)
    assert_same(ref, ours, x, hx, dtype)


def test_cell_sequence_of_steps_matches_torch():
    """Stepping the cell through a sequence, feeding h back, matches torch.nn.RNNCell."""
    ref, ours = twin(torch.nn.RNNCell, fused_rnn.RNNCell, dtype=torch.float64, input_size=3,
                     hidden_size=5, nonlinearity="relu")
    xs = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True)

    def unroll(cell):
        h, total = None, 0
        for x in xs:
            h = cell(x, h)
            total = total + (h * h).sum()
        return torch.autograd.grad(total, [xs, *cell.parameters()])
    for a, b in zip(unroll(ref), unroll(ours)):
        torch.testing.assert_close(b, a, **TOL[torch.float64])


def test_cell_state_dict_init_and_repr():
    torch.manual_seed(1)
    ref = torch.nn.RNNCell(4, 6, bias=False, nonlinearity="relu")
    torch.manual_seed(1)
    ours = fused_rnn.RNNCell(4, 6, bias=False, nonlinearity="relu")
    assert list(ref.state_dict()) == list(ours.state_dict())
    for k, v in ref.state_dict().items():
        assert torch.equal(v, ours.state_dict()[k]), k
    ref.load_state_dict(fused_rnn.RNNCell(4, 6, bias=False).state_dict())
    assert repr(ours).replace("fused_rnn.", "") == repr(torch.nn.RNNCell(4, 6, bias=False,
                                                                      nonlinearity="relu"))


def _bad_cell_cases():
    return [
        ("3-D input", torch.randn(2, 3, 3), None),
        ("3-D hx", torch.randn(2, 3), torch.randn(1, 2, 5)),
        ("wrong input_size", torch.randn(2, 4), None),
        ("hx wrong batch", torch.randn(2, 3), torch.randn(3, 5)),
        ("hx wrong hidden", torch.randn(2, 3), torch.randn(2, 4)),
        ("2-D hx with 1-D input", torch.randn(3), torch.randn(1, 5)),
        ("hx dtype", torch.randn(2, 3), torch.randn(2, 5, dtype=torch.float64)),
        ("input dtype", torch.randn(2, 3, dtype=torch.float64), None),
    ]


@pytest.mark.parametrize("name,x,hx", _bad_cell_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_cell_errors_like_torch(name, x, hx):
    ref, ours = torch.nn.RNNCell(3, 5), fused_rnn.RNNCell(3, 5)
    with pytest.raises(Exception) as ref_err:
        ref(x, hx)
    with pytest.raises(Exception) as our_err:
        ours(x, hx)
    assert type(our_err.value) is type(ref_err.value), (our_err.value, ref_err.value)


def test_cell_bad_nonlinearity_raises_at_forward_like_torch():
    ref = torch.nn.RNNCell(3, 5, nonlinearity="gelu")  # torch accepts it here...
    ours = fused_rnn.RNNCell(3, 5, nonlinearity="gelu")
    x = torch.randn(2, 3)
    with pytest.raises(RuntimeError, match="Unknown nonlinearity: gelu"):
        ref(x)
    with pytest.raises(RuntimeError, match="Unknown nonlinearity: gelu"):  # ...and fails here
        ours(x)


# ----------------------------------------------------------------------------- raw ops

def _op_args(T=4, B=3, I=3, H=5, bias=True, lengths=None, reverse=False, relu=False, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * 0.5).requires_grad_()
    return (r(T, B, I), r(H, I), r(H, H), r(H) if bias else None, r(H) if bias else None,
            r(B, H), lengths, reverse, relu)


OP_CASES = [
    dict(),
    dict(relu=True),
    dict(reverse=True),
    dict(bias=False, reverse=True, relu=True),
    dict(lengths=torch.tensor([4, 2, 3])),
    dict(lengths=torch.tensor([1, 4, 3]), reverse=True, relu=True),
    dict(lengths=torch.tensor([0, 4, 2]), reverse=True),
    dict(T=3, B=2, I=4, H=11, relu=True),  # a full vector and a tail per row
]


def _layer(x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse, relu):
    return fused_rnn.ops.rnn_layer(x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse,
                                   "relu" if relu else "tanh")


@pytest.mark.parametrize("case", OP_CASES, ids=str)
def test_gradcheck_raw_op(case):
    args = _op_args(**case)
    # The full Jacobian for the plain cases; random projections of it (fast mode) for the rest.
    assert torch.autograd.gradcheck(_layer, args, eps=1e-6, atol=1e-8,
                                    fast_mode="lengths" in case)


@pytest.mark.parametrize("case", OP_CASES, ids=str)
def test_opcheck_raw_op(case):
    torch.library.opcheck(torch.ops.fused_rnn.rnn_forward.default, _op_args(**case))


def test_opcheck_backward_op():
    x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse, relu = _op_args(
        lengths=torch.tensor([2, 4, 0]), reverse=True, relu=True)
    _, _, hs = torch.ops.fused_rnn.rnn_forward(x, w_ih, w_hh, b_ih, b_hh, h0, lengths,
                                               reverse, relu)
    dy, dh_n = torch.randn(4, 3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    args = (dy, dh_n, x.detach(), w_ih.detach(), w_hh.detach(), lengths, reverse, relu, True,
            hs.detach())
    torch.library.opcheck(torch.ops.fused_rnn.rnn_backward.default, args,
                          test_utils=("test_schema", "test_faketensor"))


def _reference_layer(x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse, relu):
    """The recurrence written out step by step in plain torch (a test oracle only)."""
    act = torch.relu if relu else torch.tanh
    T, B, _ = x.shape
    lengths = torch.full((B,), T) if lengths is None else lengths
    y = x.new_zeros(T, B, w_ih.shape[0])
    h = h0
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        a = x[t] @ w_ih.T + h @ w_hh.T
        if b_ih is not None:
            a = a + b_ih + b_hh
        # Packed rows of a reverse pass start at their own last step, i.e. they are
        # inactive while t >= length.
        active = (lengths > t).unsqueeze(1)
        h = torch.where(active, act(a), h)
        y[t] = torch.where(active, h, torch.zeros_like(h))
    return y, h


@pytest.mark.parametrize("case", OP_CASES, ids=str)
def test_raw_op_matches_step_by_step_reference(case):
    args = _op_args(**case)
    y, h = _layer(*args)
    y_ref, h_ref = _reference_layer(*args)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(h, h_ref, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("change,match", [
    (dict(x=torch.randn(4, 3)), "x must be 3-D"),
    (dict(w_ih=torch.randn(5, 4, dtype=torch.float64)), "w_ih must have shape \\[5, 3\\]"),
    (dict(w_hh=torch.randn(5, 4, dtype=torch.float64)), "w_hh must have shape \\[5, 5\\]"),
    (dict(b_ih=torch.randn(6, dtype=torch.float64)), "b_ih must have shape \\[5\\]"),
    (dict(b_hh=None), "b_ih and b_hh must both be given"),
    (dict(h0=torch.randn(2, 5, dtype=torch.float64)), "h0 must have shape \\[3, 5\\]"),
    (dict(h0=torch.randn(3, 5)), "h0 must have the dtype of x"),
    (dict(lengths=torch.tensor([1, 2])), "lengths must have shape \\[3\\]"),
    (dict(lengths=torch.tensor([1, 5, 2])), "lengths\\[1\\] = 5 is outside"),
    (dict(lengths=torch.tensor([1, 2, 2], dtype=torch.int32)), "lengths must be an int64"),
    (dict(x=torch.ones(4, 3, 3, dtype=torch.int32)), "x must be float32, float64, float16 or bfloat16"),
])
def test_raw_op_bad_arguments_name_the_argument(change, match):
    names = ["x", "w_ih", "w_hh", "b_ih", "b_hh", "h0", "lengths", "reverse", "relu"]
    args = dict(zip(names, (a.detach() if isinstance(a, torch.Tensor) else a
                            for a in _op_args())))
    args.update(change)
    with pytest.raises(RuntimeError, match="fused_rnn::rnn_forward: " + match):
        torch.ops.fused_rnn.rnn_forward(*args.values())


def test_rnn_layer_rejects_unknown_nonlinearity():
    x, w_ih, w_hh, b_ih, b_hh, h0, *_ = _op_args()
    with pytest.raises(ValueError, match="Unknown nonlinearity 'gelu'"):
        fused_rnn.ops.rnn_layer(x, w_ih, w_hh, b_ih, b_hh, h0, nonlinearity="gelu")


def test_backward_does_not_overwrite_saved_tensors():
    """Two backward passes through one graph (retain_graph) give the same gradients."""
    ours = fused_rnn.RNN(4, 5, num_layers=2, nonlinearity="relu").double()
    x = torch.randn(6, 2, 4, dtype=torch.float64, requires_grad=True)
    y, _ = ours(x)
    g1 = torch.autograd.grad(y.sum(), x, retain_graph=True)[0]
    g2 = torch.autograd.grad(y.sum(), x)[0]
    assert torch.equal(g1, g2)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(backend):
    torch._dynamo.reset()
    ref, ours = twin(torch.nn.RNN, fused_rnn.RNN, dtype=torch.float32, input_size=4,
                     hidden_size=6, num_layers=2, bidirectional=True, nonlinearity="relu")
    compiled = torch.compile(ours, fullgraph=True, backend=backend)
    x = torch.randn(5, 3, 4, requires_grad=True)
    y, h = compiled(x)
    y_ref, h_ref = ref(x)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=1e-5)
    (y.sum() + h.sum()).backward()
    g = x.grad.clone()
    x.grad = None
    (y_ref.sum() + h_ref.sum()).backward()
    torch.testing.assert_close(g, x.grad, atol=1e-5, rtol=1e-5)


def test_cell_torch_compile_fullgraph():
    torch._dynamo.reset()
    ref, ours = twin(torch.nn.RNNCell, fused_rnn.RNNCell, dtype=torch.float32, input_size=4,
                     hidden_size=6)
    compiled = torch.compile(ours, fullgraph=True, backend="aot_eager")
    x, h = torch.randn(3, 4), torch.randn(3, 6)
    torch.testing.assert_close(compiled(x, h), ref(x, h), atol=1e-5, rtol=1e-5)
