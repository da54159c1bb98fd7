"""fused_rnn on CUDA: parity with torch.nn (cuDNN on the GPU, and a float64 CPU reference),
gradcheck, opcheck, CUDA graphs, streams, odd sizes, long sequences, packed input and
autocast. Every test needs a GPU and is skipped without one."""
import copy

import pytest
import torch

import fused_rnn
from _cuda_parity import CUDA, TOL, assert_rel_close, data, make, quantized, run
from _cuda_parity import full_fp32  # noqa: F401  (autouse: float32 parity without TF32)
from test_lstm import CONFIGS as CPU_SUITE_CONFIGS, SHAPES as CPU_SUITE_SHAPES

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

_ops = torch.ops.fused_rnn


def _make(cfg, seed=0):
    return make(torch.nn.LSTM, fused_rnn.LSTM, cfg, seed)


def _data(cfg, T, B, seed=1):
    x, (h0, c0), lengths = data(cfg, T, B, 2, seed)
    return x, h0, c0, lengths


def _run(mod, form, x, h0, c0, lengths, device, dtype, batch_first=False, with_state=True):
    return run(mod, form, x, (h0, c0), lengths, device, dtype, batch_first, with_state)


_assert_rel_close = assert_rel_close
_quantized = quantized


CONFIGS = [
    dict(input_size=5, hidden_size=7),                                    # odd sizes
    dict(input_size=8, hidden_size=16, num_layers=2, bidirectional=True),  # vector path
    dict(input_size=6, hidden_size=12, proj_size=5, bidirectional=True),
    dict(input_size=4, hidden_size=9, proj_size=3, num_layers=2),
    dict(input_size=4, hidden_size=8, bias=False, num_layers=2),
]
FORMS = ["seq", "batch_first", "unbatched", "packed"]


def _cfg_for(cfg, form):
    return dict(cfg, batch_first=form == "batch_first")


# ------------------------------------------------------------------- parity with torch.nn

@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_float32_matches_cudnn_and_float64_reference(cfg, form):
    cfg = _cfg_for(cfg, form)
    ref, ours = _make(cfg)
    B = 1 if form == "unbatched" else 5
    x, h0, c0, lengths = _data(cfg, 6, B)
    bf = cfg["batch_first"]
    ours_res = _run(ours.to(CUDA), form, x, h0, c0, lengths, CUDA, torch.float32, bf)
    cudnn_res = _run(copy.deepcopy(ref).to(CUDA), form, x, h0, c0, lengths, CUDA,
                     torch.float32, bf)
    _assert_rel_close(ours_res, cudnn_res, TOL[torch.float32], "vs cuDNN")
    ref64 = copy.deepcopy(ref).double()
    cpu_res = _run(ref64, form, _quantized(x, torch.float32), _quantized(h0, torch.float32),
                   _quantized(c0, torch.float32), lengths, "cpu", torch.float64, bf)
    _assert_rel_close(ours_res, cpu_res, TOL[torch.float32], "vs float64 CPU")


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("T,B", CPU_SUITE_SHAPES)
@pytest.mark.parametrize("cfg", CPU_SUITE_CONFIGS, ids=str)
def test_cpu_parity_suite_on_cuda(cfg, T, B, with_state):
    """tests/test_lstm.py's grid on the GPU: float32 against cuDNN, float64 against the
    float64 CPU torch.nn.LSTM."""
    ref, ours = _make(cfg)
    x, h0, c0, lengths = _data(cfg, T, B)
    bf = cfg.get("batch_first", False)
    got = _run(ours.to(CUDA), "seq", x, h0, c0, lengths, CUDA, torch.float32, bf, with_state)
    want = _run(copy.deepcopy(ref).to(CUDA), "seq", x, h0, c0, lengths, CUDA, torch.float32, bf,
                with_state)
    _assert_rel_close(got, want, TOL[torch.float32], "float32 vs cuDNN")
    got = _run(ours.double(), "seq", x, h0, c0, lengths, CUDA, torch.float64, bf, with_state)
    want = _run(ref.double(), "seq", x, h0, c0, lengths, "cpu", torch.float64, bf, with_state)
    _assert_rel_close(got, want, TOL[torch.float64], "float64 vs CPU")


@pytest.mark.parametrize("form", ["seq", "packed"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_float64_matches_cpu_reference(cfg, form):
    cfg = _cfg_for(cfg, form)
    ref, ours = _make(cfg)
    x, h0, c0, lengths = _data(cfg, 5, 4)
    got = _run(ours.double().to(CUDA), form, x, h0, c0, lengths, CUDA, torch.float64)
    want = _run(ref.double(), form, x, h0, c0, lengths, "cpu", torch.float64)
    _assert_rel_close(got, want, TOL[torch.float64], "float64")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("form", ["seq", "packed"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_half_precision_matches_float64_reference(cfg, form, dtype):
    cfg = _cfg_for(cfg, form)
    _, ours = _make(cfg)
    ours = ours.to(CUDA, dtype)
    # The reference runs on exactly our (rounded) weights and inputs.
    ref64 = torch.nn.LSTM(**cfg).double()
    ref64.load_state_dict({k: v.double().cpu() for k, v in ours.state_dict().items()})
    x, h0, c0, lengths = _data(cfg, 5, 4)
    x, h0, c0 = (_quantized(t, dtype) for t in (x, h0, c0))
    got = _run(ours, form, x, h0, c0, lengths, CUDA, dtype)
    want = _run(ref64, form, x, h0, c0, lengths, "cpu", torch.float64)
    _assert_rel_close(got, want, TOL[dtype], str(dtype))


def test_float16_matches_cudnn():
    cfg = dict(input_size=16, hidden_size=32, num_layers=2)
    ref, ours = _make(cfg)
    x, h0, c0, lengths = _data(cfg, 8, 6)
    got = _run(ours.to(CUDA, torch.float16), "seq", x, h0, c0, lengths, CUDA, torch.float16)
    want = _run(ref.to(CUDA, torch.float16), "seq", x, h0, c0, lengths, CUDA, torch.float16)
    _assert_rel_close(got, want, TOL[torch.float16], "float16 vs cuDNN")


@pytest.mark.parametrize("B,H", [(1, 1), (3, 3), (2, 5), (7, 13), (33, 31), (4, 24), (5, 40)])
def test_sizes_that_are_not_tile_multiples(B, H):
    cfg = dict(input_size=3, hidden_size=H)
    ref, ours = _make(cfg)
    x, h0, c0, lengths = _data(cfg, 4, B)
    got = _run(ours.to(CUDA), "seq", x, h0, c0, lengths, CUDA, torch.float32)
    want = _run(ref.double(), "seq", x, h0, c0, lengths, "cpu", torch.float64)
    # Against the exact answer; at B=1, H=1 a gradient can be a few 1e-3 after cancellation
    # of O(1) terms (seen: grad h0 = 0.005, float32 off by 7e-7), so scale by at least 1e-2.
    _assert_rel_close(got, want, TOL[torch.float32], f"B={B} H={H}", floor=1e-2)


def test_large_T():
    cfg = dict(input_size=8, hidden_size=24, bidirectional=True)
    ref, ours = _make(cfg)
    x, h0, c0, lengths = _data(cfg, 1500, 3)
    got = _run(ours.to(CUDA), "packed", x, h0, c0, lengths, CUDA, torch.float32)
    want = _run(ref.to(CUDA), "packed", x, h0, c0, lengths, CUDA, torch.float32)
    _assert_rel_close(got, want, TOL[torch.float32], "T=1500")


def test_longer_than_cudnn_allows():
    """T > 65,535 (cuDNN refuses it), float64. The reference is our CPU path (parity-tested
    against torch.nn above): torch.nn's own float64 CPU run of 70,000 steps takes minutes."""
    cfg = dict(input_size=3, hidden_size=5, bidirectional=True)
    _, ours = _make(cfg)
    x, h0, c0, lengths = _data(cfg, 70_000, 2)
    want = _run(ours.double(), "seq", x, h0, c0, lengths, "cpu", torch.float64)
    got = _run(ours.to(CUDA), "seq", x, h0, c0, lengths, CUDA, torch.float64)
    _assert_rel_close(got, want, TOL[torch.float64], "T=70000")


def test_packed_with_zero_length_tail_rows_and_bidirectional_projection():
    cfg = dict(input_size=5, hidden_size=16, proj_size=4, num_layers=2, bidirectional=True)
    ref, ours = _make(cfg)
    x, h0, c0, _ = _data(cfg, 7, 6)
    lengths = torch.tensor([7, 1, 3, 7, 2, 5])
    got = _run(ours.to(CUDA), "packed", x, h0, c0, lengths, CUDA, torch.float32)
    want = _run(ref.to(CUDA), "packed", x, h0, c0, lengths, CUDA, torch.float32)
    _assert_rel_close(got, want, TOL[torch.float32], "packed")


# ------------------------------------------------------------------------- the raw ops

def _op_args(T=4, B=3, I=2, H=3, P=0, bias=True, lengths=None, reverse=False,
             dtype=torch.float64, requires_grad=True):
    g = torch.Generator().manual_seed(3)
    Ps = P or H

    def r(*shape):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * 0.5).to(
            CUDA, dtype).requires_grad_(requires_grad)

    return (r(T, B, I), r(4 * H, I), r(4 * H, Ps), r(4 * H) if bias else None,
            r(4 * H) if bias else None, r(P, H) if P else None, r(B, Ps), r(B, H), lengths,
            reverse)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("P", [0, 2])
@pytest.mark.parametrize("packed", [False, True])
def test_gradcheck_float64(reverse, P, packed):
    lengths = torch.tensor([4, 2, 0]) if packed else None
    args = _op_args(P=P, lengths=lengths, reverse=reverse)

    def f(*a):
        return _ops.lstm_forward(*a)[:3]

    assert torch.autograd.gradcheck(f, args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("P", [0, 2])
def test_opcheck(dtype, P):
    args = _op_args(P=P, lengths=torch.tensor([4, 1, 3]), dtype=dtype)
    torch.library.opcheck(_ops.lstm_forward.default, args)


def test_saved_cell_state_is_float32_for_half_inputs():
    for dtype in (torch.float16, torch.bfloat16):
        y, h, c, gates, hs, cs, h_raw = _ops.lstm_forward(*_op_args(dtype=dtype,
                                                                     requires_grad=False))
        assert cs.dtype == torch.float32
        assert gates.dtype == hs.dtype == y.dtype == h.dtype == c.dtype == dtype


def test_backward_vector_and_scalar_paths_agree():
    """dy at an odd address forces the scalar pointwise path; H = 16 takes the vector
    path otherwise. Both must give the same gradients."""
    x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, lengths, reverse = _op_args(
        T=5, B=3, I=4, H=16, dtype=torch.float32, requires_grad=False,
        lengths=torch.tensor([5, 2, 4]))
    y, h_n, c_n, gates, hs, cs, h_raw = _ops.lstm_forward(x, w_ih, w_hh, b_ih, b_hh, w_hr, h0,
                                                          c0, lengths, reverse)
    dy = torch.randn_like(y)
    dy_odd = torch.empty(dy.numel() + 1, device=CUDA)[1:].view_as(dy).copy_(dy)
    assert dy_odd.data_ptr() % 16 != 0
    common = (torch.randn_like(h_n), torch.randn_like(c_n), x, w_ih, w_hh, w_hr, lengths,
              reverse, True, gates, hs, cs, h_raw)
    a = _ops.lstm_backward(dy, *common)
    b = _ops.lstm_backward(dy_odd, *common)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-6)


def test_bad_device_is_a_clear_error():
    args = list(_op_args(dtype=torch.float32, requires_grad=False))
    args[1] = args[1].cpu()
    with pytest.raises(RuntimeError, match=r"fused_rnn::lstm_forward: w_ih must be on the device"):
        _ops.lstm_forward(*args)


# -------------------------------------------------------------------- streams and graphs

def test_runs_on_the_current_stream():
    """The input is written on a side stream after a long sleep: kernels on any other
    stream than the current one would read it too early."""
    cfg = dict(input_size=8, hidden_size=32, num_layers=2)
    _, ours = _make(cfg)
    ours = ours.to(CUDA)
    x = torch.randn(20, 4, 8, device=CUDA)
    want, (wh, wc) = ours(x)
    buf = torch.zeros_like(x)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)
        buf.copy_(x)
        got, (gh, gc) = ours(buf)
        got.sum().backward()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(gh, wh)
    torch.testing.assert_close(gc, wc)
    ours.zero_grad()
    want.sum().backward()
    grads = [p.grad.clone() for p in ours.parameters()]
    ours.zero_grad()
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)
        buf.copy_(x)
        got2, _ = ours(buf)
        got2.sum().backward()
    torch.cuda.current_stream().wait_stream(side)
    for p, g in zip(ours.parameters(), grads):
        torch.testing.assert_close(p.grad, g)


def test_cuda_graph_capture_of_packed_input_is_refused_clearly():
    """Per-row lengths are copied from the host and set the per-step row counts on the
    host: the op refuses capture with a message instead of a CUDA error (or a graph that
    would replay the captured lengths on another batch)."""
    _, ours = _make(dict(input_size=3, hidden_size=5))
    ours = ours.to(CUDA)
    x = torch.randn(4, 2, 3, device=CUDA)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor([4, 2]))
    ours(packed)  # fine outside a graph
    h0 = torch.zeros(2, 5, device=CUDA)
    module_call = lambda: ours(packed)  # noqa: E731
    op_call = lambda: _ops.lstm_forward(  # noqa: E731
        x, ours.weight_ih_l0, ours.weight_hh_l0, None, None, None, h0, h0,
        torch.tensor([4, 2]), False)
    for call in (module_call, op_call):
        graph = torch.cuda.CUDAGraph()
        with pytest.raises(RuntimeError, match="cannot be captured in a CUDA graph"):
            with torch.cuda.graph(graph):
                call()


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
def test_packed_calls_do_not_synchronize(cell):
    """Forward and backward on a PackedSequence queue their work without waiting for the
    GPU: the lengths go to the device from pinned memory, and a pack whose index
    permutations were checked once is not read back again (each of these stalled the host
    until the GPU had drained: the varlen suite ran 2x slower packed than padded)."""
    torch.manual_seed(0)
    ours = getattr(fused_rnn, cell)(6, 8, num_layers=2, bidirectional=True).to(CUDA)
    x = torch.randn(5, 3, 6, device=CUDA, requires_grad=True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor([3, 5, 2]),
                                                     enforce_sorted=False)
    ours(packed)  # checks the pack's permutations (a sync), once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        y, _ = ours(packed)
        y.data.sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_graph_capture_and_replay(dtype):
    cfg = dict(input_size=8, hidden_size=16, num_layers=2, bidirectional=True, proj_size=6)
    _, ours = _make(cfg)
    ours = ours.to(CUDA, dtype)
    eager = copy.deepcopy(ours)
    static_x = torch.randn(12, 4, 8, device=CUDA, dtype=dtype, requires_grad=True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up (cuBLAS workspaces, autograd) off the graph
        for _ in range(2):
            out, (h, c) = ours(static_x)
            (out.float().square().sum() + h.float().sum() + c.float().sum()).backward()
    torch.cuda.current_stream().wait_stream(side)
    ours.zero_grad(set_to_none=True)
    static_x.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out, (h, c) = ours(static_x)
        (out.float().square().sum() + h.float().sum() + c.float().sum()).backward()
    for seed in (1, 2):
        torch.manual_seed(seed)
        new_x = torch.randn(12, 4, 8, device=CUDA, dtype=dtype)
        with torch.no_grad():
            static_x.copy_(new_x)
        graph.replay()
        torch.cuda.synchronize()
        eager.zero_grad(set_to_none=True)
        xe = new_x.clone().requires_grad_()
        oe, (he, ce) = eager(xe)
        (oe.float().square().sum() + he.float().sum() + ce.float().sum()).backward()
        tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
        torch.testing.assert_close(out, oe, **tol)
        torch.testing.assert_close(h, he, **tol)
        torch.testing.assert_close(c, ce, **tol)
        torch.testing.assert_close(static_x.grad, xe.grad, **tol)
        for p, q in zip(ours.parameters(), eager.parameters()):
            torch.testing.assert_close(p.grad, q.grad, **tol)


# --------------------------------------------------------------------------- autocast

def test_autocast_like_torch_nn():
    cfg = dict(input_size=8, hidden_size=16, num_layers=2)
    ref, ours = _make(cfg)
    ref, ours = ref.to(CUDA), ours.to(CUDA)
    x = torch.randn(6, 3, 8, device=CUDA)
    with torch.autocast("cuda"):
        yr, (hr, cr) = ref(x)
        yo, (ho, co) = ours(x)
    assert (yo.dtype, ho.dtype, co.dtype) == (yr.dtype, hr.dtype, cr.dtype)
    for a, b in ((yo, yr), (ho, hr), (co, cr)):
        err = (a.float() - b.float()).abs().max().item()
        assert err <= 1e-2 * b.float().abs().max().item()
    (yr.float().sum() + hr.float().sum()).backward()
    (yo.float().sum() + ho.float().sum()).backward()
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        assert p.grad.dtype == torch.float32, name
        err = (p.grad - q.grad).abs().max().item()
        assert err <= 2e-2 * q.grad.abs().max().item(), name


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
def test_autocast_state_fed_back_like_torch_nn(cls):
    """The usual AMP loop, y, hx = rnn(x, hx): the second call gets the float16 state the
    first returned with float32 input, which torch.nn accepts (its ops cast hx too)."""
    ref, ours = (getattr(m, cls)(8, 16, num_layers=2).to(CUDA) for m in (torch.nn, fused_rnn))
    ours.load_state_dict(ref.state_dict())
    x1, x2 = torch.randn(2, 5, 3, 8, device=CUDA)
    results = []
    for mod in (ref, ours):
        with torch.autocast("cuda"):
            _, hx = mod(x1)
            y, hx = mod(x2, hx)
        results.append((y,) + (hx if isinstance(hx, tuple) else (hx,)))
    for r, o in zip(*results):
        assert o.dtype == r.dtype
        assert (o.float() - r.float()).abs().max().item() <= 1e-2 * r.float().abs().max().item()


@pytest.mark.parametrize("low", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cls", ["LSTMCell", "GRUCell", "RNNCell"])
def test_autocast_cells_like_torch_nn(cls, low):
    """torch.nn's cells cast every argument to the autocast dtype (float16 or bfloat16) and
    return in it: a lower-precision input (an autocast Linear's output) and the state fed
    back work, and the dtypes and values match."""
    ref, ours = (getattr(m, cls)(8, 16).to(CUDA) for m in (torch.nn, fused_rnn))
    ours.load_state_dict(ref.state_dict())
    proj = torch.nn.Linear(8, 8).to(CUDA)
    x = torch.randn(3, 4, 8, device=CUDA)
    results = []
    for mod in (ref, ours):
        mod.zero_grad()
        with torch.autocast("cuda", dtype=low):
            hx, outs = None, []
            for t in range(3):
                hx = mod(proj(x[t]), hx)
                outs.extend(hx if isinstance(hx, tuple) else (hx,))
        sum(o.float().sum() for o in outs).backward()
        results.append((outs, [p.grad for p in mod.parameters()]))
    # bfloat16 keeps 8 bits of mantissa: three steps of rounding differences in the
    # weights' casts and the gate sums reach a few 1e-2 of the largest value.
    tol = 4e-2 if low == torch.bfloat16 else 1e-2
    (r_outs, r_grads), (o_outs, o_grads) = results
    for r, o in zip(r_outs + r_grads, o_outs + o_grads):
        assert o.dtype == r.dtype
        assert (o.float() - r.float()).abs().max().item() <= tol * r.float().abs().max().item()


def test_tf32_setting_is_honoured():
    """With torch.backends.cuda.matmul.allow_tf32 on, GEMMs may use TF32: still within TF32's
    precision of the float64 reference; with it off (the fixture), within 1e-4."""
    cfg = dict(input_size=64, hidden_size=64, num_layers=2)
    ref, ours = _make(cfg)
    x, h0, c0, lengths = _data(cfg, 8, 16)
    want = _run(ref.double(), "seq", x, h0, c0, lengths, "cpu", torch.float64)
    ours = ours.to(CUDA)
    _assert_rel_close(_run(ours, "seq", x, h0, c0, lengths, CUDA, torch.float32), want,
                      TOL[torch.float32], "TF32 off")
    torch.backends.cuda.matmul.allow_tf32 = True
    _assert_rel_close(_run(ours, "seq", x, h0, c0, lengths, CUDA, torch.float32), want, 1e-2,
                      "TF32 on")
