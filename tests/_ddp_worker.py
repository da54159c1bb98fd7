"""One rank of test_ddp's two-process training step (imported by the spawned children)."""
import gc
import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

F64 = torch.float64
CFG = dict(input_size=3, hidden_size=5, num_layers=2, bidirectional=True, batch_first=True)
B, T = 6, 7


def config(cell):
    return dict(CFG, proj_size=2) if cell.has_proj else dict(CFG)


def batch(cell, seed=11):
    """The whole batch (batch-first) and its regression target."""
    gen = torch.Generator().manual_seed(seed)
    cfg = config(cell)
    out = 2 * (cfg.get("proj_size") or cfg["hidden_size"])
    return (torch.randn(B, T, cfg["input_size"], dtype=F64, generator=gen),
            torch.randn(B, T, out, dtype=F64, generator=gen))


def model(cell):
    torch.manual_seed(0)
    return cell.ours(**cell.extra, **config(cell), dtype=F64)


def loss_fn(module, x, target):
    y, _ = module(x)
    return ((y - target) ** 2).mean()  # mean over equal shards = mean over the batch


def worker(rank, world, port, out_dir, cell_names):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    from _cells import CELLS  # after the env is set; the children import fused_rnn here
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=60))
    for cell in CELLS:
        if cell.name not in cell_names:
            continue
        module = model(cell)
        ddp = DistributedDataParallel(module)
        x, target = batch(cell)
        rows = slice(rank * B // world, (rank + 1) * B // world)
        loss_fn(ddp, x[rows], target[rows]).backward()
        grads = {n: p.grad.clone() for n, p in module.named_parameters()}
        # Every rank must hold the same averaged gradients after the step.
        for g in grads.values():
            other = [torch.empty_like(g) for _ in range(world)]
            dist.all_gather(other, g)
            assert all(torch.equal(o, g) for o in other), "ranks disagree"
        with torch.no_grad():
            for p in module.parameters():
                p -= 0.1 * p.grad
        if rank == 0:
            torch.save({"grads": grads, "params": dict(module.named_parameters())},
                       os.path.join(out_dir, f"{cell.name}.pt"))
        del ddp  # its reducer holds the process group and pending gloo work
    # No rank tears down while the other is still inside a collective.
    dist.barrier()
    dist.destroy_process_group()
    gc.collect()
    # Skip interpreter finalization: torch's gloo worker threads can still own work objects
    # then, and destroying them without a live interpreter aborts the process (SIGABRT,
    # "terminate called without an active exception"; seen once in CI, see pytorch/pytorch
    # PR 179291). Everything this rank had to do is done and written by now; an error above
    # still raises normally and torch.multiprocessing reports its traceback.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
