"""fused-rnn-bench: fused_rnn against torch.nn (cuDNN on CUDA, ATen/oneDNN on CPU).

Run `fused-rnn-bench --help` or `python -m fused_rnn.bench --help`. Modules:
cases (what is measured), suites (named sets of cases), flops, timing, runner (one case:
parity check, then interleaved timing), environment, report (table/JSON/CSV), plot, cli.
"""
from .cli import main

__all__ = ["main"]
