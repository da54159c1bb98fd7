"""fused_rnn.RNN / RNNCell and the RNN ops on CUDA: parity with torch.nn (cuDNN and a
float64 CPU reference), gradcheck, opcheck and autocast. Skipped without a GPU."""
import copy

import pytest
import torch

import fused_rnn
from _cuda_parity import CUDA, TOL, assert_rel_close, data, make, quantized, run
from _cuda_parity import full_fp32  # noqa: F401  (autouse: float32 parity without TF32)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

_ops = torch.ops.fused_rnn


CONFIGS = [
    dict(input_size=5, hidden_size=7),
    dict(input_size=8, hidden_size=16, num_layers=2, bidirectional=True),
    dict(input_size=4, hidden_size=8, bias=False, num_layers=2),
    dict(input_size=6, hidden_size=11, bidirectional=True),
]
FORMS = ["seq", "batch_first", "unbatched", "packed"]


def _pair(cfg):
    return make(torch.nn.RNN, fused_rnn.RNN, cfg)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_float32_matches_cudnn_and_float64_reference(cfg, form, nonlinearity):
    cfg = dict(cfg, batch_first=form == "batch_first", nonlinearity=nonlinearity)
    ref, ours = _pair(cfg)
    B = 1 if form == "unbatched" else 5
    x, states, lengths = data(cfg, 6, B, 1)
    bf = cfg["batch_first"]
    got = run(ours.to(CUDA), form, x, states, lengths, CUDA, torch.float32, bf)
    cudnn = run(copy.deepcopy(ref).to(CUDA), form, x, states, lengths, CUDA, torch.float32, bf)
    assert_rel_close(got, cudnn, TOL[torch.float32], "vs cuDNN")
    q = [quantized(t, torch.float32) for t in (x, *states)]
    cpu = run(copy.deepcopy(ref).double(), form, q[0], tuple(q[1:]), lengths, "cpu",
              torch.float64, bf)
    assert_rel_close(got, cpu, TOL[torch.float32], "vs float64 CPU")


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_float64_matches_cpu_reference(cfg, nonlinearity):
    cfg = dict(cfg, nonlinearity=nonlinearity)
    ref, ours = _pair(cfg)
    x, states, lengths = data(cfg, 5, 4, 1)
    got = run(ours.double().to(CUDA), "packed", x, states, lengths, CUDA, torch.float64)
    want = run(ref.double(), "packed", x, states, lengths, "cpu", torch.float64)
    assert_rel_close(got, want, TOL[torch.float64], "float64")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_half_precision_matches_float64_reference(cfg, dtype):
    _, ours = _pair(cfg)
    ours = ours.to(CUDA, dtype)
    ref64 = torch.nn.RNN(**cfg).double()
    ref64.load_state_dict({k: v.double().cpu() for k, v in ours.state_dict().items()})
    x, states, lengths = data(cfg, 5, 4, 1)
    x, states = quantized(x, dtype), tuple(quantized(s, dtype) for s in states)
    got = run(ours, "packed", x, states, lengths, CUDA, dtype)
    want = run(ref64, "packed", x, states, lengths, "cpu", torch.float64)
    assert_rel_close(got, want, TOL[dtype], str(dtype))


def test_float16_long_sequence_gradients():
    """dL/dh runs backwards through every step: it is kept in float32 for float16 storage
    (rounded to 16 bits at every step, its error would compound over a long sequence).
    Written before any GPU run: not yet measured."""
    cfg = dict(input_size=8, hidden_size=32)
    _, ours = _pair(cfg)
    ours = ours.to(CUDA, torch.float16)
    ref64 = torch.nn.RNN(**cfg).double()
    ref64.load_state_dict({k: v.double().cpu() for k, v in ours.state_dict().items()})
    x, states, lengths = data(cfg, 100, 4, 1)
    x, states = quantized(x, torch.float16), tuple(quantized(s, torch.float16) for s in states)
    got = run(ours, "seq", x, states, lengths, CUDA, torch.float16)
    want = run(ref64, "seq", x, states, lengths, "cpu", torch.float64)
    assert_rel_close(got, want, TOL[torch.float16], "float16, T=100")


@pytest.mark.parametrize("B,H", [(1, 1), (3, 3), (7, 13), (33, 31), (4, 24)])
def test_sizes_that_are_not_tile_multiples(B, H):
    cfg = dict(input_size=3, hidden_size=H)
    ref, ours = _pair(cfg)
    x, states, lengths = data(cfg, 4, B, 1)
    got = run(ours.to(CUDA), "packed", x, states, lengths, CUDA, torch.float32)
    want = run(ref.to(CUDA), "packed", x, states, lengths, CUDA, torch.float32)
    assert_rel_close(got, want, TOL[torch.float32], f"B={B} H={H}")


def _op_args(T=4, B=3, I=2, H=3, lengths=None, reverse=False, relu=False, dtype=torch.float64,
             requires_grad=True):
    g = torch.Generator().manual_seed(3)

    def r(*shape):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * 0.5).to(
            CUDA, dtype).requires_grad_(requires_grad)

    return (r(T, B, I), r(H, I), r(H, H), r(H), r(H), r(B, H), lengths, reverse, relu)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("packed", [False, True])
def test_gradcheck_float64(relu, reverse, packed):
    args = _op_args(lengths=torch.tensor([4, 2, 0]) if packed else None, reverse=reverse,
                    relu=relu)
    assert torch.autograd.gradcheck(lambda *a: _ops.rnn_forward(*a)[:2], args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_opcheck(dtype):
    torch.library.opcheck(_ops.rnn_forward.default,
                          _op_args(lengths=torch.tensor([4, 1, 3]), dtype=dtype))


def test_autocast_like_torch_nn():
    cfg = dict(input_size=8, hidden_size=16, num_layers=2)
    ref, ours = _pair(cfg)
    ref, ours = ref.to(CUDA), ours.to(CUDA)
    x = torch.randn(6, 3, 8, device=CUDA)
    with torch.autocast("cuda"):
        yr, hr = ref(x)
        yo, ho = ours(x)
    assert (yo.dtype, ho.dtype) == (yr.dtype, hr.dtype)
    assert (yo.float() - yr.float()).abs().max() <= 1e-2 * yr.float().abs().max()


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_cell_matches_torch_on_cuda(nonlinearity):
    torch.manual_seed(0)
    ref = torch.nn.RNNCell(5, 9, nonlinearity=nonlinearity).to(CUDA)
    ours = fused_rnn.RNNCell(5, 9, nonlinearity=nonlinearity).to(CUDA)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(4, 5, device=CUDA)
    h = torch.randn(4, 9, device=CUDA)
    results = []
    for mod in (ref, ours):
        xl, hl = x.clone().requires_grad_(), h.clone().requires_grad_()
        out = mod(xl, hl)
        (out * torch.arange(9, device=CUDA)).sum().backward()
        results.append([out.detach(), xl.grad, hl.grad] + [p.grad for p in mod.parameters()])
    for a, b in zip(*results):
        assert (a - b).abs().max() <= 1e-4 * max(b.abs().max().item(), 1e-6)
