"""Shared by the parity tests: run a torch.nn module and its fused_rnn twin on the same
weights and inputs, and compare outputs, final states and every gradient."""
import torch
from torch.nn.utils.rnn import PackedSequence

#: parity tolerance per dtype (the project's bar: float64 within 1e-10, float32 within 1e-5)
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def twin(ref, fused_cls, **kwargs):
    """A fused_cls built with `kwargs` that holds a copy of ref's weights."""
    ours = fused_cls(**kwargs)
    ours.load_state_dict(ref.state_dict())
    ours.train(ref.training)
    return ours


def flat_tensors(out):
    """Every tensor in a module's output (tuples, lists and PackedSequence, in order)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, PackedSequence):
        return [t for t in out if t is not None]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in flat_tensors(o)]
    return []


def run(module, build, leaves, seed=0):
    """Runs module(*build(*leaves)) on fresh copies of `leaves` (floating ones require grad),
    backpropagates a random weighting of every floating output, and returns
    (outputs, grads of the leaves, grads of the parameters by name)."""
    leaves = [l.detach().clone().requires_grad_(l.is_floating_point()) for l in leaves]
    module.zero_grad(set_to_none=True)
    outs = flat_tensors(module(*build(*leaves)))
    gen = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum()
               for o in outs if o.is_floating_point())
    loss.backward()
    grads = [l.grad for l in leaves]
    # A torch.compile'd module names its parameters after the module it wraps.
    params = {n: p.grad for n, p in getattr(module, "_orig_mod", module).named_parameters()}
    return outs, grads, params


def assert_parity(ref, ours, build, leaves, tol):
    """ref and ours (same weights) give the same outputs and gradients within tol."""
    r_out, r_grads, r_params = run(ref, build, leaves)
    o_out, o_grads, o_params = run(ours, build, leaves)
    assert len(r_out) == len(o_out)
    for k, (r, o) in enumerate(zip(r_out, o_out)):
        assert r.dtype == o.dtype and r.shape == o.shape, f"output {k}: {o.dtype} {o.shape}"
        torch.testing.assert_close(o, r, atol=tol, rtol=tol, msg=lambda m: f"output {k}: {m}")
    for k, (r, o) in enumerate(zip(r_grads, o_grads)):
        if r is None:
            assert o is None, f"input {k} has a gradient only in ours"
            continue
        assert o is not None, f"input {k} has no gradient"
        torch.testing.assert_close(o, r, atol=tol, rtol=tol, msg=lambda m: f"grad input {k}: {m}")
    assert r_params.keys() == o_params.keys()
    for name, r in r_params.items():
        o = o_params[name]
        assert (r is None) == (o is None), f"grad {name}: {o}"
        if r is not None:
            torch.testing.assert_close(o, r, atol=tol, rtol=tol, msg=lambda m: f"grad {name}: {m}")
