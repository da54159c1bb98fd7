"""A/B of fused_rnn's environment switches (FUSED_RNN_TEAM, FUSED_RNN_PACKED_GEMM, ...) in
one process, interleaved with torch.nn: each round times torch.nn and every variant in a
shuffled order (an untimed call, then 5 timed calls each), and the reported ratio is the
median over rounds of the in-round ratio torch / variant, which cancels the slow drifts of
a shared VM (benchmarks/NOTES.md, sessions 12 and 13). A variant is a comma-separated list
of VAR=value, or `auto` (none set).

    python benchmarks/ab_env_cpu.py LSTM infer auto FUSED_RNN_TEAM=units \\
        FUSED_RNN_TEAM=one,FUSED_RNN_PACKED_GEMM=mkl -- 100x4x256 200x4x128

Shapes are TxBxH (input size = H). NT sets the thread count (default 2), REPS the rounds,
VARLEN=1 feeds PackedSequences of random lengths, DTYPE=bfloat16 runs both in bfloat16, COLD=1 times each call right after one of
the other library (torch.nn's after one of ours), as a call made between other work runs.
"""
import os
import random
import statistics
import sys
import time

import torch

import fused_rnn


def parse_variant(spec):
    return {} if spec == "auto" else dict(kv.split("=", 1) for kv in spec.split(","))


def compare(cell, train, variants, T, B, H, rounds, varlen=False, cold=False):
    torch.manual_seed(0)
    dtype = getattr(torch, os.environ.get("DTYPE", "float32"))
    ref = getattr(torch.nn, cell)(H, H).to(dtype)
    ours = getattr(fused_rnn, cell)(H, H).to(dtype)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, H, dtype=dtype, requires_grad=train)
    if varlen:  # as the bench's varlen suite: lengths uniform in [T / 4, T], one of T
        lengths = torch.randint(max(1, T // 4), T + 1, (B,))
        lengths[0] = T
        x = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    switches = {k for spec in variants for k in parse_variant(spec)}

    def run(module, env):
        def call():
            for k in switches:
                os.environ.pop(k, None)
            os.environ.update(env)
            if train:
                module.zero_grad(set_to_none=True)
                module(x)[0].sum().backward()
            else:
                with torch.no_grad():
                    module(x)
        return call

    calls = {"torch": run(ref, {})}
    calls.update({spec: run(ours, parse_variant(spec)) for spec in variants})
    times = {k: [] for k in calls}
    for call in calls.values():  # warm-up
        call()
        call()
    order = list(calls)
    rng = random.Random(0)
    for _ in range(rounds):
        # A fixed order favoured the later variants: the first call after another
        # implementation runs on cold caches (for a one-step call, up to 1.5x slower), so
        # each block starts with an untimed call of its own, in an order shuffled per round.
        rng.shuffle(order)
        for name in order:
            call = calls[name]
            if cold:  # as a call between other work runs: right after the other library's
                other = calls["torch" if name != "torch" else
                              next(k for k in order if k != "torch")]
                elapsed = 0.0
                for _ in range(5):
                    other()
                    t0 = time.perf_counter()
                    call()
                    elapsed += time.perf_counter() - t0
                times[name].append(elapsed / 5)
                continue
            call()
            t0 = time.perf_counter()
            for _ in range(5):
                call()
            times[name].append((time.perf_counter() - t0) / 5)
    torch_ms = statistics.median(times["torch"]) * 1e3
    parts = []
    for spec in variants:
        ratio = statistics.median(a / b for a, b in zip(times["torch"], times[spec]))
        best = min(times["torch"]) / min(times[spec])
        parts.append(f"{spec} {statistics.median(times[spec]) * 1e3:.3f} ms "
                     f"({ratio:.2f}x, min {best:.2f}x)")
    mode = "train" if train else "infer"
    mode += " varlen" if varlen else ""
    print(f"{cell} {mode} T={T} B={B} H={H}: torch {torch_ms:.3f} ms | " + " | ".join(parts),
          flush=True)


def main():
    args = sys.argv[1:]
    if len(args) < 4 or "--" not in args:
        sys.exit(__doc__)
    sep = args.index("--")
    cell, mode, variants = args[0], args[1], args[2:sep]
    torch.set_num_threads(int(os.environ.get("NT", "2")))
    rounds = int(os.environ.get("REPS", "15"))
    for shape in args[sep + 1:]:
        T, B, H = (int(v) for v in shape.split("x"))
        compare(cell, mode == "train", variants, T, B, H, rounds, os.environ.get("VARLEN") == "1",
                os.environ.get("COLD") == "1")


if __name__ == "__main__":
    main()
