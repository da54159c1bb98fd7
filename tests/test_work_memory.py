"""The cache of the CPU ops' large buffers (csrc/cpu/work_memory.*): a freed block serves
the next call, a live tensor's block never does, and the limit and empty_cpu_cache hold."""
import os
import subprocess
import sys

import pytest
import torch

import fused_rnn

cache_bytes = torch.ops.fused_rnn.cpu_cache_bytes

# Over 32 MB (the floor of what is cached; glibc's heap reuses smaller blocks) in float64
# at B = 64, H = 128: LSTM gates [T, B, 4H], GRU gates [T, B, 3H], RNN outputs and states
# [T, B, H], about 39 MB each.
B, H = 64, 128
STEPS = {"LSTM": 150, "GRU": 200, "RNN": 600}
F64 = torch.float64


def _pair(cls):
    torch.manual_seed(0)
    ref = getattr(torch.nn, cls)(H, H, dtype=F64)
    ours = getattr(fused_rnn, cls)(H, H, dtype=F64)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
def test_freed_buffers_are_kept_and_emptied(cls):
    _, ours = _pair(cls)
    T = STEPS[cls]
    x = torch.randn(T, B, H, dtype=F64)
    fused_rnn.empty_cpu_cache()
    assert cache_bytes() == 0
    with torch.no_grad():
        first = ours(x)[0]
    kept = cache_bytes()
    assert kept >= 32 << 20  # at least one block came back
    with torch.no_grad():
        second = ours(x)[0]
    assert torch.equal(first, second)
    assert cache_bytes() == kept  # the second call took its blocks from the cache
    assert fused_rnn.empty_cpu_cache() == kept
    assert cache_bytes() == 0


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
def test_live_tensors_keep_their_blocks(cls):
    """Two graphs alive at once (their saved gates in cached blocks), an output held across
    later calls: every gradient and output as torch.nn's, nothing overwritten."""
    ref, ours = _pair(cls)
    T = STEPS[cls]
    xs = [torch.randn(T, B, H, dtype=F64, requires_grad=True) for _ in range(3)]
    want = []
    for x in xs:
        y, _ = ref(x)
        want.append((y.detach(), torch.autograd.grad((y * y).sum(), [x, *ref.parameters()])))
    outs = [ours(x)[0] for x in xs]  # three graphs alive
    held = [y.detach().clone() for y in outs]
    for i in (2, 0, 1):  # backward out of order, with calls in between
        with torch.no_grad():
            ours(torch.randn(T, B, H, dtype=F64))
        grads = torch.autograd.grad((outs[i] * outs[i]).sum(), [xs[i], *ours.parameters()])
        torch.testing.assert_close(outs[i].detach(), want[i][0], atol=1e-10, rtol=1e-10)
        assert torch.equal(outs[i].detach(), held[i])
        for g, w in zip(grads, want[i][1]):
            torch.testing.assert_close(g, w, atol=1e-9, rtol=1e-10)


def _run(code, env):
    full = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True,
                          timeout=120)


CODE = f"""
import torch, fused_rnn
with torch.no_grad():
    fused_rnn.LSTM({H}, {H}).double()(torch.randn({STEPS["LSTM"]}, {B}, {H}).double())
print(torch.ops.fused_rnn.cpu_cache_bytes())
"""


def test_limit_from_the_environment():
    assert int(_run(CODE, {"FUSED_RNN_CPU_CACHE_MB": "0"}).stdout.split()[-1]) == 0
    assert int(_run(CODE, {"FUSED_RNN_CPU_CACHE_MB": "1"}).stdout.split()[-1]) == 0
    assert int(_run(CODE, {"FUSED_RNN_CPU_CACHE_MB": "64"}).stdout.split()[-1]) > 0
    bad = _run(CODE, {"FUSED_RNN_CPU_CACHE_MB": "lots"})
    assert bad.returncode != 0 and "FUSED_RNN_CPU_CACHE_MB must be a whole number" in bad.stderr
