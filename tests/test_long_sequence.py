"""Long sequences: T = 100,000 at B = 1 trains; what autograd saves grows exactly
linearly in T and equals the documented saved buffers; the autograd graph
has one node per layer and direction, not per step; nothing recurses per step."""
import threading

import pytest
import torch

from _cells import CELLS, make
from _parity import assert_same

F64 = torch.float64
LONG_T = 100_000
cells = pytest.mark.parametrize("cell", CELLS, ids=str)


def _tiny(cell):
    cfg = dict(input_size=1, hidden_size=2, num_layers=2)
    return dict(cfg, proj_size=1) if cell.has_proj else cfg


def saved_activation_bytes(module, x):
    """Forward under a saved-tensor hook; bytes of the distinct storages autograd keeps
    for backward, leaving out the input and the parameters (not activations)."""
    known = {x.untyped_storage().data_ptr()} | {p.untyped_storage().data_ptr()
                                                 for p in module.parameters()}
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        if s.nbytes() and s.data_ptr() not in known:
            storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = module(x)
    return out, sum(storages.values())


def formula_bytes(cell, T, B, H, P, layers, itemsize):
    """What each layer op saves (csrc/*_args.h), per layer: LSTM gates [T, B, 4H],
    hs [T+1, B, P], cs [T+1, B, H], h_raw [T, B, H] with a projection; GRU gates
    [T, B, 3H], hs [T+1, B, H], hn [T, B, H]; RNN hs [T+1, B, H]. Plus each upper
    layer's input, the output [T, B, P] below it, and once the initial state (h0 [B, P],
    c0 [B, H]; kept for a differentiable backward, fused_rnn/_rerun.py), whose zeros every
    layer reads when no hx is given. None for a cell not listed."""
    per_layer, state = {
        "LSTM": (4 * H * T * B + (T + 1) * B * (P + H) + (T * B * H if P != H else 0),
                 B * (P + H)),
        "GRU": (3 * H * T * B + (T + 1) * B * H + T * B * H, B * H),
        "RNN": ((T + 1) * B * H, B * H),
    }.get(cell.ref.__name__, (None, None))
    if per_layer is None:
        return None
    return itemsize * (layers * per_layer + state + (layers - 1) * T * B * P)


def graph_nodes(t):
    """Autograd nodes reachable from t (iteratively: the graph may be deep)."""
    seen, stack = set(), [t.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        stack.extend(f for f, _ in fn.next_functions)
    return len(seen)


@cells
def test_saved_bytes_linear_in_T(cell):
    torch.manual_seed(0)
    cfg = _tiny(cell)
    _, ours = make(cell, **cfg)
    sizes = {}
    for T in (1000, 2000, LONG_T):
        x = torch.randn(T, 1, 1, dtype=F64, requires_grad=True)
        _, sizes[T] = saved_activation_bytes(ours, x)
    per_1000 = sizes[2000] - sizes[1000]
    assert 0 < per_1000
    assert sizes[LONG_T] - sizes[1000] == 99 * per_1000, sizes
    # At most a few dozen values per step and layer: no per-step copies of the weights.
    per_step_values = per_1000 / 1000 / 8
    assert per_step_values <= cfg["num_layers"] * 16 * cfg["hidden_size"], per_step_values
    P = cfg.get("proj_size") or cfg["hidden_size"]
    for T, got in sizes.items():
        want = formula_bytes(cell, T, 1, cfg["hidden_size"], P, cfg["num_layers"], 8)
        assert want is None or got == want, (T, got, want)


@cells
def test_long_sequence_trains(cell):
    """Forward + backward over 100,000 steps on a thread with a 1 MiB stack (a per-step
    recursion would overflow it); gradients are finite, the graph does not grow with T,
    and a small step along the gradient lowers the loss."""
    torch.manual_seed(0)
    _, ours = make(cell, **_tiny(cell))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(LONG_T, 1, 1, dtype=F64, generator=gen)
    target = torch.randn(LONG_T, 1, ours.proj_size or ours.hidden_size, dtype=F64, generator=gen)

    def loss_of(T=LONG_T):
        y, _ = ours(x[:T])
        return ((y - target[:T]) ** 2).mean()

    result = {}

    def train():
        loss = loss_of()
        result["nodes"] = graph_nodes(loss)
        loss.backward()
        result["loss"] = loss.item()

    old = threading.stack_size(1 << 20)
    try:
        th = threading.Thread(target=train)
        th.start()
        th.join(timeout=300)
    finally:
        threading.stack_size(old)
    assert not th.is_alive(), "training step did not finish"
    assert "loss" in result, "training step raised (see the thread's traceback above)"

    assert result["nodes"] == graph_nodes(loss_of(10)), "autograd graph grows with T"
    grads = [p.grad for p in ours.parameters()]
    assert all(g is not None and g.isfinite().all() for g in grads)
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    assert norm > 0
    with torch.no_grad():
        for p, g in zip(ours.parameters(), grads):
            p -= 1e-3 * g / norm
        assert loss_of().item() < result["loss"]


@cells
def test_parity_on_a_long_sequence(cell):
    """Hundreds of steps against torch.nn: no drift accumulates over time."""
    torch.manual_seed(0)
    cfg = dict(input_size=2, hidden_size=3, bidirectional=True)
    ref, ours = make(cell, **cfg)
    x = torch.randn(500, 2, 2, dtype=F64)
    assert_same(ref, ours, x, None, F64)
