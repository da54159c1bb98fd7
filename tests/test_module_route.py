"""A module call on plain tensors runs its whole forward in one C++ call
(fused_rnn::module_forward, csrc/module_forward.cpp); everything else runs the module's
Python route (rnn_base.py, _forward_python), layer by layer. Both routes give the same
outputs, final states and gradients bit for bit, and the C++ route declines (returns no
tensors, before any work) wherever the Python route must run or raise its error."""
import pytest
import torch

import fused_rnn
from fused_rnn import cells, rnn_base
from _parity import run

module_forward = torch.ops.fused_rnn.module_forward.default
cell_forward = torch.ops.fused_rnn.cell_forward.default

MODULES = {
    "lstm": (fused_rnn.LSTM, {}),
    "lstm_proj": (fused_rnn.LSTM, {"proj_size": 3}),
    "gru": (fused_rnn.GRU, {}),
    "rnn_tanh": (fused_rnn.RNN, {}),
    "rnn_relu": (fused_rnn.RNN, {"nonlinearity": "relu"}),
}
CONFIGS = [
    dict(),
    dict(num_layers=2, bidirectional=True),
    dict(num_layers=3, dropout=0.5),
    dict(bias=False, batch_first=True),
    dict(num_layers=2, bidirectional=True, batch_first=True),
]
T, B, I, H = 5, 3, 4, 6


def _module(name, config, dtype=torch.float64):
    cls, extra = MODULES[name]
    torch.manual_seed(0)
    return cls(I, H, **extra, **config, dtype=dtype)


def _inputs(module, unbatched, with_hx, dtype=torch.float64):
    torch.manual_seed(1)
    shape = (T, I) if unbatched else (B, T, I) if module.batch_first else (T, B, I)
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    if not with_hx:
        return x, None
    L = module.num_layers * (2 if module.bidirectional else 1)
    sizes = (module.proj_size or H, H) if isinstance(module, fused_rnn.LSTM) else (H,)
    hx = tuple(torch.randn((L, f) if unbatched else (L, B, f), dtype=dtype, requires_grad=True)
               for f in sizes)
    return x, hx if len(hx) == 2 else hx[0]


class _Calls:
    """Wraps module_forward or cell_forward: how many calls, and how many it declined."""

    def __init__(self, op):
        self.op = op
        self.calls = self.declined = 0

    def __call__(self, *args):
        self.calls += 1
        out = self.op(*args)
        self.declined += not out
        return out


def _run_route(target, x, hx, cpp, monkeypatch, autocast=None):
    """run() of a module or cell through the C++ route (cpp) or the Python route, counting
    the C++ op's calls; the forward under torch.autocast(autocast) if given."""
    if isinstance(target, torch.nn.RNNCellBase):
        where, name, op = cells, "cell_forward", cell_forward
    else:
        where, name, op = rnn_base, "module_forward", module_forward
    with monkeypatch.context() as m:
        calls = _Calls(op)
        m.setattr(where, name, calls)
        if not cpp:
            m.setattr(where, "eager_states", lambda input, hx: None)
        torch.manual_seed(2)  # the same dropout masks on both routes
        outs, grads = run(target, x, hx, autocast=autocast)
    return outs, grads, calls


def _same(a, b, exact):
    if exact:
        return torch.equal(a, b)
    # On CUDA cuBLAS may pick another kernel for other buffers' alignment.
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    return True


def _assert_routes_agree(target, x, hx, monkeypatch, autocast=None, exact=True):
    """Both routes: the same outputs (and dtypes and strides) and gradients, bit for bit
    (exact; else to float64's rounding); the C++ route taken, the Python route without
    calling the C++ op."""
    cpp_outs, cpp_grads, cpp_calls = _run_route(target, x, hx, True, monkeypatch, autocast)
    py_outs, py_grads, py_calls = _run_route(target, x, hx, False, monkeypatch, autocast)
    assert (cpp_calls.calls, cpp_calls.declined) == (1, 0), "the C++ route was not taken"
    assert py_calls.calls == 0
    assert len(cpp_outs) == len(py_outs)
    for a, b in zip(cpp_outs, py_outs):
        assert a.shape == b.shape and a.stride() == b.stride() and a.dtype == b.dtype
        assert a.device == x.device and _same(a, b, exact)
    assert len(cpp_grads) == len(py_grads)
    for a, b in zip(cpp_grads, py_grads):
        assert (a is None) == (b is None)
        assert a is None or (a.dtype == b.dtype and _same(a, b, exact))


@pytest.mark.parametrize("config", CONFIGS,
                         ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()) or "plain")
@pytest.mark.parametrize("name", list(MODULES))
@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
@pytest.mark.parametrize("with_hx", [False, True], ids=["zeros", "hx"])
def test_routes_agree_bitwise(name, config, unbatched, with_hx, monkeypatch):
    module = _module(name, config)
    x, hx = _inputs(module, unbatched, with_hx)
    _assert_routes_agree(module, x, hx, monkeypatch)


def _on_cuda(x, hx):
    """x and hx as leaves on the GPU."""
    def leaf(t):
        return t.detach().cuda().requires_grad_(t.requires_grad)
    return leaf(x), None if hx is None else (tuple(map(leaf, hx)) if isinstance(hx, tuple)
                                             else leaf(hx))


cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda_only
@pytest.mark.parametrize("config", [dict(), dict(num_layers=2, bidirectional=True,
                                                 batch_first=True)], ids=["plain", "deep"])
@pytest.mark.parametrize("name", list(MODULES))
@pytest.mark.parametrize("with_hx", [False, True], ids=["zeros", "hx"])
def test_routes_agree_on_cuda(name, config, with_hx, monkeypatch):
    module = _module(name, config).cuda()
    x, hx = _on_cuda(*_inputs(module, False, with_hx))
    _assert_routes_agree(module, x, hx, monkeypatch, exact=False)


@pytest.mark.parametrize("name", list(MODULES))
def test_routes_agree_without_grad_and_in_eval(name, monkeypatch):
    module = _module(name, dict(num_layers=2, dropout=0.3)).eval()
    x, hx = _inputs(module, False, True)
    with torch.no_grad():
        cpp = module(x, hx)
        with monkeypatch.context() as m:
            m.setattr(rnn_base, "eager_states", lambda input, hx: None)
            py = module(x, hx)
    cpp_flat = [cpp[0], *(cpp[1] if isinstance(cpp[1], tuple) else (cpp[1],))]
    py_flat = [py[0], *(py[1] if isinstance(py[1], tuple) else (py[1],))]
    for a, b in zip(cpp_flat, py_flat):
        assert a.grad_fn is None and torch.equal(a, b)


def _declined_cases():
    """(name, module config, input, hx) that the Python route rejects or must run."""
    f64 = dict(dtype=torch.float64)
    x = torch.randn(T, B, I, **f64)
    h = torch.randn(1, B, H, **f64)
    return [
        ("4-D input", {}, torch.randn(1, T, B, I, **f64), None),
        ("integer input", {}, torch.ones(T, B, I, dtype=torch.int64), None),
        ("input size", {}, torch.randn(T, B, I + 1, **f64), None),
        ("empty sequence", {}, torch.randn(0, B, I, **f64), None),
        ("dtype against weights", {}, x.float(), None),
        ("hx batch", {}, x, torch.randn(1, B + 1, H, **f64)),
        ("hx layers", {}, x, torch.randn(2, B, H, **f64)),
        ("hx 2-D for batched input", {}, x, h[0]),
        ("hx dtype", {}, x, h.float()),
        ("hx count", {}, x, (h, h, h)),
        ("meta device", {}, x.to("meta"), None),
    ]


@pytest.mark.parametrize("case", _declined_cases(), ids=lambda c: c[0])
@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_cpp_route_declines_what_the_python_route_handles(name, case):
    _, config, x, hx = case
    module = _module(name, config)
    if name == "lstm" and isinstance(hx, torch.Tensor):
        hx = (hx, hx)
    states = () if hx is None else hx if isinstance(hx, tuple) else (hx,)
    args = (module.mode, x, states, module.flat_layer_weights(), module.num_layers,
            module.bidirectional, module.batch_first, module.dropout, module.training,
            module.input_size, module.hidden_size, module.proj_size)
    if x.device.type == "meta":
        module = module.to("meta")
        args = (*args[:3], module.flat_layer_weights(), *args[4:])
    assert module_forward(*args) == []


def test_cpp_route_declines_under_transforms_and_tracing(monkeypatch):
    """The Python checks (ops.eager_states) keep the C++ route out of torch.func, forward
    AD and torch.jit.trace; their results still match torch.nn's (test_func_transforms.py)."""
    module = _module("gru", {})
    x, _ = _inputs(module, False, False)
    calls = _Calls(module_forward)
    monkeypatch.setattr(rnn_base, "module_forward", calls)
    torch.func.vmap(lambda xb: module(xb)[0], in_dims=1, out_dims=1)(x)
    with torch.autograd.forward_ad.dual_level():
        module(torch.autograd.forward_ad.make_dual(x.detach(), torch.ones_like(x)))
    torch.jit.trace(module, (x.detach(),), check_trace=False)
    assert calls.calls == 0
    module(x)
    assert calls.calls == 1


def test_cpp_route_sees_reparametrized_weights():
    """flat_layer_weights reads the module's current weights, as the Python route did."""
    module = _module("gru", {})
    x, _ = _inputs(module, False, False)
    before = module(x)[0]
    torch.nn.utils.parametrize.register_parametrization(module, "weight_hh_l0", _Double())
    after = module(x)[0]
    expect = module._forward_python(x, None)[0]
    assert not torch.equal(before, after) and torch.equal(after, expect)


class _Double(torch.nn.Module):
    def forward(self, w):
        return 2 * w


# ----------------------------------------------------------------------------- cells


CELLS = {
    "lstm": (fused_rnn.LSTMCell, {}),
    "gru": (fused_rnn.GRUCell, {}),
    "rnn_tanh": (fused_rnn.RNNCell, {}),
    "rnn_relu": (fused_rnn.RNNCell, {"nonlinearity": "relu"}),
}


def _cell(name, bias=True):
    cls, extra = CELLS[name]
    torch.manual_seed(0)
    return cls(I, H, bias=bias, **extra, dtype=torch.float64)


def _cell_inputs(name, unbatched, with_hx):
    torch.manual_seed(1)
    x = torch.randn((I,) if unbatched else (B, I), dtype=torch.float64, requires_grad=True)
    if not with_hx:
        return x, None
    shape = (H,) if unbatched else (B, H)
    hx = tuple(torch.randn(shape, dtype=torch.float64, requires_grad=True)
               for _ in range(2 if name == "lstm" else 1))
    return x, hx if len(hx) == 2 else hx[0]


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
@pytest.mark.parametrize("with_hx", [False, True], ids=["zeros", "hx"])
def test_cell_routes_agree_bitwise(name, bias, unbatched, with_hx, monkeypatch):
    cell = _cell(name, bias)
    x, hx = _cell_inputs(name, unbatched, with_hx)
    _assert_routes_agree(cell, x, hx, monkeypatch)


@cuda_only
@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("with_hx", [False, True], ids=["zeros", "hx"])
def test_cell_routes_agree_on_cuda(name, with_hx, monkeypatch):
    cell = _cell(name, True).cuda()
    x, hx = _on_cuda(*_cell_inputs(name, False, with_hx))
    _assert_routes_agree(cell, x, hx, monkeypatch, exact=False)


def _cell_declined_cases():
    f64 = dict(dtype=torch.float64)
    x = torch.randn(B, I, **f64)
    h = torch.randn(B, H, **f64)
    return [
        ("3-D input", torch.randn(1, B, I, **f64), None),
        ("input size", torch.randn(B, I + 1, **f64), None),
        ("dtype against weights", x.float(), None),
        ("hx batch", x, torch.randn(B + 1, H, **f64)),
        ("hx hidden size", x, torch.randn(B, H + 1, **f64)),
        ("hx 1-D for 2-D input", x, h[0]),
        ("hx 2-D for 1-D input", x[0], h),
        ("hx dtype", x, h.float()),
        ("integer input", torch.ones(B, I, dtype=torch.int64), None),
    ]


@pytest.mark.parametrize("case", _cell_declined_cases(), ids=lambda c: c[0])
@pytest.mark.parametrize("name", list(CELLS))
def test_cell_route_declines_what_the_python_route_handles(name, case):
    _, x, hx = case
    cell = _cell(name)
    states = () if hx is None else (hx, hx) if name == "lstm" else (hx,)
    mode = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN_TANH", "rnn_relu": "RNN_RELU"}[name]
    weights = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh, None]
    assert cell_forward(mode, x, states, weights, I, H) == []
    with pytest.raises((RuntimeError, ValueError, TypeError)):
        cell(x, hx if name != "lstm" or hx is None else (hx, hx))


# ------------------------------------------------- what the routes return, and declines

def _flat(out):
    """A module's or a cell's return value as a flat list of tensors."""
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for item in out for t in _flat(item)]


TORCH_MODULES = {"lstm": torch.nn.LSTM, "lstm_proj": torch.nn.LSTM, "gru": torch.nn.GRU,
                 "rnn_tanh": torch.nn.RNN, "rnn_relu": torch.nn.RNN}
TORCH_CELLS = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell, "rnn_tanh": torch.nn.RNNCell,
               "rnn_relu": torch.nn.RNNCell}


@pytest.mark.parametrize("config", [dict(), dict(batch_first=True), dict(num_layers=2),
                                    dict(bidirectional=True)],
                         ids=["plain", "batch_first", "layers2", "bidirectional"])
@pytest.mark.parametrize("name", list(MODULES))
@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
@pytest.mark.parametrize("cpp", [True, False], ids=["cpp_route", "python_route"])
def test_returned_tensors_are_views_where_torch_nns_are(name, config, unbatched, cpp,
                                                         monkeypatch):
    """h_n.detach_() (truncated backpropagation) works on torch.nn's final states: they must
    not be views of ours either. (The output's strides are torch.nn's; whether autograd
    counts it a view differs between torch.nn's own LSTM and GRU with batch_first.)"""
    if not cpp:
        monkeypatch.setattr(rnn_base, "eager_states", lambda input, hx: None)
    ours = _module(name, config)
    ref = TORCH_MODULES[name](I, H, **MODULES[name][1], **config, dtype=torch.float64)
    x, hx = _inputs(ours, unbatched, True)
    got, want = _flat(ours(x, hx)), _flat(ref(x, hx))
    assert got[0].stride() == want[0].stride()
    assert [t._is_view() for t in got[1:]] == [t._is_view() for t in want[1:]]
    for t in got[1:]:
        if not t._is_view():
            t.detach_()


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
def test_cell_states_are_views_where_torch_nns_are(name, unbatched):
    ours = _cell(name)
    ref = TORCH_CELLS[name](I, H, **CELLS[name][1], dtype=torch.float64)
    x, hx = _cell_inputs(name, unbatched, True)
    got, want = _flat(ours(x, hx)), _flat(ref(x, hx))
    assert [t._is_view() for t in got] == [t._is_view() for t in want]
    if not unbatched:
        for t in got:
            t.detach_()


def test_nested_input_is_declined():
    x = torch.nested.nested_tensor([torch.randn(5, I), torch.randn(3, I)])
    module = fused_rnn.GRU(I, H, batch_first=True)
    assert module_forward(module.mode, x, (), module.flat_layer_weights(), 1, False, True, 0.0,
                          False, I, H, 0) == []
    cell = fused_rnn.GRUCell(I, H)
    weights = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh, None]
    assert cell_forward("GRU", x, (), weights, I, H) == []


def test_dropout_out_of_range_raises_the_python_routes_error():
    module = _module("gru", dict(num_layers=2))
    module.dropout = 1.5  # the constructor checks it; a later assignment does not
    x, _ = _inputs(module, False, False)
    with pytest.raises(ValueError, match="dropout probability"):
        module(x)


class _Counting(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, w):
        self.calls += 1
        return w


@pytest.mark.parametrize("kind", ["module", "cell"])
def test_a_declined_call_evaluates_parametrized_weights_once(kind):
    """A stateful parametrization (spectral_norm's power iteration) must run once per call,
    also when the C++ route declines and the Python route runs (here to raise an error)."""
    counter = _Counting()
    target = _module("gru", {}) if kind == "module" else _cell("gru")
    torch.nn.utils.parametrize.register_parametrization(
        target, "weight_hh_l0" if kind == "module" else "weight_hh", counter)
    counter.calls = 0  # registering evaluates it once
    if kind == "module":
        x, _ = _inputs(target, False, False)
        bad_hx = torch.zeros(1, B + 1, H, dtype=torch.float64)
    else:
        x, _ = _cell_inputs("gru", False, False)
        bad_hx = torch.zeros(B + 1, H, dtype=torch.float64)
    target(x)
    assert counter.calls == 1
    with pytest.raises(RuntimeError):
        target(x, bad_hx)
    assert counter.calls == 2


def _as_dtype(hx, dtype):
    """hx (a tensor, a tuple of them or None) as leaves of dtype, as an earlier call under
    autocast returns its states."""
    if hx is None:
        return None
    if isinstance(hx, tuple):
        return tuple(_as_dtype(h, dtype) for h in hx)
    return hx.detach().to(dtype).requires_grad_()


@pytest.mark.parametrize("config", CONFIGS[:2] + CONFIGS[3:4],
                         ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()) or "plain")
@pytest.mark.parametrize("name", list(MODULES))
@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
@pytest.mark.parametrize("hx_dtype", [None, torch.float32, torch.bfloat16],
                         ids=["zeros", "hx_float32", "hx_bfloat16"])
def test_routes_agree_under_cpu_autocast(name, config, unbatched, hx_dtype, monkeypatch):
    """Under torch.autocast("cpu") the C++ route computes in float32 and rounds the results
    to torch.nn's dtypes, as the Python route does (tests/test_cpu_autocast.py holds both to
    torch.nn): the same tensors and dtypes, bit for bit, with the states of an earlier
    autocast call (bfloat16) fed back in."""
    module = _module(name, config, dtype=torch.float32)
    x, hx = _inputs(module, unbatched, hx_dtype is not None, dtype=torch.float32)
    hx = _as_dtype(hx, hx_dtype) if hx_dtype is not None else None
    _assert_routes_agree(module, x, hx, monkeypatch, autocast="cpu")


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
@pytest.mark.parametrize("hx_dtype", [None, torch.float32, torch.bfloat16],
                         ids=["zeros", "hx_float32", "hx_bfloat16"])
def test_cell_routes_agree_under_cpu_autocast(name, unbatched, hx_dtype, monkeypatch):
    cell = _cell(name).float()
    x, hx = _cell_inputs(name, unbatched, hx_dtype is not None)
    x = x.detach().float().requires_grad_()
    hx = _as_dtype(hx, hx_dtype) if hx_dtype is not None else None
    _assert_routes_agree(cell, x, hx, monkeypatch, autocast="cpu")


def test_cpp_route_declines_non_float32_input_under_cpu_autocast(monkeypatch):
    """bfloat16 input under CPU autocast takes the Python route (which casts as torch.nn)."""
    module = _module("lstm", {}, dtype=torch.float32)
    x = torch.randn(T, B, I, dtype=torch.bfloat16)
    calls = _Calls(module_forward)
    monkeypatch.setattr(rnn_base, "module_forward", calls)
    with torch.autocast("cpu"):
        y, _ = module(x)
    assert (calls.calls, calls.declined) == (1, 1)
    assert y.dtype == torch.bfloat16
