"""Threads and determinism.

Threads: several Python threads running one module in inference at once get exactly
what serial runs get (the ops keep no state between calls; each call allocates its own
buffers).

Determinism: on the CPU two runs on the same inputs (and thread count) give
bitwise-identical outputs and gradients. Nothing in the kernels depends on timing: each
step's tiles (csrc/cpu/step_team.h) write disjoint elements in a fixed order, the split
depends only on shapes and thread count, every reduction over steps or rows (dx, dW, db)
is one GEMM or sum with a fixed split, and the steps run in order.

On CUDA the kernels are deterministic by the same construction: no atomics (the bias
gradient is one at::sum over all steps and rows), one cuBLAS handle on torch's current
stream, and cuBLAS is bitwise reproducible run to run on the same GPU model (same
architecture and SM count) and toolkit version. It is NOT guaranteed across GPU models,
CUDA/cuBLAS versions, or when the module runs on several streams at once without
CUBLAS_WORKSPACE_CONFIG=:4096:8 (cuBLAS's own caveat). test_deterministic_cuda checks the
single-stream case where a GPU is present.
"""
import threading

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fused_rnn
from _cells import CELLS, make, make_state, outputs
from _parity import clone_inputs, run

F64 = torch.float64
cells = pytest.mark.parametrize("cell", CELLS, ids=str)


def _workloads(cell, n, dtype=torch.float32, device="cpu"):
    """n different inputs: plain, batch-first-free packed, with and without state."""
    gen = torch.Generator().manual_seed(5)
    work = []
    for k in range(n):
        T, B = 12 + k, 6
        x = torch.randn(T, B, 8, dtype=dtype, generator=gen)
        if k % 2:
            lengths = torch.randint(1, T + 1, (B,), generator=gen)
            x = pack_padded_sequence(x, lengths, enforce_sorted=False)
        hx = make_state(cell, 4, B, 24, dtype=dtype, gen=gen) if k % 3 == 0 else None
        work.append((x, hx))
    return work


@cells
@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_threads_match_serial(cell, mode):
    torch.manual_seed(0)
    _, ours = make(cell, torch.float32, input_size=8, hidden_size=24, num_layers=2,
                   bidirectional=True)
    ours.eval()
    ctx = torch.no_grad if mode == "no_grad" else torch.inference_mode
    n_threads, repeats = 4, 15
    work = _workloads(cell, n_threads)
    with ctx():
        serial = [outputs(ours(x, hx)) for x, hx in work]
    barrier = threading.Barrier(n_threads)
    results, errors = [None] * n_threads, []

    def worker(k):
        try:
            barrier.wait(timeout=60)
            with ctx():
                results[k] = [outputs(ours(*work[k])) for _ in range(repeats)]
        except Exception as e:  # reported below, with the thread that raised
            errors.append((k, e))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    assert not errors, errors
    for k in range(n_threads):
        for rep in results[k]:
            for a, b in zip(serial[k], rep, strict=True):
                assert torch.equal(a, b), f"thread {k} differs from the serial run"


def _forward_backward_twice(cell, cfg, inp, hx, dtype, device="cpu"):
    torch.manual_seed(0)
    _, ours = make(cell, dtype, **cfg)
    ours.to(device)
    runs = []
    for _ in range(2):
        i, h = clone_inputs(inp, hx)
        runs.append(run(ours, i, h))
    return runs


def _assert_bitwise(runs):
    (out_a, grad_a), (out_b, grad_b) = runs
    for k, (a, b) in enumerate(zip(out_a, out_b, strict=True)):
        assert torch.equal(a, b), f"output {k} differs between two runs"
    for k, (a, b) in enumerate(zip(grad_a, grad_b, strict=True)):
        assert (a is None) == (b is None)
        assert a is None or torch.equal(a, b), f"gradient {k} differs between two runs"


CONFIGS = [
    dict(input_size=7, hidden_size=33, num_layers=2, bidirectional=True),
    dict(input_size=5, hidden_size=16, batch_first=True, bias=False),
]


@cells
@pytest.mark.parametrize("cfg", range(len(CONFIGS)))
@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("packed", [False, True])
def test_deterministic_cpu(cell, cfg, dtype, packed):
    cfg = dict(CONFIGS[cfg])
    if cell.has_proj and cfg["hidden_size"] == 33:
        cfg["proj_size"] = 9
    gen = torch.Generator().manual_seed(2)
    T, B = 9, 7
    x = torch.randn(T, B, cfg["input_size"], dtype=dtype, generator=gen)
    if packed:
        x = pack_padded_sequence(x, torch.randint(1, T + 1, (B,), generator=gen),
                                 enforce_sorted=False)
    elif cfg.get("batch_first"):
        x = x.transpose(0, 1).contiguous()
    L = cfg.get("num_layers", 1) * (2 if cfg.get("bidirectional") else 1)
    hx = make_state(cell, L, B, cfg["hidden_size"], cfg.get("proj_size", 0), dtype, gen)
    _assert_bitwise(_forward_backward_twice(cell, cfg, x, hx, dtype))


@cells
def test_deterministic_algorithms_mode_accepted(cell):
    """torch.use_deterministic_algorithms(True) neither raises nor changes results."""
    cfg = CONFIGS[0]
    x = torch.randn(5, 3, cfg["input_size"], dtype=F64)
    plain = _forward_backward_twice(cell, cfg, x, None, F64)
    torch.use_deterministic_algorithms(True)
    try:
        strict = _forward_backward_twice(cell, cfg, x, None, F64)
    finally:
        torch.use_deterministic_algorithms(False)
    _assert_bitwise([plain[0], strict[0]])


@pytest.mark.skipif(not (torch.cuda.is_available() and fused_rnn.build_info()["cuda"]),
                    reason="needs a CUDA build and a GPU")
@cells
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_deterministic_cuda(cell, dtype):
    cfg = dict(CONFIGS[0])
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(40, 16, cfg["input_size"], generator=gen).to("cuda", dtype)
    _assert_bitwise(_forward_backward_twice(cell, cfg, x, None, dtype, "cuda"))
