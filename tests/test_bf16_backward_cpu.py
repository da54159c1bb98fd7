"""The backward of bfloat16 layers on CPUs with AVX512-BF16 multiplies in bfloat16, as the
forward does (csrc/cpu/bf16_layer.h): each step's gate gradients are rounded to bfloat16 as the
time loop forms them, and the next step's dA W_hh and the products after the loop (dx, dW_ih,
dW_hh) multiply the rounded values (dW_hh by the states rounded as the forward rounded them);
the bias gradients sum the unrounded ones. Every gradient must be within rounding of a float64
reference that rounds at the same places, for every shape the kernels cut (panels of 32
columns, blocks of 8 / 4 / 2 / 1 rows, odd k, varlen rows, reverse, every team split).
Skipped on other CPUs."""
import pytest
import torch

import fused_rnn
from fused_rnn import ops

pytestmark = pytest.mark.skipif(fused_rnn.build_info().get("cpu_bf16_dot") != "1",
                                reason="this CPU has no AVX512-BF16 (or the build no AVX-512)")

f64 = torch.float64


def _bf16(t):
    """t rounded to bfloat16 through float32, as the kernels round their float32 values."""
    return t.float().bfloat16().to(f64)


class _RoundGrad(torch.autograd.Function):
    """The identity, whose gradient is rounded to bfloat16: the products of the gate
    gradients see them rounded, the bias gradients (added after it) do not."""

    @staticmethod
    def forward(ctx, t):
        return t.clone()

    @staticmethod
    def backward(ctx, g):
        return _bf16(g)


def _rounded(h):
    """h as a product multiplies it (rounded to bfloat16); its gradient passes to h as is."""
    return h + (_bf16(h) - h).detach()


def _as_kernel(ref, kernel):
    """ref's graph with the kernel's saved value: the reference then runs each step from the
    kernel's own state, so a float32 value next to a bfloat16 rounding boundary (rounded one
    way there, the other in float64) cannot move the whole run."""
    return ref + (kernel.to(f64) - ref).detach()


def _lstm_step(x, w, h, c):
    w_ih, w_hh, b = w
    g = _RoundGrad.apply(x @ w_ih.t() + _rounded(h) @ w_hh.t()) + b
    i, f, gg, o = g.chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
    return torch.sigmoid(o) * torch.tanh(c), c


def _gru_step(x, w, h, _c):
    w_ih, w_hh, b_ih, b_hh = w
    gi = _RoundGrad.apply(x @ w_ih.t()) + b_ih
    gh = _RoundGrad.apply(_rounded(h) @ w_hh.t()) + b_hh
    i_r, i_z, i_n = gi.chunk(3, 1)
    h_r, h_z, h_n = gh.chunk(3, 1)
    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h, None


def _rnn_step(relu):
    def step(x, w, h, _c):
        w_ih, w_hh, b = w
        a = _RoundGrad.apply(x @ w_ih.t() + _rounded(h) @ w_hh.t()) + b
        return (torch.relu(a) if relu else torch.tanh(a)), None
    return step


CELLS = {  # name: gates, has c, reference step
    "lstm": (4, True, _lstm_step),
    "gru": (3, False, _gru_step),
    "rnn_tanh": (1, False, _rnn_step(False)),
    "rnn_relu": (1, False, _rnn_step(True)),
}


def _layer(cell, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, reverse):
    """The op's layer: (y, h_n, c_n or None) and the saved float32 states (hs, cs or None)."""
    if cell == "lstm":
        y, h_n, c_n = ops.lstm_layer(x, w_ih, w_hh, b_ih, b_hh, None, h0, c0, lengths, reverse)
        with torch.no_grad():
            saved = torch.ops.fused_rnn.lstm_forward(x, w_ih, w_hh, b_ih, b_hh, None, h0, c0,
                                                     lengths, reverse)
        return (y, h_n, c_n), (saved[4], saved[5])
    if cell == "gru":
        y, h_n = ops.gru_layer(x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse)
        with torch.no_grad():
            hs = torch.ops.fused_rnn.gru_forward(x, w_ih, w_hh, b_ih, b_hh, h0, lengths,
                                                 reverse)[3]
        return (y, h_n, None), (hs, None)
    relu = cell == "rnn_relu"
    y, h_n = ops.rnn_layer(x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse,
                           "relu" if relu else "tanh")
    with torch.no_grad():
        hs = torch.ops.fused_rnn.rnn_forward(x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse,
                                             relu)[2]
    return (y, h_n, None), (hs, None)


def _reference(cell, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, reverse, hs, cs):
    """(y, h_n, c_n) in float64 over the kernel's saved states hs, cs ([T + 1, B, F])."""
    _, has_c, step = CELLS[cell]
    w = (w_ih, w_hh, b_ih + b_hh) if cell != "gru" else (w_ih, w_hh, b_ih, b_hh)
    T = x.shape[0]
    h, c = h0, c0
    ys = [None] * T
    for s in range(T):
        t = T - 1 - s if reverse else s
        prev = t + 1 if reverse else t  # the kernel's slot of the state before step t
        h = _as_kernel(h, hs[prev])
        c = _as_kernel(c, cs[prev]) if has_c else None
        h_new, c_new = step(x[t], w, h, c)
        if lengths is not None:  # a finished row keeps its state and outputs zeros
            run = (t < lengths).unsqueeze(1).to(f64)
            h_new = run * h_new + (1 - run) * h
            c_new = run * c_new + (1 - run) * c if has_c else None
            ys[t] = run * h_new
        else:
            ys[t] = h_new
        h, c = h_new, c_new
    return torch.stack(ys), h, c


def _assert_within_rounding(name, got, ref):
    """got (bfloat16) is ref rounded to bfloat16: within 0.6 of a bfloat16 unit in the last
    place (0.5 for the rounding, the rest for float32 sums), plus 1e-5 of the largest value
    (sums that cancel), for all but 3% of the values. Those few are where a gate gradient
    in float32 (own exp and tanh, float32 sums) rounded to the other side of a bfloat16
    boundary than float64's: its terms move by a bfloat16 unit, more than the rounding of a
    small sum, though never more than 4 units of it plus 0.2% of the largest value. (Seen:
    up to 1%; products of the unrounded gradients miss on 14-55%.)"""
    got = got.to(f64)
    ulp = torch.exp2(torch.floor(torch.log2(ref.abs().clamp_min(1e-30))) - 7)
    err = (got - ref).abs()
    top = ref.abs().max()
    bad = err > 0.6 * ulp + 1e-5 * top
    far = err > 4 * ulp + 2e-3 * top
    assert bad.float().mean() <= 0.03 and not far.any(), (
        f"{name}: {int(bad.sum())} of {bad.numel()} values off by more than rounding, "
        f"{int(far.sum())} far off; worst {(err / ulp).max().item():.2f} ulp")


SHAPES = [  # T, B, I, H: row blocks 8/4/2/1, panel tails, odd k, one step, wide columns
    (5, 3, 7, 9), (4, 13, 33, 40), (3, 1, 1, 1), (6, 9, 16, 35), (2, 17, 31, 129),
    (3, 32, 48, 96),
]


def _lengths(kind, T, B):
    """None (every row runs all T steps), sorted lengths 1..T as a PackedSequence gives them,
    or unsorted ones with a row of length 0 (the raw ops take both)."""
    if kind == "padded":
        return None
    lengths = sorted(((T - i) % T or T for i in range(B)), reverse=True)
    if kind == "unsorted":
        lengths = lengths[1::2] + lengths[::2]
        lengths[B // 2] = 0
    return torch.tensor(lengths)


def _run(cell, T, B, I, H, reverse, lengths_kind, seed=0, wanted_inputs=None):
    """The op's gradients and the rounded float64 reference's, of the inputs `wanted_inputs`
    (indices into NAMES; all by default)."""
    gates, has_c, _ = CELLS[cell]
    g = torch.Generator().manual_seed(seed + T * 1000 + B * 10 + H)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).bfloat16()

    leaves = [randn(T, B, I), randn(gates * H, I, scale=0.3), randn(gates * H, H, scale=0.3),
              randn(gates * H), randn(gates * H), randn(B, H), randn(B, H)]
    if wanted_inputs is None:
        wanted_inputs = list(range(len(NAMES) if has_c else len(NAMES) - 1))
    lengths = _lengths(lengths_kind, T, B)
    ours = [t.clone().requires_grad_(i in wanted_inputs) for i, t in enumerate(leaves)]
    out, (hs, cs) = _layer(cell, *ours, lengths, reverse)
    refs = [t.to(f64).requires_grad_() for t in leaves]
    ref_out = _reference(cell, *refs, lengths, reverse, hs, cs)
    # Gradients of the outputs: bfloat16 values, as autograd hands them to a bfloat16 op.
    grads = [randn(*o.shape) if o is not None else None for o in out]
    wanted = [i for i, o in enumerate(out) if o is not None]
    got = torch.autograd.grad([out[i] for i in wanted], [ours[i] for i in wanted_inputs],
                              [grads[i] for i in wanted])
    ref = torch.autograd.grad([ref_out[i] for i in wanted], [refs[i] for i in wanted_inputs],
                              [grads[i].to(f64) for i in wanted])
    return got, ref


NAMES = ["x", "w_ih", "w_hh", "b_ih", "b_hh", "h0", "c0"]


# Three threads (on any core count): splits by units then have three blocks, with tails
# and empty ones, and splits by rows three row blocks.
@pytest.mark.parametrize("threads", [3], indirect=True)
@pytest.mark.parametrize("team", ["auto", "units", "rows"])
@pytest.mark.parametrize("lengths", ["padded", "sorted", "unsorted"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("T,B,I,H", SHAPES)
@pytest.mark.parametrize("cell", list(CELLS))
def test_gradients_match_rounded_reference(cell, T, B, I, H, reverse, lengths, team, threads,
                                           monkeypatch):
    monkeypatch.setenv("FUSED_RNN_BF16_DOT", "force")  # short calls too
    if team != "auto":
        monkeypatch.setenv("FUSED_RNN_TEAM", team)
    got, ref = _run(cell, T, B, I, H, reverse, lengths)
    for name, a, b in zip(NAMES, got, ref):
        assert a.dtype == torch.bfloat16
        _assert_within_rounding(name, a, b)


@pytest.mark.parametrize("threads", [3], indirect=True)
@pytest.mark.parametrize("team,how", [("units", 1), ("rows", 2)])
def test_forced_splits_split(team, how, threads, monkeypatch):
    """The forced splits above do split the loop (at B = 13, H = 40: three blocks)."""
    monkeypatch.setenv("FUSED_RNN_TEAM", team)
    plan = torch.ops.fused_rnn.cpu_team_plan(13, 40, 16, 4 * 40 * 40 * 2, None, 4)
    assert plan[:2] == [how, 3]


@pytest.mark.parametrize("wanted", [[0], [1, 2], [5, 6], [2, 3]],
                         ids=["x", "weights", "states", "w_hh_b_ih"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_some_gradients_wanted(cell, wanted, monkeypatch):
    """Only some inputs need gradients (no dx, or no weight gradients, or no h0's): the
    gradients still asked for match the reference."""
    monkeypatch.setenv("FUSED_RNN_BF16_DOT", "force")
    if cell != "lstm":
        wanted = [i for i in wanted if i != 6] or [5]
    got, ref = _run(cell, 5, 9, 16, 35, False, "padded", wanted_inputs=wanted)
    for i, a, b in zip(wanted, got, ref):
        _assert_within_rounding(NAMES[i], a, b)


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
def test_empty_batch(cls):
    """B = 0 in a call long enough for bfloat16 products: no products run, and the
    gradients are empty or zero, as float32's."""
    module = getattr(fused_rnn, cls)(5, 7).bfloat16()
    x = torch.zeros(16, 0, 5, dtype=torch.bfloat16, requires_grad=True)
    y = module(x)[0]
    y.sum().backward()
    assert x.grad.shape == x.shape and x.grad.dtype == torch.bfloat16
    assert all(p.grad is not None and p.grad.abs().max() == 0 for p in module.parameters())


def test_float32_products_when_switched_off(monkeypatch):
    """FUSED_RNN_BF16_DOT=0: the backward multiplies the float32 gate gradients, which the
    rounded reference tells apart (the forward is float32 then too, but the reference runs
    from the kernel's own states)."""
    args = ("lstm", 12, 16, 64, 64, False, "padded")
    monkeypatch.setenv("FUSED_RNN_BF16_DOT", "force")
    got, ref = _run(*args)
    _assert_within_rounding("w_hh", got[2], ref[2])
    monkeypatch.setenv("FUSED_RNN_BF16_DOT", "0")
    got, ref = _run(*args)
    with pytest.raises(AssertionError, match="off by more than rounding"):
        _assert_within_rounding("w_hh", got[2], ref[2])


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_module_gradients_close_to_torch_nn_bfloat16(cell):
    """Module level, chosen products (T = 30: bfloat16 ones), two layers, both directions:
    every gradient within bfloat16's reach of a float64 torch.nn reference on the same
    bfloat16 weights, and no farther from it than torch.nn's own bfloat16 gradients are
    (oneDNN's backward, which also multiplies in bfloat16)."""
    cls = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN"}[cell]
    torch.manual_seed(0)
    ours = getattr(fused_rnn, cls)(24, 40, num_layers=2, bidirectional=True).bfloat16()
    theirs = getattr(torch.nn, cls)(24, 40, num_layers=2, bidirectional=True).bfloat16()
    exact = getattr(torch.nn, cls)(24, 40, num_layers=2, bidirectional=True).double()
    theirs.load_state_dict(ours.state_dict())
    exact.load_state_dict(ours.state_dict())
    x = torch.randn(30, 6, 24).bfloat16()
    dy = torch.randn(30, 6, 80).bfloat16()
    results = []
    for module, dt in ((ours, torch.bfloat16), (theirs, torch.bfloat16), (exact, f64)):
        xi = x.detach().to(dt).requires_grad_()
        y = module(xi)[0]
        y.backward(dy.to(dt))
        results.append([xi.grad.to(f64)] + [p.grad.to(f64) for p in module.parameters()])
    for a, b, ref in zip(*results):
        rel_ours = ((a - ref).norm() / ref.norm()).item()
        rel_torch = ((b - ref).norm() / ref.norm()).item()
        assert rel_ours < 1e-2
        assert rel_ours <= 1.25 * rel_torch + 1e-4
