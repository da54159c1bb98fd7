"""A/B of the CPU LSTM kernels in one process, interleaved: torch.nn.LSTM, fused_rnn.LSTM
with packed recurrent weights, and fused_rnn.LSTM on plain sgemm (FUSED_RNN_PACKED_GEMM=0),
plus the GEMMs alone (input projection, and the T per-step GEMMs driven from Python), so
the pointwise and per-step overhead can be read off as the remainder.

    python benchmarks/ab_lstm_cpu.py --shape 100,16,256 --shape 200,4,128 --threads 2
"""
import argparse
import os
import statistics

import torch

import fused_rnn
from fused_rnn.bench import timing


def variants(T, B, H, train):
    torch.manual_seed(0)
    ref = torch.nn.LSTM(H, H)
    ours = fused_rnn.LSTM(H, H)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, H, requires_grad=train)
    gy = torch.randn(T, B, H)

    def run(m):
        def fn():
            if train:
                m.zero_grad(set_to_none=True)
                torch.autograd.backward(m(x)[0], gy)
            else:
                with torch.no_grad():
                    m(x)
        return fn

    def packed(on, fn):
        def g():
            os.environ["FUSED_RNN_PACKED_GEMM"] = "1" if on else "0"
            fn()
        return g

    w_ih, w_hh = ref.weight_ih_l0.detach(), ref.weight_hh_l0.detach()
    gates = torch.empty(T, B, 4 * H)
    h = torch.randn(B, H)

    def proj():
        torch.mm(x.detach().view(T * B, H), w_ih.t(), out=gates.view(T * B, 4 * H))

    def steps():
        for t in range(T):
            gates[t].addmm_(h, w_hh.t())

    return {"torch": run(ref), "fused packed": packed(True, run(ours)),
            "fused plain": packed(False, run(ours)), "gemm: x W_ih^T": proj,
            "gemm: T x (h W_hh^T)": steps}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shape", action="append", default=[], help="T,B,H")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--train", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"threads {a.threads}, {'training' if a.train else 'inference'}, median ms "
          f"(GFLOP/s of the recurrent model's GEMMs)")
    for s in a.shape or ["100,16,256"]:
        T, B, H = map(int, s.split(","))
        v = variants(T, B, H, a.train)
        times = timing.interleaved(list(v.values()), torch.device("cpu"), a.repeats, 2)
        flops = 2 * T * B * 4 * H * 2 * H * (3 if a.train else 1)
        print(f"T={T} B={B} H={H}:")
        for name, ts in zip(v, times):
            ms, lo = statistics.median(ts) * 1e3, min(ts) * 1e3
            extra = f" ({flops / ms / 1e6:.0f} GFLOP/s)" if not name.startswith("gemm") else ""
            print(f"  {name:22} {ms:8.2f} ms (min {lo:7.2f}){extra}")
    os.environ.pop("FUSED_RNN_PACKED_GEMM", None)


if __name__ == "__main__":
    main()
