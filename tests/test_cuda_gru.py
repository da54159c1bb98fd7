"""fused_rnn.GRU, the GRU ops and the fused cells on CUDA: parity with torch.nn (cuDNN and a
float64 CPU reference), gradcheck, opcheck, CUDA graphs and autocast. Skipped without a
GPU."""
import copy

import pytest
import torch

import fused_rnn
from _cuda_parity import CUDA, TOL, assert_rel_close, data, make, quantized, run
from _cuda_parity import full_fp32  # noqa: F401  (autouse: float32 parity without TF32)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

_ops = torch.ops.fused_rnn


CONFIGS = [
    dict(input_size=5, hidden_size=7),                                     # odd sizes
    dict(input_size=8, hidden_size=16, num_layers=2, bidirectional=True),  # vector path
    dict(input_size=4, hidden_size=8, bias=False, num_layers=2),
    dict(input_size=6, hidden_size=11, bidirectional=True),
]
FORMS = ["seq", "batch_first", "unbatched", "packed"]


def _pair(cfg):
    return make(torch.nn.GRU, fused_rnn.GRU, cfg)


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_float32_matches_cudnn_and_float64_reference(cfg, form, with_state):
    cfg = dict(cfg, batch_first=form == "batch_first")
    ref, ours = _pair(cfg)
    B = 1 if form == "unbatched" else 5
    x, states, lengths = data(cfg, 6, B, 1)
    bf = cfg["batch_first"]
    got = run(ours.to(CUDA), form, x, states, lengths, CUDA, torch.float32, bf, with_state)
    cudnn = run(copy.deepcopy(ref).to(CUDA), form, x, states, lengths, CUDA, torch.float32, bf,
                with_state)
    assert_rel_close(got, cudnn, TOL[torch.float32], "vs cuDNN")
    q = [quantized(t, torch.float32) for t in (x, *states)]
    cpu = run(copy.deepcopy(ref).double(), form, q[0], tuple(q[1:]), lengths, "cpu",
              torch.float64, bf, with_state)
    assert_rel_close(got, cpu, TOL[torch.float32], "vs float64 CPU")


@pytest.mark.parametrize("form", ["seq", "packed"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_float64_matches_cpu_reference(cfg, form):
    ref, ours = _pair(cfg)
    x, states, lengths = data(cfg, 5, 4, 1)
    got = run(ours.double().to(CUDA), form, x, states, lengths, CUDA, torch.float64)
    want = run(ref.double(), form, x, states, lengths, "cpu", torch.float64)
    assert_rel_close(got, want, TOL[torch.float64], "float64")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("form", ["seq", "packed"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_half_precision_matches_float64_reference(cfg, form, dtype):
    _, ours = _pair(cfg)
    ours = ours.to(CUDA, dtype)
    ref64 = torch.nn.GRU(**cfg).double()
    ref64.load_state_dict({k: v.double().cpu() for k, v in ours.state_dict().items()})
    x, states, lengths = data(cfg, 5, 4, 1)
    x, states = quantized(x, dtype), tuple(quantized(s, dtype) for s in states)
    got = run(ours, form, x, states, lengths, CUDA, dtype)
    want = run(ref64, form, x, states, lengths, "cpu", torch.float64)
    assert_rel_close(got, want, TOL[dtype], str(dtype))


def test_float16_long_sequence_gradients():
    """dL/dh runs backwards through every step (each adds dgh W_hh): it is kept in float32
    for float16 storage, as the LSTM's is (rounded to 16 bits at every step, its error
    would compound over a long sequence). Written before any GPU run: not yet measured."""
    cfg = dict(input_size=8, hidden_size=32)
    _, ours = _pair(cfg)
    ours = ours.to(CUDA, torch.float16)
    ref64 = torch.nn.GRU(**cfg).double()
    ref64.load_state_dict({k: v.double().cpu() for k, v in ours.state_dict().items()})
    x, states, lengths = data(cfg, 100, 4, 1)
    x, states = quantized(x, torch.float16), tuple(quantized(s, torch.float16) for s in states)
    got = run(ours, "seq", x, states, lengths, CUDA, torch.float16)
    want = run(ref64, "seq", x, states, lengths, "cpu", torch.float64)
    assert_rel_close(got, want, TOL[torch.float16], "float16, T=100")


@pytest.mark.parametrize("B,H", [(1, 1), (3, 3), (7, 13), (33, 31), (4, 24), (5, 40)])
def test_sizes_that_are_not_tile_multiples(B, H):
    ref, ours = _pair(dict(input_size=3, hidden_size=H))
    x, states, lengths = data(dict(input_size=3, hidden_size=H), 4, B, 1)
    got = run(ours.to(CUDA), "packed", x, states, lengths, CUDA, torch.float32)
    want = run(ref.to(CUDA), "packed", x, states, lengths, CUDA, torch.float32)
    assert_rel_close(got, want, TOL[torch.float32], f"B={B} H={H}")


def test_longer_than_cudnn_allows():
    """T > 65,535 (cuDNN refuses it), float64. The reference is our CPU path (parity-tested
    against torch.nn above): torch.nn's own float64 CPU run of 70,000 steps takes minutes."""
    cfg = dict(input_size=3, hidden_size=5, bidirectional=True)
    _, ours = _pair(cfg)
    x, states, lengths = data(cfg, 70_000, 2, 1)
    want = run(ours.double(), "seq", x, states, lengths, "cpu", torch.float64)
    got = run(ours.to(CUDA), "seq", x, states, lengths, CUDA, torch.float64)
    assert_rel_close(got, want, TOL[torch.float64], "T=70000")


def test_large_T():
    cfg = dict(input_size=8, hidden_size=24, bidirectional=True)
    ref, ours = _pair(cfg)
    x, states, lengths = data(cfg, 1500, 3, 1)
    got = run(ours.to(CUDA), "packed", x, states, lengths, CUDA, torch.float32)
    want = run(ref.to(CUDA), "packed", x, states, lengths, CUDA, torch.float32)
    assert_rel_close(got, want, TOL[torch.float32], "T=1500")


def _op_args(T=4, B=3, I=2, H=3, bias=True, lengths=None, reverse=False, dtype=torch.float64,
             requires_grad=True):
    g = torch.Generator().manual_seed(3)

    def r(*shape):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * 0.5).to(
            CUDA, dtype).requires_grad_(requires_grad)

    return (r(T, B, I), r(3 * H, I), r(3 * H, H), r(3 * H) if bias else None,
            r(3 * H) if bias else None, r(B, H), lengths, reverse)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_gradcheck_float64(reverse, packed, bias):
    args = _op_args(bias=bias, lengths=torch.tensor([4, 2, 0]) if packed else None,
                    reverse=reverse)
    assert torch.autograd.gradcheck(lambda *a: _ops.gru_forward(*a)[:2], args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_opcheck(dtype):
    torch.library.opcheck(_ops.gru_forward.default,
                          _op_args(lengths=torch.tensor([4, 1, 3]), dtype=dtype))


def test_backward_vector_and_scalar_paths_agree():
    x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse = _op_args(
        T=5, B=3, I=4, H=16, dtype=torch.float32, requires_grad=False,
        lengths=torch.tensor([5, 2, 4]))
    y, h_n, gates, hs, hn = _ops.gru_forward(x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse)
    dy = torch.randn_like(y)
    dy_odd = torch.empty(dy.numel() + 1, device=CUDA)[1:].view_as(dy).copy_(dy)
    common = (torch.randn_like(h_n), x, w_ih, w_hh, lengths, reverse, True, gates, hs, hn)
    for u, v in zip(_ops.gru_backward(dy, *common), _ops.gru_backward(dy_odd, *common)):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-6)


def test_cuda_graph_capture_and_replay():
    cfg = dict(input_size=8, hidden_size=16, num_layers=2, bidirectional=True)
    _, ours = _pair(cfg)
    ours = ours.to(CUDA)
    eager = copy.deepcopy(ours)
    static_x = torch.randn(12, 4, 8, device=CUDA, requires_grad=True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            out, h = ours(static_x)
            (out.square().sum() + h.sum()).backward()
    torch.cuda.current_stream().wait_stream(side)
    ours.zero_grad(set_to_none=True)
    static_x.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out, h = ours(static_x)
        (out.square().sum() + h.sum()).backward()
    new_x = torch.randn(12, 4, 8, device=CUDA)
    with torch.no_grad():
        static_x.copy_(new_x)
    graph.replay()
    torch.cuda.synchronize()
    xe = new_x.clone().requires_grad_()
    oe, he = eager(xe)
    (oe.square().sum() + he.sum()).backward()
    torch.testing.assert_close(out, oe)
    torch.testing.assert_close(h, he)
    torch.testing.assert_close(static_x.grad, xe.grad)
    for p, q in zip(ours.parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, q.grad)


def test_autocast_like_torch_nn():
    cfg = dict(input_size=8, hidden_size=16, num_layers=2)
    ref, ours = _pair(cfg)
    ref, ours = ref.to(CUDA), ours.to(CUDA)
    x = torch.randn(6, 3, 8, device=CUDA)
    with torch.autocast("cuda"):
        yr, hr = ref(x)
        yo, ho = ours(x)
    assert (yo.dtype, ho.dtype) == (yr.dtype, hr.dtype)
    for a, b in ((yo, yr), (ho, hr)):
        assert (a.float() - b.float()).abs().max() <= 1e-2 * b.float().abs().max()
    (yr.float().sum() + hr.float().sum()).backward()
    (yo.float().sum() + ho.float().sum()).backward()
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        assert p.grad.dtype == torch.float32, name
        assert (p.grad - q.grad).abs().max() <= 2e-2 * q.grad.abs().max(), name


# ------------------------------------------------------------------------------ cells

CELLS = {"LSTMCell": (torch.nn.LSTMCell, 2), "GRUCell": (torch.nn.GRUCell, 1)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", list(CELLS))
def test_cells_match_torch_on_cuda(kind, bias, dtype):
    ref_cls, n = CELLS[kind]
    torch.manual_seed(0)
    ref = ref_cls(5, 9, bias=bias).to(CUDA, dtype)
    ours = getattr(fused_rnn, kind)(5, 9, bias=bias).to(CUDA, dtype)
    ours.load_state_dict(ref.state_dict())
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 5, generator=g, dtype=dtype).to(CUDA)
    states = [torch.randn(4, 9, generator=g, dtype=dtype).to(CUDA) for _ in range(n)]
    results = []
    for mod in (ref, ours):
        xl = x.clone().requires_grad_()
        sl = [s.clone().requires_grad_() for s in states]
        out = mod(xl, sl[0] if n == 1 else tuple(sl))
        outs = [out] if n == 1 else list(out)
        sum((o * (k + 1)).sum() for k, o in enumerate(outs)).backward()
        results.append([o.detach() for o in outs] + [xl.grad] + [s.grad for s in sl] +
                       [p.grad for p in mod.parameters()])
    for a, b in zip(*results):
        assert (a - b).abs().max() <= TOL[dtype] * max(b.abs().max().item(), 1e-6)
