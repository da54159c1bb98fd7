"""The CPU time loops split a layer over a team of threads (csrc/cpu/step_team.h): by
batch rows, or by hidden units (one block per thread, blocks a SIMD vector wide, the last
one narrower or empty), or not at all. Parity with torch.nn must not depend on how many
blocks there are, on blocks with tails, on empty blocks (a projection narrower than the
team), on the split, or on varlen rows finishing inside a block. The measured choice
splits these small layers by rows (their weights are small), so each test also forces
every split (FUSED_RNN_TEAM). Thread counts above the core count are fine: OpenMP still
runs every block at once (the per-step wait needs that), it only shares the cores."""
import pytest
import torch

import fused_rnn

from _cells import CELLS, make, make_state
from _parity import TOL, assert_same, packed_input

THREADS = (1, 2, 3, 5)
SPLITS = ("auto", "units", "rows", "one")


@pytest.fixture(params=SPLITS)
def split(request, monkeypatch):
    """How the time loops split the layer: the measured choice, or one forced."""
    if request.param == "auto":
        monkeypatch.delenv("FUSED_RNN_TEAM", raising=False)
    else:
        monkeypatch.setenv("FUSED_RNN_TEAM", request.param)
    return request.param


# hidden sizes: below one float64 vector (4), a tail (10), several blocks with a tail
# for float32 vectors of 8 as well (37), exact multiples (16)
@pytest.mark.parametrize("threads", THREADS, indirect=True)
@pytest.mark.parametrize("cell", CELLS, ids=str)
@pytest.mark.parametrize("hidden_size", [3, 10, 16, 37])
@pytest.mark.parametrize("batch", [5, 13])
def test_parity_any_team_size(threads, split, cell, hidden_size, batch):
    torch.manual_seed(hidden_size)
    gen = torch.Generator().manual_seed(threads)
    ref, ours = make(cell, input_size=4, hidden_size=hidden_size, num_layers=2,
                     bidirectional=True)
    x = packed_input(6, batch, 4, torch.float64, gen=gen)
    assert_same(ref, ours, x, make_state(cell, 4, batch, hidden_size, gen=gen), torch.float64)


@pytest.mark.parametrize("threads", THREADS, indirect=True)
@pytest.mark.parametrize("proj_size", [1, 5, 9])
@pytest.mark.parametrize("batch", [4, 14])
def test_lstm_projection_any_team_size(threads, split, proj_size, batch):
    lstm = CELLS[0]
    torch.manual_seed(proj_size)
    gen = torch.Generator().manual_seed(threads)
    ref, ours = make(lstm, input_size=3, hidden_size=21, proj_size=proj_size,
                     bidirectional=True)
    x = packed_input(5, batch, 3, torch.float64, gen=gen)
    hx = make_state(lstm, 2, batch, 21, proj_size=proj_size, gen=gen)
    assert_same(ref, ours, x, hx, torch.float64)


@pytest.mark.parametrize("threads", (1, 3), indirect=True)
@pytest.mark.parametrize("cell", CELLS, ids=str)
# float32 GEMM paths: panels for one tile of 4 rows, or split by rows into 3 tiles of 4
@pytest.mark.parametrize("batch", [4, 12])
def test_float32_any_team_size(threads, split, cell, batch):
    torch.manual_seed(batch)
    gen = torch.Generator().manual_seed(batch)
    ref, ours = make(cell, torch.float32, input_size=8, hidden_size=40)
    x = packed_input(7, batch, 8, torch.float32, gen=gen)
    assert_same(ref, ours, x, None, torch.float32)


@pytest.mark.parametrize("threads", (2,), indirect=True)
@pytest.mark.parametrize("cell", CELLS, ids=str)
def test_float32_row_tiles_on_mkl(threads, cell):
    """Tiles of 600 rows: past the panels' range (512), so MKL's packed GEMM (or sgemm for
    the steps where varlen rows have finished). The weight gradients sum 3600 rows in
    float32, hence 1e-4 instead of the 1e-5 of the small-batch tests."""
    torch.manual_seed(7)
    gen = torch.Generator().manual_seed(7)
    ref, ours = make(cell, torch.float32, input_size=8, hidden_size=16)
    x = packed_input(3, 1200, 8, torch.float32, gen=gen)
    assert_same(ref, ours, x, None, torch.float32, tol=1e-4)


@pytest.mark.parametrize("threads", (1, 2), indirect=True)
@pytest.mark.parametrize("cell", CELLS, ids=str)
def test_float32_panels_slice_long_k(threads, cell):
    """hidden_size 520: the per-step products' k (520 forward, G * 520 backward) is cut
    into several L1 slices, the last one shorter; 13 rows make row blocks of 6, 6 and 1;
    one tile of 300 rows is past the old 128-row limit."""
    torch.manual_seed(3)
    gen = torch.Generator().manual_seed(3)
    ref, ours = make(cell, torch.float32, input_size=8, hidden_size=520)
    for batch in (13, 300):
        x = packed_input(3, batch, 8, torch.float32, gen=gen)
        assert_same(ref, ours, x, None, torch.float32, tol=1e-4)


def test_results_do_not_depend_on_the_team_size():
    """One team or three: the same results (up to the rounding of BLAS's own
    thread-dependent blocking)."""
    lstm = CELLS[0]
    _, ours = make(lstm, input_size=5, hidden_size=19)
    x = torch.randn(8, 3, 5, dtype=torch.float64, requires_grad=True)
    before = torch.get_num_threads()
    results = []
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            x.grad = None
            ours.zero_grad()
            y, (h, c) = ours(x)
            (y.sum() + h.sum() + c.sum()).backward()
            results.append([y, h, c, x.grad] + [p.grad for p in ours.parameters()])
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, **TOL[torch.float64])


ONE, UNITS, ROWS = 0, 1, 2
MB = 1 << 20
INTEL = fused_rnn.build_info().get("cpu_intel") == "1"
# 2-7 rows with weights over 512 KB and two threads: one team on Intel CPUs, else units.
FEW_ROWS = (ONE, 1) if INTEL else (UNITS, 2)
# Blocks of units need every block running at once, which only OpenMP promises.
needs_openmp = pytest.mark.skipif(
    "parallel backend: OpenMP" not in torch.__config__.parallel_info(),
    reason="this torch's parallel backend is not OpenMP: no blocks of units")


@needs_openmp
@pytest.mark.parametrize("threads,B,H,weight_bytes,want", [
    (2, 16, 256, 1 * MB, (ROWS, 2)),    # the weights stay in each thread's L2: rows
    (2, 8, 256, 1 * MB, (ROWS, 2)),     # 4 rows per thread are enough
    # 2 rows per thread are not; under 8 rows on Intel CPUs units neither: one team, whose
    # products run in parallel inside (elsewhere units; FEW_ROWS)
    (2, 4, 256, 1 * MB, FEW_ROWS),
    (2, 2, 512, 4 * MB, FEW_ROWS),
    (2, 32, 512, 4 * MB, (UNITS, 2)),   # 16 rows per thread would stream 4 MB per step
    (2, 64, 512, 4 * MB, (ROWS, 2)),    # 32 rows per thread: they may
    (2, 2, 128, MB // 4, (ROWS, 2)),    # weights up to 512 KB: rows, down to one each
    (2, 1, 128, MB // 4, (UNITS, 2)),   # one row: 64 units per thread
    (2, 1, 256, 1 * MB, (UNITS, 2)),
    (2, 1, 96, MB // 8, (ONE, 1)),      # 48 units per thread: one thread
    (2, 16, 32, MB // 64, (ROWS, 2)),   # too narrow for units, rows as before
    # Past the minimums (4 rows with weights over 512 KB, 64 units per thread) fewer
    # threads take part.
    (5, 16, 256, 1 * MB, (ROWS, 4)),    # 4 rows each for 4 threads, as many as by units
    (5, 8, 1024, 16 * MB, (UNITS, 5)),  # by rows only 2 threads
    (5, 1, 128, MB // 4, (UNITS, 2)),   # 64 units each for 2 threads, not 5
    (5, 4, 96, MB // 8, (ROWS, 4)),     # small weights: a row each for 4 threads
    (5, 4, 256, 1 * MB, (UNITS, 4)),    # 2-7 rows: one team only where units take <= 2
], indirect=["threads"])
def test_team_plan_choice(threads, monkeypatch, B, H, weight_bytes, want):
    """The measured choice of split (step_team.h's plan_team) for float32 vectors of 16."""
    monkeypatch.delenv("FUSED_RNN_TEAM", raising=False)
    assert tuple(torch.ops.fused_rnn.cpu_team_plan(B, H, 16, weight_bytes)) == want


@needs_openmp
@pytest.mark.parametrize("threads,T,B,H,weight_bytes,short,long", [
    (2, 2, 1, 256, 1 * MB, (ONE, 1), (UNITS, 2)),     # two steps of 1 MB
    (2, 2, 1, 128, MB // 4, (UNITS, 2), (UNITS, 2)),  # weights under 1 MB: as long calls
    (2, 16, 4, 128, MB // 4, (ROWS, 2), (ROWS, 2)),
    (2, 16, 32, 512, 4 * MB, (ONE, 1), (UNITS, 2)),   # 512 row-steps of 1 MB+ weights
    (2, 2, 64, 512, 4 * MB, (ONE, 1), (ROWS, 2)),
    (2, 16, 64, 512, 4 * MB, (ROWS, 2), (ROWS, 2)),   # 1024 row-steps: as long calls
    (2, 17, 1, 256, 1 * MB, (UNITS, 2), (UNITS, 2)),  # 17 steps are not short
    (2, 0, 1, 256, 1 * MB, (UNITS, 2), (UNITS, 2)),   # T unknown: taken as long
], indirect=["threads"])
def test_short_call_rule(threads, monkeypatch, T, B, H, weight_bytes, short, long):
    """plan_team's rule for calls of at most 16 steps with 1 MB+ of weights, before the
    choice for long ones: one team on Intel CPUs (`short`), elsewhere the long calls'
    choice (`long`)."""
    monkeypatch.delenv("FUSED_RNN_TEAM", raising=False)
    monkeypatch.delenv("FUSED_RNN_STEP_PROJECTION", raising=False)
    plan = torch.ops.fused_rnn.cpu_team_plan
    want = short if INTEL else long
    assert tuple(plan(B, H, 16, weight_bytes, None, T)) == want
    # the lengths of varlen rows give T when it is not given (here 2: short)
    two_steps = (ONE, 1) if INTEL else long
    assert tuple(plan(B, H, 16, weight_bytes, torch.full((B,), T or 2))[:2]) == \
        (want if T > 0 else two_steps)
    monkeypatch.setenv("FUSED_RNN_TEAM", "units")  # a forced split still wins
    assert tuple(plan(1, 256, 16, MB, None, 2)) == (UNITS, 2)


@needs_openmp
@pytest.mark.parametrize("threads,B,H,weight_bytes,want", [
    (2, 1, 256, 1 * MB, (UNITS, 2)),        # (projected first: one team on Intel)
    (2, 64, 512, 4 * MB, (UNITS, 2)),       # (projected first: one team on Intel)
    (2, 16, 256, 1 * MB, (UNITS, 2)),       # (projected first: one team on Intel)
    (2, 16, 128, MB // 4, (UNITS, 2)),      # (projected first: rows)
    (2, 4, 96, MB // 8, (ONE, 1)),          # 48 units per thread: one thread
    (3, 1, 192, MB // 2, (UNITS, 3)),       # 64 units each for 3 threads
    (3, 1, 128, MB // 4, (UNITS, 2)),       # only 2 threads get 64 units
], indirect=["threads"])
def test_one_step_calls_split_by_units(threads, monkeypatch, B, H, weight_bytes, want):
    """A one-step call projects its input inside the step, each tile for its units
    (project_in_step), so it splits by units wherever each thread gets 64+ of them;
    FUSED_RNN_STEP_PROJECTION=0 projects first and takes the choice for short calls."""
    monkeypatch.delenv("FUSED_RNN_TEAM", raising=False)
    monkeypatch.delenv("FUSED_RNN_STEP_PROJECTION", raising=False)
    plan = torch.ops.fused_rnn.cpu_team_plan
    assert tuple(plan(B, H, 16, weight_bytes, None, 1)) == want
    assert tuple(plan(B, H, 16, weight_bytes, torch.ones(B, dtype=torch.long))[:2]) == want
    monkeypatch.setenv("FUSED_RNN_STEP_PROJECTION", "0")
    assert tuple(plan(B, H, 16, weight_bytes, None, 1)) == \
        tuple(plan(B, H, 16, weight_bytes, None, 2))
    monkeypatch.setenv("FUSED_RNN_TEAM", "rows")  # a forced split still wins
    monkeypatch.delenv("FUSED_RNN_STEP_PROJECTION")
    assert tuple(plan(B, H, 16, weight_bytes, None, 1))[0] == ROWS


@pytest.mark.parametrize("threads", (1, 2, 3), indirect=True)
@pytest.mark.parametrize("step_projection", ("1", "0"))
@pytest.mark.parametrize("cell", CELLS, ids=str)
@pytest.mark.parametrize("hidden_size,batch", [(10, 1), (37, 5), (70, 13)])
def test_one_step_calls_any_team_size(threads, split, monkeypatch, step_projection, cell,
                                      hidden_size, batch):
    """One-step calls (streaming): the tiles project their own rows and units of the
    input, under every split, or the call projects first (FUSED_RNN_STEP_PROJECTION=0);
    outputs, final states and every gradient as torch.nn's."""
    monkeypatch.setenv("FUSED_RNN_STEP_PROJECTION", step_projection)
    torch.manual_seed(hidden_size)
    gen = torch.Generator().manual_seed(threads)
    ref, ours = make(cell, input_size=6, hidden_size=hidden_size, num_layers=2,
                     bidirectional=True)
    x = torch.randn(1, batch, 6, dtype=torch.float64, generator=gen)
    assert_same(ref, ours, x, make_state(cell, 4, batch, hidden_size, gen=gen), torch.float64)
    if cell is CELLS[0]:  # the LSTM's projection: two phases per step
        ref, ours = make(cell, input_size=6, hidden_size=hidden_size, proj_size=3)
        assert_same(ref, ours, x, make_state(cell, 1, batch, hidden_size, proj_size=3,
                                             gen=gen), torch.float64)


@needs_openmp
@pytest.mark.parametrize("threads", (3,), indirect=True)
def test_team_plan_can_be_forced(threads, monkeypatch):
    plan = torch.ops.fused_rnn.cpu_team_plan
    for value, want in [("units", (UNITS, 3)), ("rows", (ROWS, 3)), ("one", (ONE, 1)),
                        ("auto", (ROWS, 3)), ("bogus", (ROWS, 3))]:
        monkeypatch.setenv("FUSED_RNN_TEAM", value)
        assert tuple(plan(5, 40, 8, 6400)) == want, value
    monkeypatch.setenv("FUSED_RNN_TEAM", "rows")
    assert tuple(plan(2, 40, 8, 6400)) == (ROWS, 2)  # no more blocks than rows
    monkeypatch.setenv("FUSED_RNN_TEAM", "units")
    assert tuple(plan(5, 12, 8, 6400)) == (UNITS, 2)  # no more blocks than vectors


@needs_openmp
@pytest.mark.parametrize("threads", (2, 3), indirect=True)
def test_varlen_row_blocks_are_balanced(threads, monkeypatch):
    """Split by rows, varlen rows (longest first) are cut so that each block runs about as
    many row-steps: the longest rows' block gets fewer rows."""
    monkeypatch.setenv("FUSED_RNN_TEAM", "rows")
    lengths = torch.tensor([100, 96, 90, 81, 77, 70, 64, 60, 51, 45, 40, 33, 30, 28, 26, 25])
    how, count, *cuts = torch.ops.fused_rnn.cpu_team_plan(16, 32, 16, 4096, lengths)
    assert (how, count) == (ROWS, threads)
    assert cuts[0] == 0 and cuts[-1] == 16 and len(cuts) == threads + 1
    sizes = [b - a for a, b in zip(cuts, cuts[1:])]
    work = [int(lengths[a:b].sum()) for a, b in zip(cuts, cuts[1:])]
    assert min(sizes) >= 1 and sizes[0] < sizes[-1]
    # each block within one row's length of an equal share
    share = int(lengths.sum()) / threads
    assert all(abs(w - share) <= 100 for w in work), (cuts, work)
    # equal lengths: blocks of equal rows, give or take one
    _, _, *even = torch.ops.fused_rnn.cpu_team_plan(16, 32, 16, 4096, torch.full((16,), 7))
    even_sizes = [b - a for a, b in zip(even, even[1:])]
    assert sum(even_sizes) == 16 and max(even_sizes) - min(even_sizes) <= 1, even


@pytest.mark.parametrize("threads", (1, 2), indirect=True)
@pytest.mark.parametrize("input_size,lengths", [
    (5, [1, 0, 1]),  # an op-level length of 0 inside the batch: every row still projected
    (5, [1, 1, 0]),  # the last rows do not run: projected first, their gates zeroed
    (0, None),       # nothing to project (an empty W_ih has no data)
])
def test_one_step_ops_at_the_edges(threads, monkeypatch, input_size, lengths):
    """The raw ops on one step, with what the modules never pass (lengths of 0, input
    size 0): every output and saved tensor as when the call projects first."""
    ops = torch.ops.fused_rnn
    gen = torch.Generator().manual_seed(input_size)
    B, H = 3, 20
    rnd = lambda *s: torch.randn(*s, dtype=torch.float64, generator=gen)  # noqa: E731
    x, h0, c0 = rnd(1, B, input_size), rnd(B, H), rnd(B, H)
    lens = None if lengths is None else torch.tensor(lengths)
    calls = {
        "lstm": lambda: ops.lstm_forward(x, rnd(4 * H, input_size), rnd(4 * H, H), rnd(4 * H),
                                         rnd(4 * H), None, h0, c0, lens, False),
        "gru": lambda: ops.gru_forward(x, rnd(3 * H, input_size), rnd(3 * H, H), rnd(3 * H),
                                       rnd(3 * H), h0, lens, False),
        "rnn": lambda: ops.rnn_forward(x, rnd(H, input_size), rnd(H, H), rnd(H), rnd(H), h0,
                                       lens, False, False),
    }
    for name, call in calls.items():
        results = []
        for switch in ("1", "0"):
            monkeypatch.setenv("FUSED_RNN_STEP_PROJECTION", switch)
            gen.manual_seed(7)  # the same weights both times
            results.append([t for t in call() if t.numel() > 0])
        for k, (a, b) in enumerate(zip(*results)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12,
                                       msg=lambda m: f"{name} output {k}: {m}")
