"""fused-rnn-bench: FLOP counts, suites, and the CLI end to end on tiny cases."""
import csv
import json

import sys

import pytest
import torch

import fused_rnn
from fused_rnn.bench import cli, flops, report, runner, suites, timing
from fused_rnn.bench.cases import (Case, flat_outputs, fused_class, make_input, make_modules,
                                   make_state)


@pytest.fixture(autouse=True)
def fast_peak(monkeypatch):
    # The real peak GEMM is 17 GFLOP on the CPU: not what these tests are about.
    monkeypatch.setattr(timing, "gemm_peak_gflops", lambda device, dtype: 100.0)


def test_flops_single_layer_lstm_and_gru():
    c = Case("lstm", "inference", seq_len=10, batch=3, input_size=5, hidden_size=7)
    assert flops.forward_flops_per_token(c) == 2 * 28 * (5 + 7)
    assert flops.case_flops(c, 30) == 30 * 2 * 28 * 12
    assert flops.case_flops(c.with_(mode="training"), 30) == 3 * 30 * 2 * 28 * 12
    g = c.with_(cell="gru")
    assert flops.forward_flops_per_token(g) == 2 * 21 * 12


def test_flops_deep_bidirectional_projected():
    c = Case("lstm", "inference", 1, 1, input_size=5, hidden_size=8, layers=2,
             bidirectional=True, proj_size=3)
    layer0 = 2 * (2 * 32 * (5 + 3) + 2 * 8 * 3)
    layer1 = 2 * (2 * 32 * (6 + 3) + 2 * 8 * 3)
    assert flops.forward_flops_per_token(c) == layer0 + layer1


def test_training_suite_has_deepbench_shapes_and_scales_on_cpu():
    gpu = suites.suite_cases("training", ["lstm", "gru"], None, gpu=True)
    lstm = {(c.seq_len, c.batch, c.hidden_size) for c in gpu if c.cell == "lstm"}
    assert (25, 128, 4096) in lstm and (50, 8, 1536) in lstm and (150, 64, 256) in lstm
    assert len(lstm) == 16 + 3 + 3
    assert {c.hidden_size for c in gpu if c.cell == "gru"} == {1536, 2048, 2560}
    assert all(c.mode == "training" for c in gpu)
    cpu = suites.suite_cases("training", ["lstm"], None, gpu=False)
    assert max(c.hidden_size for c in cpu) == 1024


def test_fastrnns_and_latency_suites():
    (c,) = suites.suite_cases("fastrnns", ["lstm"], ("inference",), gpu=False)
    assert (c.seq_len, c.batch, c.input_size, c.hidden_size) == (100, 64, 512, 512)
    lat = suites.suite_cases("latency", ["lstm"], None, gpu=False)
    assert sorted(c.batch for c in lat) == [1, 2, 4, 8, 16]


def test_streaming_suite():
    for gpu in (False, True):
        cases = suites.suite_cases("streaming", ["lstm", "gru"], None, gpu=gpu)
        assert {c.seq_len for c in cases} == {1}
        assert {c.mode for c in cases} == {"inference", "training"}
        assert {c.cell for c in cases} == {"lstm", "gru"}
        assert min(c.batch for c in cases) == 1
        assert all(c.state and c.name.endswith(" state") for c in cases)  # carried in
    assert not any(c.state for c in suites.suite_cases("quick", ["gru"], None, gpu=False))


def test_cells_suite_runs_the_cell_modules():
    cases = suites.suite_cases("cells", ["lstm", "gru"], None, gpu=False)
    streaming = suites.suite_cases("streaming", ["lstm", "gru"], None, gpu=False)
    assert [(c.cell, c.mode, c.batch, c.hidden_size) for c in cases] == [
        (c.cell, c.mode, c.batch, c.hidden_size) for c in streaming]
    assert all(c.step_cell and c.state and c.name.endswith(" state cell") for c in cases)
    with pytest.raises(ValueError, match="step_cell"):
        Case("gru", "inference", 2, 1, 4, 5, step_cell=True)


def test_cli_step_cell_custom_case_and_bad_combinations(tmp_path, capsys):
    j = tmp_path / "r.json"
    rc = cli.main(["--cell", "rnn_tanh", "--step-cell", "--batch", "3", "--hidden-size", "8",
                   "--state", "--repeats", "1", "--warmup", "0", "--device", "cpu",
                   "--json", str(j)])
    assert rc == 0
    results = json.loads(j.read_text())["results"]
    assert [(r["step_cell"], r["seq_len"], r["status"]) for r in results] == [
        (True, 1, "ok"), (True, 1, "ok")]
    for argv in (["--suite", "cells", "--layers", "2"], ["--step-cell", "--seq-len", "5"],
                 ["--suite", "cells", "--proj-size", "3"]):
        with pytest.raises(SystemExit, match="fused-rnn-bench: .*step_cell"):
            cli.main(argv + ["--device", "cpu"])


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("mode", ["inference", "training"])
def test_step_cell_case_times_the_cells(cell, mode, monkeypatch):
    """A step_cell case compares torch.nn's cell with ours on [B, I] input and [B, H]
    states; a cell that ignores its state fails the parity check."""
    case = Case(cell, mode, 1, 3, 4, 5, state=True, step_cell=True)
    hx = make_state(case, torch.device("cpu"), torch.float32)
    states = hx if isinstance(hx, tuple) else (hx,)
    assert [tuple(s.shape) for s in states] == [(3, 5)] * (2 if cell == "lstm" else 1)
    r = runner.run_case(case, torch.device("cpu"), torch.float32, 1, 0, 100.0)
    assert r["status"] == "ok" and r["step_cell"] is True and r["tokens"] == 3, r
    ref, _ = make_modules(case, torch.device("cpu"), torch.float32)
    x, _ = make_input(case, torch.device("cpu"), torch.float32)
    got = flat_outputs(ref(x, hx))  # a cell's new states: [h] or [h, c]
    assert [tuple(t.shape) for t in got] == [(3, 5)] * (2 if cell == "lstm" else 1)
    ours = fused_class(cell, step_cell=True)
    assert ours.__name__.endswith("Cell")
    original = ours.forward
    monkeypatch.setattr(ours, "forward", lambda self, input, hx=None: original(self, input))
    r = runner.run_case(case, torch.device("cpu"), torch.float32, 1, 0, 100.0)
    assert r["status"] == "mismatch"


@pytest.mark.parametrize("cell,mode,extra", [
    ("lstm", "training", dict(proj_size=3, layers=2, bidirectional=True)),
    ("gru", "inference", {}), ("rnn_tanh", "training", dict(layers=2))])
def test_case_with_state_passes_it_to_both(cell, mode, extra, monkeypatch):
    """A state case hands both modules the same non-zero initial state: a parity check
    that fails when either one ignores it."""
    case = Case(cell, mode, 3, 2, 4, 5, state=True, **extra)
    hx = make_state(case, torch.device("cpu"), torch.float32)
    states = hx if isinstance(hx, tuple) else (hx,)
    n = 2 * extra.get("layers", 1) if extra.get("bidirectional") else extra.get("layers", 1)
    assert [tuple(s.shape) for s in states] == (
        [(n, 2, 3), (n, 2, 5)] if cell == "lstm" else [(n, 2, 5)])
    assert all(not s.requires_grad and s.abs().min() > 0 for s in states)
    r = runner.run_case(case, torch.device("cpu"), torch.float32, 1, 0, 100.0)
    assert r["status"] == "ok" and r["state"] is True

    seen = []
    original = fused_class(cell).forward

    def ignores_state(self, input, hx=None):
        seen.append(hx is not None)
        return original(self, input, None)
    monkeypatch.setattr(fused_class(cell), "forward", ignores_state)
    r = runner.run_case(case, torch.device("cpu"), torch.float32, 1, 0, 100.0)
    assert r["status"] == "mismatch" and all(seen)


def test_cli_custom_case_writes_json_csv_markdown(tmp_path, capsys):
    j, c, m = tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "r.md"
    rc = cli.main(["--cell", "lstm", "--seq-len", "6", "--batch", "3", "--hidden-size", "8",
                   "--input-size", "5", "--repeats", "2", "--warmup", "1", "--device", "cpu",
                   "--json", str(j), "--csv", str(c), "--markdown", str(m)])
    assert rc == 0
    data = json.loads(j.read_text())
    env = data["environment"]
    for key in ("torch_version", "cpu_model", "threads", "fused_rnn_version",
                "fused_rnn_commit", "gemm_peak_gflops"):
        assert key in env
    assert [r["mode"] for r in data["results"]] == ["inference", "training"]
    for r in data["results"]:
        assert r["status"] == "ok"
        assert r["max_abs_diff"] < 1e-4
        assert r["torch_min_ms"] <= r["torch_median_ms"] <= r["torch_max_ms"]
        assert r["speedup"] == pytest.approx(r["torch_median_ms"] / r["fused_median_ms"])
        assert r["tokens"] == 18
        assert r["fused_peak_fraction"] == pytest.approx(r["fused_gflops"] / 100.0)
    rows = list(csv.DictReader(c.open()))
    assert len(rows) == 2 and rows[0]["env_torch_version"] == torch.__version__
    assert "| lstm infer T=6 B=3 I=5 H=8 |" in m.read_text()
    out = capsys.readouterr().out
    assert "max abs diff" in out and "speedup" in out


def test_varlen_case_counts_real_tokens():
    case = Case("lstm", "training", seq_len=8, batch=4, input_size=3, hidden_size=4,
                varlen=True)
    r = runner.run_case(case, torch.device("cpu"), torch.float64, 1, 0, 100.0)
    assert r["status"] == "ok", r
    assert r["max_abs_diff"] < 1e-10
    assert 4 * 2 <= r["tokens"] < 32


def test_mismatch_is_reported_not_timed(monkeypatch):
    class Broken(fused_rnn.LSTM):
        def forward(self, input, hx=None):
            out, states = super().forward(input, hx)
            return out + 1e-2, states

    monkeypatch.setattr(fused_rnn, "LSTM", Broken)
    rc = cli.main(["--cell", "lstm", "--seq-len", "4", "--batch", "2", "--hidden-size", "4",
                   "--mode", "inference", "--repeats", "1", "--device", "cpu"])
    assert rc == 1
    r = runner.run_case(Case("lstm", "inference", 4, 2, 4, 4), torch.device("cpu"),
                        torch.float32, 1, 0, 100.0)
    assert r["status"] == "mismatch" and "torch_median_ms" not in r
    assert r["max_abs_diff"] == pytest.approx(1e-2, rel=1e-3)


def test_missing_cell_is_skipped_with_a_note(monkeypatch):
    monkeypatch.delattr(fused_rnn, "GRU", raising=False)
    r = runner.run_case(Case("gru", "inference", 4, 2, 4, 4), torch.device("cpu"),
                        torch.float32, 1, 0, 100.0)
    assert r["status"] == "skipped" and "gru" in r["note"]


def test_suite_and_shape_options_conflict():
    with pytest.raises(SystemExit):
        cli.main(["--suite", "quick", "--batch", "3"])


def test_missing_output_folder_fails_before_timing(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "run_case", lambda *a, **k: pytest.fail("timed before failing"))
    with pytest.raises(SystemExit, match="does not exist"):
        cli.main(["--cell", "lstm", "--seq-len", "2", "--batch", "1", "--hidden-size", "2",
                  "--device", "cpu", "--json", str(tmp_path / "no" / "such" / "r.json")])


def test_plot_without_matplotlib_fails_before_timing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    monkeypatch.setattr(cli, "run_case", lambda *a, **k: pytest.fail("timed before failing"))
    with pytest.raises(SystemExit, match="needs matplotlib"):
        cli.main(["--cell", "lstm", "--seq-len", "2", "--batch", "1", "--hidden-size", "2",
                  "--device", "cpu", "--plot", str(tmp_path / "p.png")])


def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    p = tmp_path / "s.png"
    assert cli.main(["--cell", "lstm", "--seq-len", "4", "--batch", "2", "--hidden-size", "4",
                     "--repeats", "1", "--device", "cpu", "--plot", str(p)]) == 0
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_autocast_runs_both_forwards_under_autocast(tmp_path, monkeypatch):
    """--autocast: both forwards under torch.autocast (the torch.nn LSTM returns bfloat16
    there, so a run outside autocast would compare float32 with float32 and not notice), the
    environment and header say so, and an implementation whose output dtype differs is a
    mismatch, not timed."""
    seen = []
    real = runner._forward

    def spy(module, inp, hx, grad_out=None, autocast=None):
        out = real(module, inp, hx, grad_out, autocast)
        seen.append((type(module).__module__.split(".")[0], flat_outputs(out)[0].dtype))
        return out

    monkeypatch.setattr(runner, "_forward", spy)
    j, m = tmp_path / "r.json", tmp_path / "r.md"
    rc = cli.main(["--cell", "lstm", "--cell", "gru", "--seq-len", "5", "--batch", "2",
                   "--hidden-size", "8", "--repeats", "1", "--warmup", "0", "--device", "cpu",
                   "--autocast", "--json", str(j), "--markdown", str(m)])
    assert rc == 0
    data = json.loads(j.read_text())
    assert data["environment"]["autocast"] == "bfloat16"
    assert all(r["status"] == "ok" for r in data["results"]), data["results"]
    assert "autocast bfloat16" in m.read_text()
    lstm_dtypes = {d for mod, d in seen[:2]}  # the LSTM inference case's parity check
    assert lstm_dtypes == {torch.bfloat16}
    assert ("torch", torch.bfloat16) in seen and ("fused_rnn", torch.bfloat16) in seen
    assert ("torch", torch.float32) in seen  # torch.nn's GRU returns float32 under autocast

    class Float32LSTM(fused_rnn.LSTM):  # ignores autocast: returns float32
        def forward(self, input, hx=None):
            with torch.autocast("cpu", enabled=False):
                return super().forward(input, hx)

    monkeypatch.setattr(fused_rnn, "LSTM", Float32LSTM)
    r = runner.run_case(Case("lstm", "inference", 4, 2, 4, 4), torch.device("cpu"),
                        torch.float32, 1, 0, 100.0, autocast=True)
    assert r["status"] == "mismatch" and "dtypes differ" in r["note"]


def test_cli_autocast_needs_float32():
    with pytest.raises(SystemExit, match="--autocast"):
        cli.main(["--cell", "lstm", "--seq-len", "2", "--batch", "1", "--hidden-size", "2",
                  "--device", "cpu", "--autocast", "--dtype", "float64"])


def test_non_finite_output_is_a_mismatch_and_json_stays_strict(monkeypatch, tmp_path):
    """A NaN (which max() would drop) or inf is reported as such, never as 'differ by 0';
    the JSON of a mismatch (difference inf) stays strict JSON."""
    class Broken(fused_rnn.LSTM):
        def forward(self, input, hx=None):
            out, states = super().forward(input, hx)
            return out * float("nan"), states

    monkeypatch.setattr(fused_rnn, "LSTM", Broken)
    r = runner.run_case(Case("lstm", "inference", 4, 2, 4, 4), torch.device("cpu"),
                        torch.float32, 1, 0, 100.0)
    assert r["status"] == "mismatch" and "non-finite values (NaN or inf) in ours" in r["note"]
    path = tmp_path / "r.json"
    report.write_json(path, [r], {}, "fused-rnn-bench")
    loaded = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(c))
    assert loaded["results"][0]["max_abs_diff"] is None


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_lower_precision_math_is_a_mismatch(monkeypatch, cell):
    """Weights rounded to TF32's 10-bit mantissa (what silent TF32 products would do) stay
    within 1e-3 of torch.nn but are hundreds of times farther from the float64 run than
    torch.nn's own float32 run: a mismatch. The float32 module itself agrees."""
    cls = getattr(fused_rnn, cell.upper())
    case = Case(cell, "inference", 50, 4, 128, 128)
    ok = runner.run_case(case, torch.device("cpu"), torch.float32, 1, 0, 100.0)
    assert ok["status"] == "ok" and ok["fused_error"] <= 10 * max(ok["torch_error"], 1e-7)

    class Rounded(cls):
        def forward(self, input, hx=None):
            for name, p in self.named_parameters():
                if name.startswith("weight"):
                    bits = p.detach().view(torch.int32) & ~0x1FFF  # keep 10 mantissa bits
                    p.data = bits.view(torch.float32)
            return super().forward(input, hx)

    monkeypatch.setattr(fused_rnn, cell.upper(), Rounded)
    r = runner.run_case(case, torch.device("cpu"), torch.float32, 1, 0, 100.0)
    assert r["status"] == "mismatch" and "from float64 torch.nn" in r["note"]
    assert r["max_abs_diff"] < 1e-3  # the old rule (1e-3 of max(1, |ref|)) let it pass


def test_commit_is_the_builds_and_a_checkout_only_its_own():
    """fused_rnn_commit is what setup.py recorded at build time; source_commit is the HEAD of
    the checkout fused_rnn runs from, and None for a copy inside some other repository
    (as the installed wheel in CI's venv inside the clone is)."""
    import os
    import subprocess
    from fused_rnn import _build_cpu
    from fused_rnn.bench import environment
    env = environment.environment(torch.device("cpu"), torch.float32, 100.0)
    assert env["fused_rnn_commit"] == getattr(_build_cpu, "SOURCE_COMMIT", None)
    here = os.path.dirname(os.path.dirname(os.path.abspath(fused_rnn.__file__)))
    top = subprocess.run(["git", "-C", here, "rev-parse", "--show-toplevel"],
                         capture_output=True, text=True)
    if top.returncode != 0 or os.path.realpath(top.stdout.strip()) != os.path.realpath(here):
        assert env["source_commit"] is None
    else:
        head = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        assert env["source_commit"].startswith(head)


def test_progress_bar_is_cleared_before_a_result_line():
    """On a terminal the bar is redrawn in place; clear() erases it so a result printed
    between two steps does not run into it."""
    import io
    from fused_rnn.bench.progress import Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    bar = Progress(3, stream=out)
    bar.clear()  # nothing drawn yet: nothing written
    assert out.getvalue() == ""
    bar.step("a")
    bar.clear()
    assert out.getvalue().endswith("\r\033[K") and "1/3" in out.getvalue()
    bar.step("b")
    bar.step("c")
    assert out.getvalue().endswith("\n")  # the last step ends its line
    n = len(out.getvalue())
    bar.clear()
    assert len(out.getvalue()) == n
