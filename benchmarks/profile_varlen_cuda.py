"""Where a packed (varlen) batch's time goes on CUDA, against the same batch padded:
torch.profiler's kernel table for fused_rnn on both inputs, and CUDA-event timings of
fused_rnn and torch.nn. A diagnostic for benchmarks/NOTES.md, not a benchmark.

    python benchmarks/profile_varlen_cuda.py [GRU|LSTM] [T B H]
"""
import sys

import torch
from torch.profiler import ProfilerActivity, profile

import fused_rnn
from fused_rnn.bench.cases import Case, lengths_for

cell = sys.argv[1] if len(sys.argv) > 1 else "GRU"
T, B, H = (int(v) for v in sys.argv[2:5]) if len(sys.argv) > 4 else (100, 64, 512)
torch.manual_seed(0)
ref = getattr(torch.nn, cell)(H, H).cuda()
ours = getattr(fused_rnn, cell)(H, H).cuda()
ours.load_state_dict(ref.state_dict())
x = torch.randn(T, B, H, device="cuda")
lengths = lengths_for(Case(cell=cell.lower(), mode="inference", seq_len=T, batch=B, input_size=H, hidden_size=H,
                           varlen=True))
packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
print(f"{cell} T={T} B={B} H={H}: running rows {int(lengths.sum())} of {T * B}")


def event_ms(fn, reps=20):
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[reps // 2]


with torch.no_grad():
    for name, module in (("torch.nn", ref), ("fused_rnn", ours)):
        print(f"{name}: padded {event_ms(lambda: module(x)):.3f} ms, "
              f"packed {event_ms(lambda: module(packed)):.3f} ms")
    for label, inp in (("padded", x), ("packed", packed)):
        for _ in range(3):
            ours(inp)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                ours(inp)
            torch.cuda.synchronize()
        print(f"\n== fused_rnn, {label} input, 5 calls")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14,
                                        max_name_column_width=60))
