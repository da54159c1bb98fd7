"""bfloat16 LSTM layers on CPUs with AVX512-BF16 multiply in bfloat16 (csrc/cpu/bf16_gemm.h):
x, W and the state h rounded to bfloat16, products summed in float32, everything else as in
float32. The saved float32 states must match a float64 reference that rounds h the same way
to float32 precision, for every shape the kernels cut (panels of 32 columns, blocks of 8 / 4
/ 2 / 1 rows, odd k, varlen rows, reverse, every team split). Skipped on other CPUs."""
import pytest
import torch

import fused_rnn

pytestmark = pytest.mark.skipif(fused_rnn.build_info().get("cpu_bf16_dot") != "1",
                                reason="this CPU has no AVX512-BF16 (or the build no AVX-512)")

lstm_forward = torch.ops.fused_rnn.lstm_forward


def _step_reference(x, w_ih, w_hh, bias, hs, cs, reverse):
    """Each step in float64 from the kernel's own saved state before it (hs, cs: [T + 1, B,
    F]), h rounded to bfloat16 as the kernels round it (x and W are bfloat16 tensors
    already): (h, c) per step [T, B, F], at the slots the kernel writes. Checking step by
    step, not over a whole run, keeps a float32 h that lands next to a bfloat16 rounding
    boundary (rounded one way here, the other in a float64 run) from failing the test."""
    T = x.shape[0]
    h_out, c_out = [], []
    for t in range(T):
        prev = t + 1 if reverse else t  # slot_in
        h = hs[prev].float().bfloat16().double()
        c = cs[prev].double()
        g = x[t].double() @ w_ih.double().t() + h @ w_hh.double().t() + bias
        i, f, gg, o = g.chunk(4, 1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
        h_out.append(torch.sigmoid(o) * torch.tanh(c_new))
        c_out.append(c_new)
    return torch.stack(h_out), torch.stack(c_out)


SHAPES = [  # T, B, I, H: every row block size, panel tails, odd k (I or H odd), one step
    (5, 3, 7, 9), (4, 13, 33, 40), (6, 9, 16, 35), (3, 1, 1, 1), (7, 20, 64, 64),
    (1, 5, 10, 70), (2, 17, 31, 129), (3, 32, 48, 96), (1, 1, 256, 256),
]


# Three threads (on any core count): the forced splits then have three blocks each.
@pytest.mark.parametrize("threads", [3], indirect=True)
@pytest.mark.parametrize("team", ["auto", "units", "rows", "one"])
@pytest.mark.parametrize("varlen", [False, True], ids=["padded", "varlen"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("T,B,I,H", SHAPES)
def test_states_match_rounded_h_reference(T, B, I, H, reverse, varlen, team, threads,
                                          monkeypatch):
    monkeypatch.setenv("FUSED_RNN_BF16_DOT", "force")  # short calls too
    if team != "auto":
        monkeypatch.setenv("FUSED_RNN_TEAM", team)
    g = torch.Generator().manual_seed(T * 1000 + B * 10 + H)
    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).bfloat16()
    x, h0, c0 = randn(T, B, I), randn(B, H), randn(B, H)
    w_ih, w_hh = randn(4 * H, I, scale=0.3), randn(4 * H, H, scale=0.3)
    b_ih, b_hh = randn(4 * H), randn(4 * H)
    lengths = None
    if varlen:
        lengths = torch.tensor(sorted(((T - i) % T or T for i in range(B)), reverse=True))
    y, h_n, c_n, gates, hs, cs, _ = lstm_forward(x, w_ih, w_hh, b_ih, b_hh, None, h0, c0,
                                                 lengths, reverse)
    ref_h, ref_c = _step_reference(x, w_ih, w_hh, b_ih.double() + b_hh.double(), hs, cs,
                                   reverse)
    out = slice(0, T) if reverse else slice(1, T + 1)  # slot_out of each step
    got_h, got_c = hs[out].double(), cs[out].double()
    if varlen:  # a finished row keeps its state: compare the rows that ran
        running = (torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0)).unsqueeze(2)
        got_h, ref_h = got_h * running, ref_h * running
        got_c, ref_c = got_c * running, ref_c * running
    torch.testing.assert_close(got_h, ref_h, atol=2e-6, rtol=2e-6)
    torch.testing.assert_close(got_c, ref_c, atol=2e-6, rtol=2e-6)
    last = 0 if reverse else T
    assert y.dtype == h_n.dtype == c_n.dtype == torch.bfloat16
    assert torch.equal(h_n, hs[last].bfloat16()) and torch.equal(c_n, cs[last].bfloat16())
    if varlen:  # outputs past a row's length are zero
        assert (y.float() * ~running).abs().max() == 0


def test_float32_products_when_switched_off(monkeypatch):
    """FUSED_RNN_BF16_DOT=0: bfloat16 input runs the float32 products (h not rounded), which
    the rounded-h reference tells apart from the bfloat16 ones."""
    g = torch.Generator().manual_seed(0)
    T, B, I, H = 16, 4, 32, 32
    args = [(torch.randn(*s, generator=g) * 0.5).bfloat16()
            for s in ((T, B, I), (4 * H, I), (4 * H, H), (4 * H,), (4 * H,))]
    bias = args[3].double() + args[4].double()
    zeros = torch.zeros(B, H).bfloat16()

    def worst(out):
        hs, cs = out[4], out[5]
        ref_h, _ = _step_reference(*args[:3], bias, hs, cs, False)
        return (hs[1:].double() - ref_h).abs().max().item()

    assert worst(lstm_forward(*args, None, zeros, zeros, None, False)) < 2e-6  # T = 16: long enough
    monkeypatch.setenv("FUSED_RNN_BF16_DOT", "0")
    assert fused_rnn.build_info()["cpu_bf16_dot"] == "0"
    assert worst(lstm_forward(*args, None, zeros, zeros, None, False)) > 1e-4


def test_odd_k_does_not_read_the_next_row(monkeypatch):
    """With odd k a row's last pair holds one value: the next row's first (here inf) must
    not enter (0 * inf would be NaN)."""
    monkeypatch.setenv("FUSED_RNN_BF16_DOT", "force")
    T, B, I, H = 2, 4, 5, 16
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, I, generator=g).bfloat16()
    x[:, 2, 0] = float("inf")  # row 2's outputs are NaN; rows 0, 1 and 3 must not be
    w_ih = (torch.randn(4 * H, I, generator=g) * 0.3).bfloat16()
    w_hh = (torch.randn(4 * H, H, generator=g) * 0.3).bfloat16()
    zeros = torch.zeros(B, H).bfloat16()
    y = lstm_forward(x, w_ih, w_hh, None, None, None, zeros, zeros, None, False)[0]
    assert torch.isfinite(y[:, [0, 1, 3]].float()).all()


def test_short_calls_keep_float32_products(monkeypatch):
    """A call too short to pay for packing the weights (T = 1, B = 8) multiplies in float32,
    unless FUSED_RNN_BF16_DOT=force."""
    assert not torch.ops.fused_rnn.cpu_bf16_dot(1, 8)
    assert torch.ops.fused_rnn.cpu_bf16_dot(16, 1) and torch.ops.fused_rnn.cpu_bf16_dot(4, 16)
    monkeypatch.setenv("FUSED_RNN_BF16_DOT", "force")
    assert torch.ops.fused_rnn.cpu_bf16_dot(1, 8)
    monkeypatch.setenv("FUSED_RNN_BF16_DOT", "0")
    assert not torch.ops.fused_rnn.cpu_bf16_dot(16, 16)


def test_module_close_to_torch_nn_bfloat16():
    """The module in bfloat16, forward and backward, against torch.nn's bfloat16 LSTM (oneDNN,
    which also multiplies in bfloat16) and a float32 reference."""
    torch.manual_seed(0)
    ref = torch.nn.LSTM(24, 40, num_layers=2, bidirectional=True)
    ours = fused_rnn.LSTM(24, 40, num_layers=2, bidirectional=True)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(30, 6, 24)
    y32, _ = ref(x)
    y_ref, _ = ref.bfloat16()(x.bfloat16())
    y_ours, (h, c) = ours.bfloat16()(x.bfloat16().requires_grad_())
    assert y_ours.dtype == h.dtype == c.dtype == torch.bfloat16
    torch.testing.assert_close(y_ours.float(), y32, atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(y_ours.float(), y_ref.float(), atol=3e-2, rtol=3e-2)
    y_ours.float().sum().backward()
    assert all(torch.isfinite(p.grad.float()).all() for p in ours.parameters())


def _gru_step(x, w_ih, w_hh, b_ih, b_hh, h_prev):
    """One GRU step in float64 (torch's gate order r, z, n), the recurrent product on h_prev
    rounded to bfloat16, the update on h_prev itself (as the kernel keeps it)."""
    gi = x.double() @ w_ih.double().t() + b_ih.double()
    gh = h_prev.float().bfloat16().double() @ w_hh.double().t() + b_hh.double()
    i_r, i_z, i_n = gi.chunk(3, 1)
    h_r, h_z, h_n = gh.chunk(3, 1)
    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h_prev.double()


def _rnn_step(relu):
    def step(x, w_ih, w_hh, b_ih, b_hh, h_prev):
        a = (x.double() @ w_ih.double().t() + b_ih.double()
             + h_prev.float().bfloat16().double() @ w_hh.double().t() + b_hh.double())
        return torch.relu(a) if relu else torch.tanh(a)
    return step


CELLS = {  # name: (gates, op, step, activation argument)
    "gru": (3, torch.ops.fused_rnn.gru_forward, _gru_step, None),
    "rnn_tanh": (1, torch.ops.fused_rnn.rnn_forward, _rnn_step(False), False),
    "rnn_relu": (1, torch.ops.fused_rnn.rnn_forward, _rnn_step(True), True),
}


@pytest.mark.parametrize("threads", [3], indirect=True)
@pytest.mark.parametrize("team", ["auto", "units", "rows"])
@pytest.mark.parametrize("varlen", [False, True], ids=["padded", "varlen"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("T,B,I,H", SHAPES[:3] + SHAPES[6:])
@pytest.mark.parametrize("cell", list(CELLS))
def test_gru_and_rnn_states_match_rounded_h_reference(cell, T, B, I, H, reverse, varlen, team,
                                                      threads, monkeypatch):
    """The GRU's and the Elman RNN's forward products in bfloat16 likewise: each step's
    saved h against float64 from the kernel's previous h (rounded for the product)."""
    monkeypatch.setenv("FUSED_RNN_BF16_DOT", "force")
    if team != "auto":
        monkeypatch.setenv("FUSED_RNN_TEAM", team)
    gates, op, step, relu = CELLS[cell]
    g = torch.Generator().manual_seed(T * 1000 + B * 10 + H)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).bfloat16()

    x, h0 = randn(T, B, I), randn(B, H)
    w_ih, w_hh = randn(gates * H, I, scale=0.3), randn(gates * H, H, scale=0.3)
    b_ih, b_hh = randn(gates * H), randn(gates * H)
    lengths = None
    if varlen:
        lengths = torch.tensor(sorted(((T - i) % T or T for i in range(B)), reverse=True))
    extra = () if relu is None else (relu,)
    out = op(x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse, *extra)
    y, h_n, hs = out[0], out[1], out[-1] if relu is not None else out[3]
    ref = torch.stack([step(x[t], w_ih, w_hh, b_ih, b_hh, hs[t + 1 if reverse else t])
                       for t in range(T)])
    got = hs[0:T] if reverse else hs[1:T + 1]
    if varlen:
        running = (torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0)).unsqueeze(2)
        got, ref = got * running, ref * running
    torch.testing.assert_close(got.double(), ref, atol=2e-6, rtol=2e-6)
    assert y.dtype == h_n.dtype == torch.bfloat16
    assert torch.equal(h_n, hs[0 if reverse else T].bfloat16())


@pytest.mark.parametrize("cls", [fused_rnn.GRU, fused_rnn.RNN])
def test_gru_and_rnn_modules_close_to_torch_nn_bfloat16(cls):
    torch.manual_seed(0)
    ref = getattr(torch.nn, cls.__name__)(24, 40, num_layers=2, bidirectional=True)
    ours = cls(24, 40, num_layers=2, bidirectional=True)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(30, 6, 24)
    y32, _ = ref(x)
    y_ours, h = ours.bfloat16()(x.bfloat16().requires_grad_())
    assert y_ours.dtype == h.dtype == torch.bfloat16
    torch.testing.assert_close(y_ours.float(), y32, atol=3e-2, rtol=3e-2)
    y_ours.float().sum().backward()
    assert all(torch.isfinite(p.grad.float()).all() for p in ours.parameters())
