"""The layer wrappers reach the same backward by two routes (fused_rnn/ops.py, _call): a C++
autograd Function in eager mode (csrc/layer_autograd.cpp), and the op's own autograd layer
(register_autograd) under torch.compile, torch.jit.trace, torch.func and for callers of the
raw op. Both must give the same outputs and gradients, bit for bit, whichever optional
arguments are given, whichever tensors want a gradient and whichever outputs the loss reads;
and eager training must take the lean route (the other costs ~100 us more a call: a third
of a one-step GRU's forward + backward, benchmarks/NOTES.md)."""
import pytest
import torch

from fused_rnn import ops as fops

T, B, I, H, P = 5, 3, 4, 6, 2
_ops = torch.ops.fused_rnn
CELLS = ["lstm", "gru", "rnn"]


def _args(cell, bias=True, lengths=True, proj=False, frozen=(), dtype=torch.float64):
    """The forward op's arguments; the tensors named in `frozen` want no gradient."""
    g = torch.Generator().manual_seed(0)
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    P_ = P if proj else H

    def r(name, *shape):
        return torch.randn(*shape, generator=g, dtype=dtype, requires_grad=name not in frozen)

    x, w_ih, w_hh = r("x", T, B, I), r("w_ih", G * H, I), r("w_hh", G * H, P_)
    b_ih, b_hh = (r("b_ih", G * H), r("b_hh", G * H)) if bias else (None, None)
    h0 = r("h0", B, P_)
    lens = torch.tensor([5, 2, 4]) if lengths else None
    if cell == "lstm":
        w_hr = r("w_hr", P, H) if proj else None
        return (x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, r("c0", B, H), lens, False)
    if cell == "gru":
        return (x, w_ih, w_hh, b_ih, b_hh, h0, lens, True)
    return (x, w_ih, w_hh, b_ih, b_hh, h0, lens, False, True)


def _outputs_and_grads(op, args, route, read=("y", "finals")):
    out = route(op, *args)
    n_state = 2 if op is _ops.lstm_forward else 1
    y, finals = out[0], out[1:1 + n_state]
    loss = 0
    if "y" in read:
        loss = loss + (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype, device=y.device).view_as(y)).sum()
    if "finals" in read:
        loss = loss + sum((f ** 2).sum() for f in finals)
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return [t.detach() for t in (y, *finals)], list(grads), y.grad_fn.name()


def _assert_routes_agree(cell, args, read=("y", "finals"), exact=True):
    op = getattr(_ops, f"{cell}_forward")
    lean_out, lean_grads, lean_node = _outputs_and_grads(op, args, fops._call, read)
    op_out, op_grads, op_node = _outputs_and_grads(op, args, lambda op, *a: op(*a), read)
    # eager training takes the lean route, and the raw op its own autograd layer
    assert lean_node.endswith(f"fused_rnn::Fused{cell.capitalize()}Layer>")
    assert lean_node != op_node
    assert len(lean_grads) == len(op_grads)
    for a, b in zip(lean_out + lean_grads, op_out + op_grads):
        assert (a is None) == (b is None)
        if a is not None and exact:
            assert torch.equal(a, b)
        elif a is not None:  # on CUDA cuBLAS may pick another kernel for other alignments
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_both_autograd_routes_agree_bitwise(cell):
    _assert_routes_agree(cell, _args(cell))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("frozen", [(), ("x", "h0", "c0")], ids=["all", "weights-only"])
def test_routes_agree_on_cuda(cell, frozen):
    """The C++ autograd Function with CUDA tensors (lengths stay on the CPU), every gradient
    wanted, or only the weights' (need_dx and need_dh0 off)."""
    def on_cuda(a):
        if not isinstance(a, torch.Tensor) or a.dtype == torch.int64:
            return a
        return a.detach().cuda().requires_grad_(a.requires_grad)
    args = tuple(on_cuda(a) for a in _args(cell, frozen=frozen))
    _assert_routes_agree(cell, args, exact=False)


# Absent optional tensors shift which autograd input each later argument is: the C++ route
# maps them (needs_per_argument); frozen tensors skip the kernels' dx or weight products.
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bias,lengths,proj", [(False, True, False), (True, False, False),
                                               (False, False, False), (True, True, True),
                                               (False, False, True)],
                         ids=["no-bias", "no-lengths", "neither", "proj", "proj-only"])
def test_routes_agree_without_optional_arguments(cell, bias, lengths, proj):
    if proj and cell != "lstm":
        pytest.skip("projections are LSTM only")
    _assert_routes_agree(cell, _args(cell, bias=bias, lengths=lengths, proj=proj))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("frozen", [("x",), ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr"),
                                    ("x", "h0", "c0"), ("x", "w_ih", "w_hh", "h0", "c0", "w_hr"),
                                    ("b_ih",)],
                         ids=["data-x", "frozen-weights", "weights-only", "biases-only",
                              "no-b_ih"])
def test_routes_agree_with_frozen_tensors(cell, frozen):
    for bias in (True, False):
        args = _args(cell, bias=bias, proj=cell == "lstm", frozen=frozen)
        if any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
            _assert_routes_agree(cell, args)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("read", [("y",), ("finals",)], ids=["y-only", "finals-only"])
def test_routes_agree_when_the_loss_reads_some_outputs(cell, read):
    _assert_routes_agree(cell, _args(cell), read)


@pytest.mark.parametrize("cell", CELLS)
def test_lean_route_only_when_a_gradient_is_wanted(cell):
    op = getattr(_ops, f"{cell}_forward")
    args = _args(cell)
    with torch.no_grad():
        assert fops._call(op, *args)[0].grad_fn is None
    plain = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    assert fops._call(op, *plain)[0].grad_fn is None


@pytest.mark.parametrize("cell", CELLS)
def test_lean_route_checks_saved_tensors_for_in_place_changes(cell):
    """As any autograd Function: a saved input changed in place before backward is an error,
    not a silently wrong gradient."""
    args = _args(cell)
    y = fops._call(getattr(_ops, f"{cell}_forward"), *args)[0]
    with torch.no_grad():
        args[1].mul_(2)  # w_ih
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


@pytest.mark.parametrize("cell", CELLS)
def test_routes_agree_when_autograd_asks_for_some_leaves(cell):
    """autograd.grad for some leaves only (the C++ route's needs_input_grad follows the call,
    so it skips dW or dh0 where the Python layer computes them), then for all of them from
    the same graph: the same gradients, bit for bit."""
    op = getattr(_ops, f"{cell}_forward")
    h0 = 6 if cell == "lstm" else 5
    results = []
    for route in (fops._call, lambda op, *a: op(*a)):
        args = _args(cell)
        y = route(op, *args)[0]
        loss = (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype, device=y.device).view_as(y)).sum()
        got = []
        for pick in ([h0], [1, 4], [0]):  # h0 alone, w_ih and b_hh, x alone
            got += torch.autograd.grad(loss, [args[k] for k in pick], retain_graph=True)
        leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
        got += torch.autograd.grad(loss, leaves)
        results.append(got)
    for a, b in zip(*results):
        assert torch.equal(a, b)
