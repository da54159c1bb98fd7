"""Two-process DistributedDataParallel (gloo, CPU): one training step on two halves of a
batch gives the gradients (and updated weights) of one process on the whole batch."""
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

import _ddp_worker as w
from _cells import CELLS

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or
                                not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

WORLD = 2
TIMEOUT_S = 180


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ranks(out_dir):
    ctx = mp.start_processes(w.worker, args=(WORLD, _free_port(), str(out_dir),
                                             [c.name for c in CELLS]),
                             nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not ctx.join(timeout=5):  # raises if a rank failed
            if time.monotonic() > deadline:
                pytest.fail(f"DDP ranks still running after {TIMEOUT_S} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
                p.join(10)


def test_two_process_step_matches_one_process(tmp_path):
    _run_ranks(tmp_path)
    for cell in CELLS:
        saved = torch.load(tmp_path / f"{cell.name}.pt")
        module = w.model(cell)
        x, target = w.batch(cell)
        w.loss_fn(module, x, target).backward()
        for name, p in module.named_parameters():
            torch.testing.assert_close(saved["grads"][name], p.grad, atol=1e-12, rtol=1e-10,
                                       msg=lambda m: f"{cell.name} grad of {name}: {m}")
            with torch.no_grad():
                p -= 0.1 * p.grad
            torch.testing.assert_close(saved["params"][name], p.detach(), atol=1e-12,
                                       rtol=1e-10, msg=lambda m: f"{cell.name} {name}: {m}")
