"""A small CUDA workload for compute-sanitizer (memcheck, racecheck, synccheck): forward
and backward of every fused op path at sizes that hit both pointwise variants (vector and
scalar), projection, reverse, packed rows and each dtype. Exits non-zero on a wrong result
so that a sanitizer run also checks the numbers.
"""
import sys

import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fused_rnn


def check(kind, cfg, dtype, packed, T=5, B=3):
    torch.manual_seed(0)
    ref = getattr(torch.nn, kind)(**cfg).double()
    ours = getattr(fused_rnn, kind)(**cfg)
    ours.load_state_dict(ref.state_dict())
    ours = ours.to("cuda", dtype)
    x = torch.randn(T, B, cfg["input_size"], dtype=torch.float64).to(dtype).double()
    lengths = torch.tensor([T, 2, 4][:B])
    outs = []
    for mod, dev, dt in ((ours, "cuda", dtype), (ref, "cpu", torch.float64)):
        xi = x.to(dev, dt).requires_grad_()
        inp = pack_padded_sequence(xi, lengths, enforce_sorted=False) if packed else xi
        y, final = mod(inp)
        finals = list(final) if isinstance(final, tuple) else [final]
        y = y.data if packed else y
        sum(t.double().square().sum() for t in [y] + finals).backward()
        outs.append([y, *finals, xi.grad] + [p.grad for p in mod.parameters()])
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    for a, b in zip(*outs):
        a, b = a.detach().double().cpu(), b.detach().double().cpu()
        err = (a - b).abs().max().item()
        if err > tol * max(b.abs().max().item(), 1e-6):
            print(f"MISMATCH {kind} {cfg} {dtype} packed={packed}: {err}", file=sys.stderr)
            return False
    return True


def main():
    torch.backends.cuda.matmul.allow_tf32 = False
    ok = True
    cases = [("LSTM", dict(input_size=3, hidden_size=5, bidirectional=True)),
             ("LSTM", dict(input_size=4, hidden_size=16, proj_size=3, bidirectional=True)),
             ("LSTM", dict(input_size=4, hidden_size=8, num_layers=2, bias=False)),
             ("GRU", dict(input_size=3, hidden_size=5, bidirectional=True)),
             ("GRU", dict(input_size=4, hidden_size=16, num_layers=2)),
             ("RNN", dict(input_size=3, hidden_size=5, bidirectional=True)),
             ("RNN", dict(input_size=4, hidden_size=16, nonlinearity="relu"))]
    for dtype in (torch.float32, torch.float16):
        for kind, cfg in cases:
            if not hasattr(fused_rnn, kind):
                continue
            for packed in (False, True):
                # Progress on stderr: a sanitizer failure then shows which case it hit.
                print(f"case {kind} {cfg} {dtype} packed={packed}", file=sys.stderr, flush=True)
                ok &= check(kind, cfg, dtype, packed)
    torch.cuda.synchronize()
    print("sanitize case:", "ok" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
