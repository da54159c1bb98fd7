"""Property-based parity: hypothesis draws random configurations (cell, layers, sizes,
direction, batch_first, proj_size, bias, input form and lengths, initial state, dtype)
and every drawn case must match torch.nn on the same weights: outputs, final states and
the gradients of the input, the initial states and every parameter.

Runs are derandomized, so CI sees the same few hundred cases every time; a failure
prints the drawn configuration (and a reproduction blob) to rerun it exactly.
"""
import torch
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence

from _cells import CELLS, make, make_state
from _parity import assert_same

SETTINGS = settings(max_examples=300, derandomize=True, deadline=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def cases(draw):
    cell = draw(st.sampled_from(CELLS))
    H = draw(st.integers(1, 8))
    proj = 0
    if cell.has_proj and H > 1 and draw(st.booleans()):
        proj = draw(st.integers(1, H - 1))
    cfg = dict(input_size=draw(st.integers(1, 6)), hidden_size=H,
               num_layers=draw(st.integers(1, 3)), bidirectional=draw(st.booleans()),
               batch_first=draw(st.booleans()), bias=draw(st.booleans()))
    if proj:
        cfg["proj_size"] = proj
    form = draw(st.sampled_from(["batched", "unbatched", "packed"]))
    T = draw(st.integers(1, 6))
    B = 1 if form == "unbatched" else draw(st.integers(1, 4))
    lengths = sorted_ = None
    if form == "packed":
        lengths = draw(st.lists(st.integers(1, T), min_size=B, max_size=B))
        sorted_ = draw(st.booleans())
        if sorted_:
            lengths = sorted(lengths, reverse=True)
    return dict(cell=cell, cfg=cfg, form=form, T=T, B=B, lengths=lengths,
                enforce_sorted=sorted_, with_state=draw(st.booleans()),
                dtype=draw(st.sampled_from([torch.float64, torch.float32])),
                seed=draw(st.integers(0, 2**31 - 1)))


def build_input(case):
    cfg, T, B, dtype = case["cfg"], case["T"], case["B"], case["dtype"]
    gen = torch.Generator().manual_seed(case["seed"])
    I = cfg["input_size"]
    form = case["form"]
    if form == "unbatched":
        x = torch.randn(T, I, dtype=dtype, generator=gen)
    elif form == "packed":
        x = torch.randn(T, B, I, dtype=dtype, generator=gen)
        x = pack_padded_sequence(x, torch.tensor(case["lengths"]),
                                 enforce_sorted=case["enforce_sorted"])
    else:
        shape = (B, T, I) if cfg["batch_first"] else (T, B, I)
        x = torch.randn(*shape, dtype=dtype, generator=gen)
    hx = None
    if case["with_state"]:
        L = cfg["num_layers"] * (2 if cfg["bidirectional"] else 1)
        hx = make_state(case["cell"], L, B, cfg["hidden_size"], cfg.get("proj_size", 0), dtype,
                        gen, unbatched=form == "unbatched")
    return x, hx


@SETTINGS
@given(cases())
def test_matches_torch(case):
    note(f"reproduce: {case}")
    torch.manual_seed(case["seed"])  # the module's initial weights
    ref, ours = make(case["cell"], case["dtype"], **case["cfg"])
    x, hx = build_input(case)
    assert_same(ref, ours, x, hx, case["dtype"])
