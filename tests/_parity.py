"""Shared helpers: run a torch.nn module and its fused_rnn twin on the same weights and
inputs, and compare outputs, final states and every gradient."""
import contextlib

import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fused_rnn

TOL = {torch.float64: dict(atol=1e-10, rtol=1e-10), torch.float32: dict(atol=1e-5, rtol=1e-5)}


#: The single-step cells, (torch.nn class, fused_rnn class), for pytest.mark.parametrize.
STEP_CELLS = [(torch.nn.LSTMCell, fused_rnn.LSTMCell), (torch.nn.GRUCell, fused_rnn.GRUCell),
              (torch.nn.RNNCell, fused_rnn.RNNCell)]
STEP_CELL_IDS = ["lstm", "gru", "rnn"]


def twin(ref_cls, our_cls, dtype=torch.float64, device="cpu", **kwargs):
    """A torch.nn module and ours, with ours loaded from the reference's state_dict."""
    ref = ref_cls(**kwargs, dtype=dtype, device=device)
    ours = our_cls(**kwargs, dtype=dtype, device=device)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _leaves(x):
    if isinstance(x, PackedSequence):
        return [x.data]
    if isinstance(x, (tuple, list)):
        return [t for item in x for t in _leaves(item)]
    return [x] if isinstance(x, torch.Tensor) else []


def run(module, inp, hx, seed=1234, autocast=None):
    """Forward (under torch.autocast(autocast) if given), then backward of a random linear
    function of every output tensor. Returns (output tensors, gradients of [input data,
    *hx tensors, *parameters])."""
    inputs = [t for t in _leaves(inp) + _leaves(hx)]
    for t in inputs:
        t.grad = None
    module.zero_grad(set_to_none=True)
    with torch.autocast(autocast) if autocast else contextlib.nullcontext():
        out = module(inp) if hx is None else module(inp, hx)
    outs = _leaves(out)
    gen = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o)).sum()
               for o in outs)
    wrt = inputs + list(module.parameters())
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    return [o.detach() for o in outs], grads


def clone_inputs(inp, hx):
    """Fresh leaf copies (requiring grad) of the input and initial state."""
    def leaf(t):
        return t.detach().clone().requires_grad_(t.is_floating_point())
    if isinstance(inp, PackedSequence):
        inp = PackedSequence(leaf(inp.data), inp.batch_sizes, inp.sorted_indices,
                             inp.unsorted_indices)
    else:
        inp = leaf(inp)
    if hx is not None:
        hx = tuple(leaf(h) for h in hx) if isinstance(hx, tuple) else leaf(hx)
    return inp, hx


def assert_same(ref, ours, inp, hx, dtype, tol=None):
    """Outputs, final states and all gradients of ours match torch.nn's (to TOL[dtype], or
    to atol = rtol = tol where sums over many rows need a looser bound)."""
    r_in, r_hx = clone_inputs(inp, hx)
    o_in, o_hx = clone_inputs(inp, hx)
    r_out, r_grads = run(ref, r_in, r_hx)
    o_out, o_grads = run(ours, o_in, o_hx)
    tol = TOL[dtype] if tol is None else dict(atol=tol, rtol=tol)
    assert len(r_out) == len(o_out)
    for k, (a, b) in enumerate(zip(r_out, o_out)):
        assert a.shape == b.shape, f"output {k}: shape {tuple(b.shape)} != torch's {tuple(a.shape)}"
        torch.testing.assert_close(b, a, **tol, msg=lambda m: f"output {k}: {m}")
    names = (["input"] + [f"hx[{i}]" for i in range(len(_leaves(hx)))] +
             [n for n, _ in ref.named_parameters()])
    for name, a, b in zip(names, r_grads, o_grads):
        if a is None:
            assert b is None or b.abs().max() == 0, f"grad of {name}: torch has none"
            continue
        assert b is not None, f"grad of {name} missing"
        torch.testing.assert_close(b, a, **tol, msg=lambda m: f"grad of {name}: {m}")


def packed_input(T, B, I, dtype, lengths=None, enforce_sorted=False, gen=None):
    """A PackedSequence of B rows with the given (unsorted by default) lengths ≤ T."""
    if lengths is None:
        lengths = torch.randint(1, T + 1, (B,), generator=gen)
        lengths[torch.randint(0, B, (1,), generator=gen)] = T
    x = torch.randn(T, B, I, dtype=dtype, generator=gen)
    return pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)
