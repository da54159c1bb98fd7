"""Quick interleaved A/B of one cell against torch.nn on the CPU: inference (no_grad forward)
and training (forward + backward), ours and torch's alternately, median and min of N rounds.
What benchmarks/NOTES.md's per-change measurements used (the CLI's suites are for results).

    python benchmarks/ab_cells_cpu.py --cell GRU --shape 100,16,256 --threads 2 --rounds 15
"""
import argparse
import statistics
import time

import torch

import fused_rnn


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cell", default="LSTM", choices=["LSTM", "GRU", "RNN"])
    p.add_argument("--shape", action="append", required=True, help="T,B,H (I = H); repeatable")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for shape in args.shape:
        T, B, H = (int(v) for v in shape.split(","))
        torch.manual_seed(0)
        ref = getattr(torch.nn, args.cell)(H, H)
        ours = getattr(fused_rnn, args.cell)(H, H)
        ours.load_state_dict(ref.state_dict())
        x = torch.randn(T, B, H)
        xg = x.clone().requires_grad_(True)
        gy = torch.randn(T, B, H)

        def infer(m):
            def f():
                with torch.no_grad():
                    m(x)
            return f

        def train(m):
            def f():
                m.zero_grad()
                xg.grad = None
                torch.autograd.backward(m(xg)[0], gy)
            return f

        for mode, make in (("infer", infer), ("train", train)):
            fo, ft = make(ours), make(ref)
            for _ in range(3):
                fo(), ft()
            to, tt = [], []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                fo()
                t1 = time.perf_counter()
                ft()
                t2 = time.perf_counter()
                to.append(t1 - t0)
                tt.append(t2 - t1)
            mo, mt = statistics.median(to) * 1e3, statistics.median(tt) * 1e3
            print(f"{args.cell} {mode} T={T} B={B} H={H} threads={args.threads}: "
                  f"fused {mo:.2f} ms (min {min(to) * 1e3:.2f}), torch {mt:.2f} ms "
                  f"(min {min(tt) * 1e3:.2f}), speedup {mt / mo:.2f}x")


if __name__ == "__main__":
    main()
