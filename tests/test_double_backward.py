"""Gradients of gradients (create_graph=True), as torch.nn's CPU RNNs support them: the ops'
backward re-runs the layer as differentiable torch operations (fused_rnn/_rerun.py).

gradgradcheck on the raw ops in float64, the re-run's first derivatives against the fused
kernels', and gradient penalties through the modules against torch.nn on the same weights.
"""
import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import fused_rnn
from fused_rnn import ops

from _parity import STEP_CELL_IDS, STEP_CELLS, twin

T, B, I, H = 4, 3, 3, 2
LENGTHS = torch.tensor([4, 1, 3])


def _t(*shape, gen):
    return torch.randn(*shape, dtype=torch.float64, generator=gen).requires_grad_()


def _lstm_args(bias, proj, gen):
    P = 2 if proj else H
    return [_t(T, B, I, gen=gen), _t(4 * H, I, gen=gen), _t(4 * H, P, gen=gen),
            _t(4 * H, gen=gen) if bias else None, _t(4 * H, gen=gen) if bias else None,
            _t(P, H, gen=gen) if proj else None, _t(B, P, gen=gen), _t(B, H, gen=gen)]


def _gates_args(G, bias, gen):
    return [_t(T, B, I, gen=gen), _t(G * H, I, gen=gen), _t(G * H, H, gen=gen),
            _t(G * H, gen=gen) if bias else None, _t(G * H, gen=gen) if bias else None,
            _t(B, H, gen=gen)]


def _cases():
    # (name, function of the tensor args, tensor args)
    gen = torch.Generator().manual_seed(0)
    out = []
    for lengths in (None, LENGTHS):
        for reverse in (False, True):
            tag = f"{'len' if lengths is not None else 'dense'}-{'rev' if reverse else 'fwd'}"
            for bias, proj in ((True, False), (False, True)):
                out.append((f"lstm-{tag}-bias{int(bias)}-proj{int(proj)}",
                            lambda *a, L=lengths, r=reverse: ops.lstm_layer(*a, lengths=L, reverse=r),
                            _lstm_args(bias, proj, gen)))
            out.append((f"gru-{tag}", lambda *a, L=lengths, r=reverse: ops.gru_layer(*a, lengths=L, reverse=r),
                        _gates_args(3, True, gen)))
            for nl in ("tanh", "relu"):
                out.append((f"rnn-{nl}-{tag}",
                            lambda *a, L=lengths, r=reverse, n=nl: ops.rnn_layer(
                                *a, lengths=L, reverse=r, nonlinearity=n),
                            _gates_args(1, True, gen)))
    out.append(("gru-nobias", lambda *a: ops.gru_layer(*a), _gates_args(3, False, gen)))
    return out


CASES = _cases()


@pytest.mark.parametrize("name,fn,args", CASES, ids=[c[0] for c in CASES])
def test_gradgradcheck_raw_ops(name, fn, args):
    present = [a for a in args if a is not None]

    def f(*tensors):
        it = iter(tensors)
        return fn(*[next(it) if a is not None else None for a in args])

    assert gradgradcheck(f, present, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name,fn,args", CASES, ids=[c[0] for c in CASES])
def test_rerun_first_derivatives_equal_the_kernels(name, fn, args):
    """create_graph=True takes the re-run; its gradients must equal the fused backward's."""
    present = [a for a in args if a is not None]
    gen = torch.Generator().manual_seed(1)
    outs = fn(*args)
    weights = [torch.randn(o.shape, dtype=o.dtype, generator=gen) for o in outs]
    fused = torch.autograd.grad(outs, present, weights, retain_graph=True)
    rerun = torch.autograd.grad(outs, present, weights, create_graph=True)
    for a, b in zip(fused, rerun):
        torch.testing.assert_close(b, a, atol=1e-12, rtol=1e-10)


def _penalty_grads(module, x, state):
    """d/dparams of ||d(sum of outputs · w)/dx||^2: a gradient penalty, as in WGAN-GP."""
    x = x.detach().requires_grad_()
    out = module(x, state) if state is not None else module(x)
    y, s = out
    flat = [y] + (list(s) if isinstance(s, tuple) else [s])
    loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype, device=o.device).view_as(o)).sum()
               for o in flat)
    (gx,) = torch.autograd.grad(loss, x, create_graph=True)
    penalty = (gx ** 2).sum()
    return torch.autograd.grad(penalty, list(module.parameters()))


@pytest.mark.parametrize("ref_cls,our_cls,extra", [
    (torch.nn.LSTM, fused_rnn.LSTM, dict(num_layers=2, bidirectional=True, proj_size=2)),
    (torch.nn.LSTM, fused_rnn.LSTM, dict(batch_first=True)),
    (torch.nn.GRU, fused_rnn.GRU, dict(num_layers=2, bidirectional=True)),
    (torch.nn.RNN, fused_rnn.RNN, dict(num_layers=2, nonlinearity="tanh")),
], ids=["lstm-bi-proj", "lstm-batch-first", "gru-bi", "rnn-tanh"])
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_gradient_penalty_matches_torch(ref_cls, our_cls, extra, device):
    """On CUDA against torch.nn on the CPU: cuDNN refuses double backward."""
    torch.manual_seed(0)
    ref, ours = twin(ref_cls, our_cls, input_size=I, hidden_size=3, **extra)
    x = torch.randn(5, 2, I, dtype=torch.float64)
    got = _penalty_grads(ours.to(device), x.to(device), None)
    for a, b in zip(got, _penalty_grads(ref, x, None)):
        torch.testing.assert_close(a.cpu(), b, atol=1e-10, rtol=1e-8)


def test_gradient_penalty_packed_with_state_matches_torch():
    torch.manual_seed(1)
    ref, ours = twin(torch.nn.LSTM, fused_rnn.LSTM, input_size=I, hidden_size=3)
    x = torch.randn(5, 3, I, dtype=torch.float64)
    h0 = torch.randn(1, 3, 3, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(1, 3, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([2, 5, 3])

    def run(module):
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        y, (h, c) = module(packed, (h0, c0))
        loss = (y.data ** 2).sum() + (h * c).sum()
        g = torch.autograd.grad(loss, [h0, c0], create_graph=True)
        penalty = sum((t ** 2).sum() for t in g)
        return torch.autograd.grad(penalty, list(module.parameters()) + [h0, c0])

    for a, b in zip(run(ours), run(ref)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("ref_cls,our_cls", STEP_CELLS, ids=STEP_CELL_IDS)
def test_cell_hessian_vector_product_matches_torch(ref_cls, our_cls):
    torch.manual_seed(2)
    ref, ours = twin(ref_cls, our_cls, input_size=I, hidden_size=3)
    x = torch.randn(2, I, dtype=torch.float64)
    v = [torch.randn_like(p) for p in ref.parameters()]

    def hvp(module):
        params = list(module.parameters())
        out = module(x)
        loss = sum((o ** 3).sum() for o in (out if isinstance(out, tuple) else (out,)))
        g = torch.autograd.grad(loss, params, create_graph=True)
        return torch.autograd.grad(sum((a * b).sum() for a, b in zip(g, v)), params)

    for a, b in zip(hvp(ours), hvp(ref)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def test_gradcheck_of_a_float64_module_still_passes():
    """The re-run is only for create_graph; plain gradcheck still checks the fused kernels."""
    torch.manual_seed(3)
    m = fused_rnn.GRU(I, H, dtype=torch.float64)
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda a: m(a)[0], (x,))
