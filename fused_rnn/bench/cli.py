"""Command line of fused-rnn-bench: parse options, build the cases, run, report."""
import argparse
import os
import shlex
import sys

import torch

from . import report, timing
from .cases import CELLS, Case, fused_class
from .environment import environment
from .progress import Progress
from .runner import autocast_dtype, run_case
from .suites import DESCRIPTIONS, SUITES, suite_cases

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
           "float16": torch.float16}
_SHAPE_OPTS = ("seq_len", "batch", "input_size", "hidden_size")


def parser():
    p = argparse.ArgumentParser(
        prog="fused-rnn-bench",
        description="Time fused_rnn against torch.nn (cuDNN on CUDA, ATen/oneDNN on CPU) for "
                    "LSTM/GRU/RNN in inference (forward under no_grad) and training (forward + "
                    "backward). Each case is first checked for agreement, then timed with "
                    "interleaved repeats. Without --suite or shape options, runs the quick suite.",
        epilog="suites:\n" + "\n".join(f"  {k:9} {v}" for k, v in DESCRIPTIONS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=SUITES, help="a named set of cases")
    p.add_argument("--cell", action="append", choices=CELLS,
                   help="cell(s) to run, repeatable (default: lstm and gru)")
    p.add_argument("--device", choices=("cpu", "cuda"),
                   help="default: cuda if available, else cpu")
    p.add_argument("--dtype", choices=tuple(_DTYPES), default="float32")
    p.add_argument("--mode", choices=("inference", "training", "both"),
                   help="default: the suite's own (both for custom cases)")
    p.add_argument("--seq-len", type=int, help="T of a custom case (default 100)")
    p.add_argument("--batch", type=int, help="B of a custom case (default 16)")
    p.add_argument("--input-size", type=int, help="I of a custom case (default: hidden size)")
    p.add_argument("--hidden-size", type=int, help="H of a custom case (default 256)")
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--bidirectional", action="store_true")
    p.add_argument("--proj-size", type=int, default=0, help="LSTM projection size")
    p.add_argument("--state", action="store_true",
                   help="pass a random initial state, as a caller that carries h_n into its "
                   "next call does (the streaming suite always does)")
    p.add_argument("--varlen", action="store_true",
                   help="custom case as a PackedSequence of random lengths in [T/4, T]")
    p.add_argument("--step-cell", action="store_true",
                   help="custom case through the cell modules (LSTMCell, GRUCell, RNNCell): one "
                   "step per call, T = 1 (the cells suite always does)")
    p.add_argument("--repeats", type=int, help="timed runs of each (default: 7 CPU, 20 CUDA)")
    p.add_argument("--warmup", "--warm-up", type=int,
                   help="untimed runs of each first (default: 2 CPU, 5 CUDA)")
    p.add_argument("--tf32", choices=("off", "on"), default="off",
                   help="CUDA float32: TF32 in both implementations' GEMMs or in neither "
                        "(torch.backends.cudnn.allow_tf32 and cuda.matmul.allow_tf32; default "
                        "off, since cuDNN's default is on and ours follows matmul's, off)")
    p.add_argument("--autocast", action="store_true",
                   help="run both implementations' forward under torch.autocast(device) (its "
                        "default dtype: bfloat16 on CPU, float16 on CUDA), the modules and "
                        "input staying in --dtype (float32); the backward runs outside it")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="write results and environment as JSON")
    p.add_argument("--csv", metavar="FILE", help="write results as CSV")
    p.add_argument("--plot", metavar="FILE", help="write a PNG of the speedups (matplotlib)")
    p.add_argument("--markdown", metavar="FILE", help="write the Markdown table")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def build_cases(args, gpu):
    try:
        return _cases(args, gpu)
    except ValueError as e:  # a combination no case can be (Case's own check)
        raise SystemExit(f"fused-rnn-bench: {e}") from None


def _cases(args, gpu):
    cells = args.cell or ["lstm", "gru"]
    modes = None if args.mode in (None, "both") else (args.mode,)
    custom = (any(getattr(args, k) is not None for k in _SHAPE_OPTS) or args.varlen
              or args.step_cell)
    if args.suite and custom:
        raise SystemExit("fused-rnn-bench: --seq-len/--batch/--input-size/--hidden-size/--varlen/"
                         "--step-cell define a custom case; do not combine them with --suite")
    if args.suite or not custom:
        cases = suite_cases(args.suite or "quick", cells, modes if args.mode != "both" else
                            ("inference", "training"), gpu)
        extra = {}
        if args.layers != 1:
            extra["layers"] = args.layers
        if args.bidirectional:
            extra["bidirectional"] = True
        if args.proj_size:
            extra["proj_size"] = args.proj_size
        if args.state:
            extra["state"] = True
        return [c.with_(**extra) for c in cases]
    H = args.hidden_size or 256
    T = args.seq_len or (1 if args.step_cell else 100)
    return [Case(cell=cell, mode=mode, seq_len=T, batch=args.batch or 16,
                 input_size=args.input_size or H, hidden_size=H, layers=args.layers,
                 bidirectional=args.bidirectional, proj_size=args.proj_size, varlen=args.varlen,
                 state=args.state, step_cell=args.step_cell)
            for cell in cells for mode in (modes or ("inference", "training"))]


def _validate(args):
    for k in ("seq_len", "batch", "input_size", "hidden_size", "layers", "repeats", "threads"):
        v = getattr(args, k)
        if v is not None and v < 1:
            raise SystemExit(f"fused-rnn-bench: --{k.replace('_', '-')} must be >= 1, got {v}")
    if args.proj_size < 0 or args.warmup is not None and args.warmup < 0:
        raise SystemExit("fused-rnn-bench: --proj-size and --warmup must be >= 0")
    if args.autocast and args.dtype != "float32":
        raise SystemExit(f"fused-rnn-bench: --autocast runs float32 modules under autocast; "
                         f"got --dtype {args.dtype}")
    # Output folders and the plot's matplotlib are checked before minutes of timing, not after.
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise SystemExit("fused-rnn-bench: --plot needs matplotlib: "
                             "pip install matplotlib (or fused_rnn[plot])")
    for k in ("json", "csv", "markdown", "plot"):
        path = getattr(args, k)
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if folder and not os.path.isdir(folder):
            raise SystemExit(f"fused-rnn-bench: --{k} {path}: folder {folder} does not exist")


def _line(r):
    if r["status"] == "ok":
        return (f"{r['name']}: max |diff| {r['max_abs_diff']:.1e} ok (from float64: torch "
                f"{r['torch_error']:.1e}, fused {r['fused_error']:.1e}); torch "
                f"{r['torch_median_ms']:.2f} ms, fused {r['fused_median_ms']:.2f} ms, "
                f"{r['speedup']:.2f}x")
    diff = f" (max |diff| {r['max_abs_diff']:.1e})" if "max_abs_diff" in r else ""
    return f"{r['name']}: {r['status'].upper()}{diff}: {r['note']}"


def main(argv=None):
    args = parser().parse_args(argv)
    _validate(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("fused-rnn-bench: --device cuda but torch sees no CUDA device")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu = device.type == "cuda"
    dtype = _DTYPES[args.dtype]
    if args.threads:
        torch.set_num_threads(args.threads)
    # torch.nn on cuDNN follows cudnn.allow_tf32 (default on), our GEMMs matmul.allow_tf32
    # (default off): set both alike so that the two run the same float32 arithmetic.
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = args.tf32 == "on"
    repeats = args.repeats or (20 if gpu else 7)
    warmup = args.warmup if args.warmup is not None else (5 if gpu else 2)
    cases = build_cases(args, gpu)
    for cell, step_cell in sorted({(c.cell, c.step_cell) for c in cases}):
        if fused_class(cell, step_cell) is None:
            kind = f"{cell} cell" if step_cell else cell
            print(f"note: fused_rnn has no module for {kind} in this build; its cases are skipped")

    # Under autocast either implementation may run its products in the autocast dtype or in
    # float32 (ours do on the CPU): the faster of the two GEMMs is the device's ceiling.
    peak_dtypes = [dtype] + ([autocast_dtype(device)] if args.autocast else [])
    peaks = {str(d).replace("torch.", ""): timing.gemm_peak_gflops(device, d)
             for d in peak_dtypes}
    peak_name, peak = max(peaks.items(), key=lambda kv: kv[1])
    env = environment(device, dtype, peak)
    env["tf32"] = args.tf32 if gpu and dtype == torch.float32 and not args.autocast else "n/a"
    env["autocast"] = str(autocast_dtype(device)).replace("torch.", "") if args.autocast else "off"
    env["gemm_peaks_gflops"] = peaks
    print(f"{env['device_model']} ({device}, {env['threads']} threads): measured GEMM peak "
          + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()) + f" GFLOP/s (used: {peak_name})",
          flush=True)
    progress = Progress(len(cases), enabled=not args.no_progress)
    results = []
    for case in cases:
        try:
            r = run_case(case, device, dtype, repeats, warmup, peak, seed=args.seed,
                         autocast=args.autocast)
        except Exception as err:  # one broken case must not lose the others' results
            r = dict(case.as_dict(), name=case.name, device=str(device), dtype=args.dtype,
                     status="error", note=f"{type(err).__name__}: {err}")
        results.append(r)
        progress.clear()
        print(_line(r), flush=True)
        progress.step(case.name)

    table = report.markdown(results, env)
    print()
    print(table)
    command = "fused-rnn-bench " + " ".join(shlex.quote(a) for a in (
        sys.argv[1:] if argv is None else argv))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(f"Command: `{command}`\n\n" + table)
    if args.json:
        report.write_json(args.json, results, env, command)
    if args.csv:
        report.write_csv(args.csv, results, env)
    if args.plot:
        from .plot import write_png
        write_png(args.plot, results, env)
    bad = [r for r in results if r["status"] in ("mismatch", "error")]
    return 1 if bad else 0
