"""Shared helpers of the CUDA tests: build a torch.nn module and its fused_rnn twin, run
forward + backward in any input form on any device and dtype, and compare every output
and gradient with a relative tolerance (max |ours - ref| / max |ref| per tensor)."""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

CUDA = "cuda"

# The tolerances: float32 (TF32 off) 1e-4, float16/bfloat16 1e-2 relative.
TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2, torch.float64: 1e-10}


def make(ref_cls, our_cls, cfg, seed=0):
    """torch.nn's module and ours with the same (float32, CPU) weights."""
    torch.manual_seed(seed)
    ref = ref_cls(**cfg)
    ours = our_cls(**cfg)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def state_sizes(cfg, n_states):
    H = cfg["hidden_size"]
    return (cfg.get("proj_size", 0) or H, H)[:n_states]


def data(cfg, T, B, n_states, seed=1):
    """Float64 CPU input [T, B, I], initial states [L*D, B, F] and lengths (max T)."""
    g = torch.Generator().manual_seed(seed)
    LD = cfg.get("num_layers", 1) * (2 if cfg.get("bidirectional", False) else 1)
    x = torch.randn(T, B, cfg["input_size"], generator=g, dtype=torch.float64)
    states = tuple(torch.randn(LD, B, f, generator=g, dtype=torch.float64)
                   for f in state_sizes(cfg, n_states))
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[B // 2] = T
    return x, states, lengths


def run(mod, form, x, states, lengths, device, dtype, batch_first=False, with_state=True):
    """Forward + backward of a fixed random weighted sum of every output; returns every
    result and gradient as float64 CPU tensors, keyed by name. form: seq | batch_first |
    unbatched (B must be 1) | packed."""
    mod.zero_grad(set_to_none=True)
    # Fresh leaves: a float64 CPU run would otherwise mark the caller's x itself.
    xl = x.detach().to(device, dtype, copy=True).requires_grad_()
    sl = [s.detach().to(device, dtype, copy=True).requires_grad_() for s in states]
    inp, hx = xl, list(sl)
    if form == "unbatched":
        inp, hx = xl[:, 0], [s[:, 0] for s in sl]
    elif batch_first:
        inp = xl.transpose(0, 1)
    if form == "packed":
        inp = pack_padded_sequence(xl, lengths, enforce_sorted=False)
    hx = hx[0] if len(hx) == 1 else tuple(hx)
    if not with_state:  # zero initial state; its gradient is reported as zeros
        hx = None
        for s in sl:
            s.grad = torch.zeros_like(s)
    out, final = mod(inp) if hx is None else mod(inp, hx)
    finals = list(final) if isinstance(final, tuple) else [final]
    out = out.data if form == "packed" else out
    g = torch.Generator().manual_seed(7)
    loss = 0
    for t in [out] + finals:
        w = torch.randn(t.shape, generator=g, dtype=torch.float64).to(device)
        loss = loss + (t.double() * w).sum()
    loss.backward()
    res = {"output": out, "grad x": xl.grad}
    for k, (f, s) in enumerate(zip(finals, sl)):
        res[f"final state {k}"] = f
        res[f"grad initial state {k}"] = s.grad
    for name, p in mod.named_parameters():
        res["grad " + name] = p.grad
    return {k: v.detach().double().cpu() for k, v in res.items()}


def assert_rel_close(got, ref, tol, what="", floor=1e-6):
    """max |got - ref| <= tol * max(max |ref|, floor) for every tensor."""
    assert got.keys() == ref.keys()
    for k in ref:
        assert got[k].shape == ref[k].shape, (what, k, got[k].shape, ref[k].shape)
        err = (got[k] - ref[k]).abs().max().item() if ref[k].numel() else 0.0
        scale = max(ref[k].abs().max().item() if ref[k].numel() else 0.0, floor)
        assert err <= tol * scale, f"{what} {k}: max error {err:.3g} > {tol:g} * {scale:.3g}"


def quantized(x, dtype):
    """x rounded to dtype, back in float64: the reference sees exactly our input."""
    return x.to(dtype).double()


@pytest.fixture(autouse=True)
def full_fp32():
    """Parity in float32 is measured without TF32, in our GEMMs and in cuDNN's (autouse in
    every CUDA test module that imports it)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
