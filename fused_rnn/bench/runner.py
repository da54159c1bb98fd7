"""One case: build both modules on the same weights, check that they agree, then time them
interleaved and derive tokens/s, GFLOP/s and the fraction of the measured GEMM peak.
With autocast, both modules' forward runs under torch.autocast(device) (never the backward,
as torch's autocast documentation asks)."""
import contextlib
import copy

import torch

from . import timing
from .cases import (flat_outputs, fused_class, make_input, make_modules, make_state,
                    output_tensor, with_grad)
from .flops import case_flops

# Agreement is judged against a float64 run of torch.nn on the same weights and inputs:
# ours may be at most ERROR_RATIO times as far from it as torch.nn's own run in the case's
# dtype (summation order alone gives a few times), or FLOOR of max(1, largest reference
# magnitude) per tensor where torch.nn's run is (nearly) exact. Lower-precision math in
# ours (TF32 products, a shorter polynomial) is hundreds of times farther: a mismatch.
ERROR_RATIO = 10.0
FLOOR = {torch.float64: 1e-8, torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 1e-2}
# ReLU's derivative jumps at 0: a pre-activation within rounding of 0 takes either side in
# either implementation and moves every gradient behind it by one term (measured: 2.3e-8 at
# one of 1.6M elements, T = 50, B = 64, H = 512, moved dx by 4e-3 of its largest value). The
# gradients of a ReLU RNN are held to this floor; its outputs, continuous, to FLOOR.
RELU_GRAD_FLOOR = 1e-2


def autocast_dtype(device):
    """The dtype torch.autocast(device) runs its lower-precision ops in."""
    return torch.get_autocast_dtype(device.type)


def _forward(module, inp, hx, grad_out=None, autocast=None):
    """autocast: None, or the device type whose autocast the forward runs under."""
    with torch.autocast(autocast) if autocast else contextlib.nullcontext():
        out = module(inp, hx)
    if grad_out is not None:
        torch.autograd.backward(output_tensor(out), grad_out)
    return out


def _compared(case, module, inp, hx, grad_out, autocast):
    """Outputs (and in training, dL/dx and every parameter gradient) in a fixed order."""
    if case.mode == "inference":
        with torch.no_grad():
            return flat_outputs(_forward(module, inp, hx, autocast=autocast))
    inp = with_grad(inp)
    module.zero_grad(set_to_none=True)
    out = _forward(module, inp, hx, grad_out, autocast)
    leaf = inp.data if hasattr(inp, "batch_sizes") else inp
    grads = [leaf.grad] + [p.grad for _, p in sorted(module.named_parameters())]
    return [t.detach() for t in flat_outputs(out)] + grads


def _reference64(case, ref, inp, hx, grad_out):
    """_compared for a float64 copy of torch.nn's module on the same inputs (no autocast)."""
    ref64 = copy.deepcopy(ref).double()
    inp64 = inp.double()  # a PackedSequence too
    hx64 = None if hx is None else (
        tuple(h.double() for h in hx) if isinstance(hx, tuple) else hx.double())
    g64 = None if grad_out is None else grad_out.double()
    return _compared(case, ref64, inp64, hx64, g64, None)


def check_parity(case, ref, ours, inp, hx, grad_out, dtype, autocast=None):
    """(max abs difference between the two, agrees, why not, {torch_error, fused_error}:
    each one's largest distance from a float64 run of torch.nn, relative to that run's
    largest magnitude per tensor); under autocast (the device type) their outputs must
    also have the same dtypes."""
    a = _compared(case, ref, inp, hx, grad_out, autocast)
    b = _compared(case, ours, inp, hx, grad_out, autocast)
    r = _reference64(case, ref, inp, hx, grad_out)
    floor = FLOOR.get(dtype, 1e-6)
    if autocast and dtype != torch.float64:
        floor = max(floor, FLOOR[autocast_dtype(torch.device(autocast))])
    errors = {"torch_error": 0.0, "fused_error": 0.0}
    if not len(a) == len(b) == len(r):  # a missing state or gradient is a mismatch
        return float("inf"), False, f"{len(a)} outputs/gradients against {len(b)}", errors
    worst_abs, ok, why = 0.0, True, ""
    # In training, the gradients follow the outputs: dL/dx and one per parameter.
    first_grad = len(a) - (1 + len(list(ref.parameters()))) if grad_out is not None else len(a)
    for i, (x, y, x64) in enumerate(zip(a, b, r)):
        if x is None or y is None:
            ok = ok and x is None and y is None
            continue
        if x.shape != y.shape:
            return (float("inf"), False,
                    f"shapes differ: {list(x.shape)} against {list(y.shape)}", errors)
        if x.dtype != y.dtype:
            return float("inf"), False, f"dtypes differ: {x.dtype} against {y.dtype}", errors
        # NaN or inf on either side is reported as such: max() would drop a NaN, and an
        # inf would make any difference pass.
        bad = [n for n, t in (("torch.nn", x), ("ours", y)) if not bool(t.isfinite().all())]
        if bad:
            return (float("inf"), False,
                    f"non-finite values (NaN or inf) in {' and '.join(bad)}", errors)
        if not x.numel():
            continue
        x64 = x64.to(x.device)
        scale = max(1.0, x64.abs().max().item())
        d = (x.double() - y.double()).abs().max().item()
        e_torch = (x.double() - x64).abs().max().item() / scale
        e_ours = (y.double() - x64).abs().max().item() / scale
        worst_abs = max(worst_abs, d)
        errors["torch_error"] = max(errors["torch_error"], e_torch)
        errors["fused_error"] = max(errors["fused_error"], e_ours)
        limit = max(ERROR_RATIO * e_torch, floor)
        if case.cell == "rnn_relu" and i >= first_grad:
            limit = max(limit, RELU_GRAD_FLOOR)
        if e_ours > limit and ok:
            ok = False
            why = (f"ours is {e_ours:.2g} from float64 torch.nn, torch.nn's own run "
                   f"{e_torch:.2g} (limit {limit:.2g}: {ERROR_RATIO:g}x that, at least "
                   f"{floor:g})")
    return worst_abs, ok, why, errors


def _peak_memory_mb(fn, device):
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20


def run_case(case, device, dtype, repeats, warmup, peak_gflops, seed=0, autocast=False):
    """A result dict: the case, status ("ok", "mismatch", "skipped", "error"), and timings.
    autocast: run both modules' forward under torch.autocast(device.type)."""
    amp = device.type if autocast else None
    res = dict(case.as_dict(), name=case.name, device=str(device), dtype=str(dtype).replace(
        "torch.", ""), status="ok", note="")
    if fused_class(case.cell, case.step_cell) is None:
        kind = f"{case.cell} cell" if case.step_cell else case.cell
        res.update(status="skipped", note=f"fused_rnn has no {kind} module in this build")
        return res
    if case.proj_size and case.cell != "lstm":
        res.update(status="skipped", note="proj_size applies to LSTM only")
        return res
    ref, ours = make_modules(case, device, dtype, seed)
    inp, tokens = make_input(case, device, dtype, seed)
    hx = make_state(case, device, dtype, seed)
    grad_out = None
    if case.mode == "training":
        with torch.no_grad():
            shape = output_tensor(_forward(ref, inp, hx, autocast=amp)).shape
        g = torch.Generator().manual_seed(seed + 3)
        grad_out = torch.randn(shape, generator=g, dtype=torch.float64).to(device, dtype)

    diff, ok, why, errors = check_parity(case, ref, ours, inp, hx, grad_out, dtype, amp)
    res["max_abs_diff"] = diff
    res.update(errors)
    if not ok:
        res.update(status="mismatch", note=f"{why} (torch.nn against ours): not timed")
        return res

    # A varlen case also times our own run on the padded batch (same T and B): packed
    # input should never cost more than padding it would.
    mods, inps = [ref, ours], [inp, inp]
    if case.varlen:
        padded, _ = make_input(case.with_(varlen=False), device, dtype, seed)
        mods.append(ours)
        inps.append(padded)
    if case.mode == "inference":
        def make(m, x):
            def fn():
                with torch.no_grad():
                    _forward(m, x, hx, autocast=amp)
            return fn
        fns = [make(m, x) for m, x in zip(mods, inps)]
        before = None
    else:
        inps = [with_grad(x) for x in inps]
        grads = [grad_out, grad_out]
        if case.varlen:
            with torch.no_grad():
                grads.append(torch.randn_like(output_tensor(_forward(ours, inps[2], hx,
                                                                     autocast=amp))))
        fns = [(lambda m=m, x=x, g=g: _forward(m, x, hx, g, amp))
               for m, x, g in zip(mods, inps, grads)]

        def before(i):  # fresh gradients, outside the timed region
            mods[i].zero_grad(set_to_none=True)
            leaf = inps[i].data if hasattr(inps[i], "batch_sizes") else inps[i]
            leaf.grad = None

    times = timing.interleaved(fns, device, repeats, warmup, before)
    if case.varlen:
        s = timing.summary(times.pop())
        fns.pop()
        res["fused_padded_median_ms"] = s["median_ms"]
    flops = case_flops(case, tokens)
    res["tokens"] = tokens
    res["gflop"] = flops / 1e9
    for label, ts, fn in zip(("torch", "fused"), times, fns):
        s = timing.summary(ts)
        sec = s["median_ms"] / 1e3
        res.update({f"{label}_{k}": v for k, v in s.items() if k != "repeats"})
        res[f"{label}_tokens_per_s"] = tokens / sec
        res[f"{label}_gflops"] = flops / sec / 1e9
        res[f"{label}_peak_fraction"] = flops / sec / 1e9 / peak_gflops if peak_gflops else None
        if before is not None:
            before(0 if label == "torch" else 1)
        res[f"{label}_peak_mem_mb"] = _peak_memory_mb(fn, device)
    res["repeats"] = repeats
    res["speedup"] = res["torch_median_ms"] / res["fused_median_ms"]
    if case.varlen:
        res["packed_vs_padded"] = res["fused_padded_median_ms"] / res["fused_median_ms"]
    return res
