"""Where the GPU time of one benchmark case goes: torch.profiler's kernel table for torch.nn
and fused_rnn, padded and (with --varlen) packed, plus the wall time of each (CUDA events).

    python benchmarks/profile_cuda.py --cell lstm --seq-len 200 --batch 256 --hidden-size 1024 \
        --mode training --varlen [--dtype float16] [--rows 12]
"""
import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from fused_rnn.bench import timing
from fused_rnn.bench.cases import Case, make_input, make_modules, output_tensor, with_grad


def _step(module, inp, grad_out):
    if grad_out is None:
        with torch.no_grad():
            module(inp)
        return
    inp = with_grad(inp)
    module.zero_grad(set_to_none=True)
    torch.autograd.backward(output_tensor(module(inp)), grad_out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cell", default="lstm")
    p.add_argument("--mode", default="training", choices=("inference", "training"))
    p.add_argument("--seq-len", type=int, default=100)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--input-size", type=int)
    p.add_argument("--hidden-size", type=int, default=512)
    p.add_argument("--proj-size", type=int, default=0)
    p.add_argument("--varlen", action="store_true")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--rows", type=int, default=12, help="kernel rows printed per table")
    a = p.parse_args()
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    dtype = getattr(torch, a.dtype)
    dev = torch.device("cuda")
    case = Case(cell=a.cell, mode=a.mode, seq_len=a.seq_len, batch=a.batch,
                input_size=a.input_size or a.hidden_size, hidden_size=a.hidden_size,
                proj_size=a.proj_size, varlen=a.varlen)
    ref, ours = make_modules(case, dev, dtype)
    inp = make_input(case, dev, dtype)[0]
    runs = [("torch.nn", ref, inp), ("fused_rnn", ours, inp)]
    if a.varlen:
        runs.append(("fused_rnn padded", ours, make_input(case.with_(varlen=False), dev, dtype)[0]))
    summary = []
    for label, mod, inp in runs:
        grad_out = None
        if a.mode == "training":
            with torch.no_grad():
                grad_out = torch.randn_like(output_tensor(mod(inp)))
        fn = lambda: _step(mod, inp, grad_out)  # noqa: E731
        ms = timing.summary(timing.interleaved([fn], dev, repeats=10, warmup=3)[0])["median_ms"]
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        print(f"\n=== {label} {case.name} {a.dtype}: {ms:.3f} ms")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=a.rows,
                                        max_name_column_width=60))
        summary.append((label, ms))
    print("\n" + "\n".join(f"{label:18} {ms:8.3f} ms" for label, ms in summary))


if __name__ == "__main__":
    main()
