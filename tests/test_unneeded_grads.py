"""Gradients nobody needs are not computed: dx of a layer whose input needs no gradient
(the data fed to a first layer; need_dx=False, a quarter of a layer's backward FLOPs at
I = H), the weight gradients of a frozen layer (need_dw=False, half of them) and the
initial states' when none wants one (need_dh0=False: the zeros a module makes without hx;
the CPU then skips the first step's product with W_hh, a one-step call's only recurrent
product). Every gradient that is needed still matches torch.nn's."""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils._python_dispatch import TorchDispatchMode

import fused_rnn
from _parity import TOL, twin

ops = torch.ops.fused_rnn

MODULES = {
    "lstm": (torch.nn.LSTM, fused_rnn.LSTM, {}),
    "gru": (torch.nn.GRU, fused_rnn.GRU, {}),
    "rnn_tanh": (torch.nn.RNN, fused_rnn.RNN, {}),
    "rnn_relu": (torch.nn.RNN, fused_rnn.RNN, {"nonlinearity": "relu"}),
}
CONFIGS = [
    dict(),
    dict(num_layers=2, bidirectional=True),
    dict(bias=False, batch_first=True),
    dict(num_layers=2, packed=True),
]
T, B, I, H = 5, 3, 4, 6
LENGTHS = [5, 2, 4]


class BackwardCalls(TorchDispatchMode):
    """Records (need_dx, need_dw) and need_dh0 of every fused_rnn backward op called under it."""

    def __init__(self):
        super().__init__()
        self.flags = []
        self.need_dh0 = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace == "fused_rnn" and func._opname.endswith("_backward"):
            names = [a.name for a in func._schema.arguments]

            def arg(name):
                k = names.index(name)
                return args[k] if len(args) > k else kwargs.get(name, True)
            self.flags.append((arg("need_dx"), arg("need_dw")))
            self.need_dh0.append(arg("need_dh0"))
        return func(*args, **kwargs)

    @property
    def need_dx(self):
        return [dx for dx, _ in self.flags]


def _run(module, x, hx):
    """Outputs and the gradients of a random linear function of them with respect to every
    leaf that requires one: the input, the initial state (hx may be None) and the
    parameters."""
    out, h_n = module(x, hx)
    outs = [out.data if hasattr(out, "batch_sizes") else out]
    outs += list(h_n) if isinstance(h_n, tuple) else [h_n]
    gen = torch.Generator().manual_seed(7)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in outs)
    leaves = [x.data if hasattr(x, "batch_sizes") else x]
    leaves += (list(hx) if isinstance(hx, tuple) else [hx]) + list(module.parameters())
    return outs, torch.autograd.grad(loss, [t for t in leaves if t is not None and t.requires_grad])


def _compare_runs(ref, ours, x, hx):
    """_run on both modules, ours under BackwardCalls, which it returns; outputs and
    gradients must agree."""
    r_outs, r_grads = _run(ref, x, hx)
    with BackwardCalls() as calls:
        o_outs, o_grads = _run(ours, x, hx)
    assert len(o_grads) == len(r_grads)
    for a, b in zip(r_outs + list(r_grads), o_outs + list(o_grads)):
        torch.testing.assert_close(b, a, **TOL[torch.float64])
    return calls


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
@pytest.mark.parametrize("cell", list(MODULES))
def test_module_without_input_grad(cell, cfg):
    ref_cls, our_cls, extra = MODULES[cell]
    cfg = dict(cfg)
    packed = cfg.pop("packed", False)
    ref, ours = twin(ref_cls, our_cls, input_size=I, hidden_size=H, **extra, **cfg)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(T, B, I, generator=gen, dtype=torch.float64)
    if cfg.get("batch_first"):
        x = x.transpose(0, 1).contiguous()
    if packed:
        x = pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False)
    states = ref.num_layers * (2 if ref.bidirectional else 1)

    def state():
        return torch.randn(states, B, H, generator=gen, dtype=torch.float64).requires_grad_()
    hx = (state(), state()) if cell == "lstm" else state()
    calls = _compare_runs(ref, ours, x, hx)
    # Layer 0 (each direction) reads the data, which needs no gradient; deeper layers read
    # the layer below, whose dx they must return.
    dirs = 2 if ref.bidirectional else 1
    assert sorted(calls.need_dx) == [False] * dirs + [True] * (states - dirs)


def test_lstm_projection_without_input_grad():
    ref, ours = twin(torch.nn.LSTM, fused_rnn.LSTM, input_size=I, hidden_size=H, proj_size=3)
    x = torch.randn(T, B, I, dtype=torch.float64)
    hx = (torch.randn(1, B, 3, dtype=torch.float64, requires_grad=True),
          torch.randn(1, B, H, dtype=torch.float64, requires_grad=True))
    calls = _compare_runs(ref, ours, x, hx)
    assert calls.need_dx == [False]


def _saved(cell, lengths, reverse, device):
    """Backward-op arguments after a forward of `cell` (need_dx left out)."""
    gen = torch.Generator().manual_seed(5)  # lengths stay on the CPU (lstm_args.h)

    def r(*shape):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * 0.5).to(device)
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    x, w_ih, w_hh, b_ih, b_hh, h0 = r(T, B, I), r(G * H, I), r(G * H, H), r(G * H), r(G * H), r(B, H)
    dy, dh = r(T, B, H), r(B, H)
    if cell == "lstm":
        c0 = r(B, H)
        out = ops.lstm_forward(x, w_ih, w_hh, b_ih, b_hh, None, h0, c0, lengths, reverse)
        return ops.lstm_backward, (dy, dh, r(B, H), x, w_ih, w_hh, None, lengths, reverse, True,
                                   *out[3:])
    if cell == "gru":
        out = ops.gru_forward(x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse)
        return ops.gru_backward, (dy, dh, x, w_ih, w_hh, lengths, reverse, True, *out[2:])
    out = ops.rnn_forward(x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse, True)
    return ops.rnn_backward, (dy, dh, x, w_ih, w_hh, lengths, reverse, True, True, out[2])


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("need_dx,need_dw,need_dh0", [
    (False, True, True), (True, False, True), (False, False, True), (True, True, False),
    (False, True, False), (False, False, False)])
@pytest.mark.parametrize("lengths,reverse", [(None, False), (torch.tensor(LENGTHS), True)])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_backward_op_skips_unneeded(cell, lengths, reverse, need_dx, need_dw, need_dh0, device):
    op, args = _saved(cell, lengths, reverse, device)
    full = op(*args)
    part = op(*args, need_dx, need_dw, need_dh0)
    # Outputs: dx, then the weight and bias gradients, then dh0 (and dc0).
    n_w = {"lstm": 4, "gru": 4, "rnn": 3}[cell]
    wanted = [need_dx] + [need_dw] * n_w + [need_dh0] * (len(full) - 1 - n_w)
    for k, (a, b, keep) in enumerate(zip(full, part, wanted)):
        if keep:  # the same arithmetic, so bit for bit
            assert torch.equal(a, b), f"output {k}"
        else:
            assert b.shape == (0,), f"output {k}"  # (the LSTM's dw_hr is [0] anyway here)
    torch.library.opcheck(op.default, (*args, need_dx, need_dw, need_dh0),
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("frozen", ["all", "biases"])
@pytest.mark.parametrize("input_grad", [True, False])
@pytest.mark.parametrize("cell", list(MODULES))
def test_module_with_frozen_weights(cell, input_grad, frozen):
    ref_cls, our_cls, extra = MODULES[cell]
    ref, ours = twin(ref_cls, our_cls, input_size=I, hidden_size=H, num_layers=2,
                     bidirectional=True, **extra)
    for m in (ref, ours):
        for name, p in m.named_parameters():
            p.requires_grad_(frozen == "biases" and not name.startswith("bias"))
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(T, B, I, generator=gen, dtype=torch.float64).requires_grad_(input_grad)

    def state():
        return torch.randn(4, B, H, generator=gen, dtype=torch.float64).requires_grad_()
    hx = (state(), state()) if cell == "lstm" else state()
    calls = _compare_runs(ref, ours, x, hx)
    # Frozen weights: no layer computes weight gradients; frozen biases only: all do (the
    # weights' share the same pass). dx: all but layer 0 unless the input needs one.
    need_dw = frozen == "biases"
    want = [(input_grad, need_dw)] * 2 + [(True, need_dw)] * 2
    assert sorted(calls.flags) == sorted(want)


@pytest.mark.parametrize("hx_mode", ["none", "no-grad", "grad", "c0-only"])
@pytest.mark.parametrize("cell", list(MODULES))
def test_initial_state_gradients_only_when_wanted(cell, hx_mode):
    """need_dh0 is False for every layer when no initial state wants a gradient (hx not
    given, or given without requires_grad), True when one does (for the LSTM, h0 or c0)."""
    if hx_mode == "c0-only" and cell != "lstm":
        pytest.skip("c0 is the LSTM's")
    ref_cls, our_cls, extra = MODULES[cell]
    ref, ours = twin(ref_cls, our_cls, input_size=I, hidden_size=H, num_layers=2,
                     bidirectional=True, **extra)
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(T, B, I, generator=gen, dtype=torch.float64, requires_grad=True)

    def state(grad):
        return torch.randn(4, B, H, generator=gen, dtype=torch.float64).requires_grad_(grad)
    hx = {"none": None, "no-grad": (state(False), state(False)),
          "grad": (state(True), state(True)), "c0-only": (state(False), state(True))}[hx_mode]
    if hx is not None and cell != "lstm":
        hx = hx[0]
    calls = _compare_runs(ref, ours, x, hx)
    assert calls.need_dh0 == [hx_mode in ("grad", "c0-only")] * 4

