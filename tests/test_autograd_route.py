"""The layer wrappers reach the same backward by two routes (fused_rnn/ops.py, _call): a lean
torch.autograd.Function in eager mode, and the op's own autograd layer (register_autograd)
under torch.compile, torch.jit.trace, torch.func and for callers of the raw op. Both must
give the same outputs and gradients, bit for bit; and eager training must take the lean
route (the other costs 40-100 us more a call, a tenth of a one-step GRU's forward + backward)."""
import pytest
import torch

from fused_rnn import ops as fops

T, B, I, H = 5, 3, 4, 6
_ops = torch.ops.fused_rnn


def _args(cell, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype, requires_grad=True)

    x, w_ih, w_hh = r(T, B, I), r(G * H, I), r(G * H, H)
    b_ih, b_hh, h0 = r(G * H), r(G * H), r(B, H)
    lengths = torch.tensor([5, 2, 4])
    if cell == "lstm":
        return (x, w_ih, w_hh, b_ih, b_hh, None, h0, r(B, H), lengths, False)
    if cell == "gru":
        return (x, w_ih, w_hh, b_ih, b_hh, h0, lengths, True)
    return (x, w_ih, w_hh, b_ih, b_hh, h0, lengths, False, True)


def _outputs_and_grads(op, args, route):
    out = route(op, *args)
    n_state = 2 if op is _ops.lstm_forward else 1
    y, finals = out[0], out[1:1 + n_state]
    loss = (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum()
    loss = loss + sum((f ** 2).sum() for f in finals)
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    grads = torch.autograd.grad(loss, leaves)
    return [t.detach() for t in (y, *finals)], list(grads), type(y.grad_fn).__name__


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_both_autograd_routes_agree_bitwise(cell):
    op = getattr(_ops, f"{cell}_forward")
    args = _args(cell)
    lean_out, lean_grads, lean_node = _outputs_and_grads(op, args, fops._call)
    op_out, op_grads, op_node = _outputs_and_grads(op, args, lambda op, *a: op(*a))
    # eager training takes the lean route
    assert lean_node == f"Fused{cell.capitalize()}LayerBackward"
    assert lean_node != op_node  # and the raw op its own autograd layer
    for a, b in zip(lean_out + lean_grads, op_out + op_grads):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_lean_route_only_when_a_gradient_is_wanted(cell):
    op = getattr(_ops, f"{cell}_forward")
    args = _args(cell)
    with torch.no_grad():
        assert fops._call(op, *args)[0].grad_fn is None
    plain = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    assert fops._call(op, *plain)[0].grad_fn is None
