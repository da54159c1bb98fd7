"""float32 results as close to the float64 answer as torch.nn's float32 run is: sums over
T * B terms (the bias gradients, accumulated in double since session 22) must not drift by
~n ulp where torch.nn's pairwise sums do not."""
import copy

import pytest
import torch

import fused_rnn


def _grads(module, x, g):
    x = x.clone().requires_grad_()
    y, _ = module(x)
    y.backward(g)
    return {n: p.grad for n, p in module.named_parameters()} | {"dx": x.grad}


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
def test_float32_gradients_as_close_to_float64_as_torch(cls):
    torch.manual_seed(0)
    T, B, H = 400, 32, 64  # 12800 terms in each bias gradient
    ref = getattr(torch.nn, cls)(H, H)
    ours = getattr(fused_rnn, cls)(H, H)
    ours.load_state_dict(ref.state_dict())
    ref64 = copy.deepcopy(ref).double()
    x, g = torch.randn(T, B, H), torch.randn(T, B, H)
    want = _grads(ref64, x.double(), g.double())
    theirs, mine = _grads(ref, x, g), _grads(ours, x, g)
    for name, w in want.items():
        scale = w.abs().max().item()
        e_torch = (theirs[name].double() - w).abs().max().item() / scale
        e_ours = (mine[name].double() - w).abs().max().item() / scale
        assert e_ours <= 4 * e_torch + 2e-7, (name, e_ours, e_torch)
