"""10,000 forward + backward calls leave resident memory flat: every call's saved
buffers, outputs and gradients are freed when the caller drops them. The calls cycle
through every cell and input form (plain, packed, with initial state)."""
import ctypes
import gc
import os
import resource

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from _cells import CELLS, make, make_state, outputs

CALLS = 10_000
WARMUP = 500
# Resident-set growth allowed over CALLS calls. Leaking even one small tensor per call
# (its TensorImpl, storage and autograd metadata) adds several MiB: see the last test.
BOUND_BYTES = 2 << 20
PAGE = resource.getpagesize()

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"),
                                reason="reads resident memory from /proc")


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _release_free_heap():
    """Collect garbage and hand glibc's free heap pages back to the OS, so resident memory
    counts live objects only: otherwise memory freed by earlier tests absorbs a leak."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def rss_growth(step):
    for k in range(WARMUP):  # allocator pools and caches reach their steady state
        step(k)
    _release_free_heap()
    before = rss_bytes()
    for k in range(CALLS):
        step(k)
    _release_free_heap()
    return rss_bytes() - before


def _workload():
    """(module, input, state) for every cell and input form, tiny sizes."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 2, 2, dtype=torch.float64, generator=gen)
    packed = pack_padded_sequence(x, torch.tensor([3, 1]))
    work = []
    for cell in CELLS:
        torch.manual_seed(0)
        _, ours = make(cell, input_size=2, hidden_size=3, bidirectional=True)
        hx = make_state(cell, 2, 2, 3, gen=gen)
        work += [(ours, x, None), (ours, packed, None), (ours, x, hx)]
    return work


def test_forward_backward_does_not_leak():
    work = _workload()

    def step(k):
        module, inp, hx = work[k % len(work)]
        outs = outputs(module(inp) if hx is None else module(inp, hx))
        sum(o.sum() for o in outs).backward()

    growth = rss_growth(step)
    assert growth < BOUND_BYTES, f"resident memory grew {growth / 2**20:.2f} MiB over {CALLS} calls"


def test_bound_catches_a_leak():
    """The same measurement with one small autograd tensor kept per call exceeds the
    bound: the bound is tight enough to see such a leak."""
    kept = []
    w = torch.ones(3, dtype=torch.float64, requires_grad=True)

    def leaky_step(k):
        kept.append(w * k)

    growth = rss_growth(leaky_step)
    assert growth >= BOUND_BYTES, f"only {growth / 2**20:.2f} MiB for {len(kept)} kept tensors"
