"""Timing: wall clock on the CPU, CUDA events on the GPU; interleaved repeats; GEMM peak."""
import statistics
import time

import torch


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn, device):
    """Seconds one call of fn takes (fn must not need set-up inside the timed region)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(fns, device, repeats, warmup, before=None):
    """Times each of fns `repeats` times, alternating between them (in a rotating order) so
    that drift in machine load hits all of them alike. `before(i)` runs untimed before
    each call of fns[i]. Returns one list of seconds per function."""
    n = len(fns)
    for _ in range(warmup):
        for i, fn in enumerate(fns):
            if before is not None:
                before(i)
            fn()
    sync(device)
    times = [[] for _ in fns]
    for r in range(repeats):
        for k in range(n):
            i = (k + r) % n
            if before is not None:
                before(i)
            sync(device)
            times[i].append(time_once(fns[i], device))
    return times


def summary(seconds):
    """Median, min and max in milliseconds."""
    ms = [s * 1e3 for s in seconds]
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms),
            "repeats": len(ms)}


def gemm_peak_gflops(device, dtype, n=None, repeats=5):
    """Measured GEMM throughput of this device: a square n×n GEMM, the best of `repeats`
    (a peak is what the device can do; the median would count other load on the machine)."""
    if n is None:
        n = 8192 if device.type == "cuda" else 2048
    if dtype in (torch.float16, torch.bfloat16) and device.type == "cpu":
        n = min(n, 1024)  # CPU half-precision GEMMs can be slow; keep this short
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    times = interleaved([lambda: torch.mm(a, b, out=c)], device, repeats, warmup=2)[0]
    return 2 * n ** 3 / min(times) / 1e9
