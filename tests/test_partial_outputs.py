"""A loss that uses only some outputs (only the sequence output, only h_n, only c_n): the
layer ops' unused outputs reach their backward as None, not as filled zeros
(set_materialize_grads(False) in fused_rnn/ops.py), and every gradient still matches
torch.nn's."""
import pytest
import torch

import fused_rnn
from _parity import TOL, twin

MODULES = {
    "lstm": (torch.nn.LSTM, fused_rnn.LSTM),
    "gru": (torch.nn.GRU, fused_rnn.GRU),
    "rnn": (torch.nn.RNN, fused_rnn.RNN),
}
T, B, I, H = 4, 3, 5, 6


def _grads(module, x, hx, pick):
    out, h_n = module(x, hx)
    states = list(h_n) if isinstance(h_n, tuple) else [h_n]
    used = pick(out, states)
    gen = torch.Generator().manual_seed(11)
    loss = (used * torch.randn(used.shape, generator=gen, dtype=used.dtype)).sum()
    leaves = [x] + (list(hx) if isinstance(hx, tuple) else [hx]) + list(module.parameters())
    return torch.autograd.grad(loss, leaves)


PICKS = {
    "output": lambda out, states: out,
    "h_n": lambda out, states: states[0],
    "c_n": lambda out, states: states[1],
    "last_step_of_output": lambda out, states: out[-1],
}


CASES = [(cell, which) for cell in MODULES for which in PICKS if which != "c_n" or cell == "lstm"]


@pytest.mark.parametrize("cell,which", CASES)
def test_gradients_of_some_outputs(cell, which):
    ref, ours = twin(*MODULES[cell], input_size=I, hidden_size=H, num_layers=2,
                     bidirectional=True)
    gen = torch.Generator().manual_seed(4)

    def leaf(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_()
    x = leaf(T, B, I)
    hx = (leaf(4, B, H), leaf(4, B, H)) if cell == "lstm" else leaf(4, B, H)
    for a, b in zip(_grads(ref, x, hx, PICKS[which]), _grads(ours, x, hx, PICKS[which])):
        torch.testing.assert_close(b, a, **TOL[torch.float64])
