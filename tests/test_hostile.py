"""Hostile input to every fused module, against torch.nn on the same weights: NaN/Inf
values, non-contiguous and expanded (stride 0) inputs, states and weights, weights shared
between modules, empty batches and sequences, malformed PackedSequences, and states of
the wrong dtype or device."""
import faulthandler

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fused_rnn
from _cells import CELLS, make, make_state, outputs
from _parity import TOL

F64 = torch.float64
cells = pytest.mark.parametrize("cell", CELLS, ids=str)


@pytest.fixture(autouse=True)
def watchdog():
    """A hang fails the run (with every thread's stack) instead of stalling CI."""
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _run(module, inp, hx, leaves, masks=None, seed=0):
    """Forward, then backward of a random weighted sum of the outputs at `masks` (the
    reference's finite positions, so NaN outputs do not poison every gradient).
    Returns (outputs, masks, gradients of leaves and parameters)."""
    module.zero_grad(set_to_none=True)
    outs = outputs(module(inp) if hx is None else module(inp, hx))
    if masks is None:
        masks = [o.detach().isfinite() for o in outs]
    gen = torch.Generator().manual_seed(seed)
    loss = sum((torch.where(m, o, 0) * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum()
               for o, m in zip(outs, masks))
    wrt = list(leaves) + list(module.parameters())
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    return [o.detach() for o in outs], masks, grads


def check_pair(ref, ours, make_inputs, dtype=F64, equal_nan=False):
    """make_inputs() -> (leaves, inp, hx), called once per module so that both see
    identically laid out (and not merely equal) tensors."""
    r_out, masks, r_grads = _run(ref, *_order(make_inputs()))
    o_out, _, o_grads = _run(ours, *_order(make_inputs()), masks=masks)
    tol = dict(TOL[dtype], equal_nan=equal_nan)
    for k, (a, b) in enumerate(zip(r_out, o_out, strict=True)):
        torch.testing.assert_close(b, a, **tol, msg=lambda m: f"output {k}: {m}")
    for k, (a, b) in enumerate(zip(r_grads, o_grads, strict=True)):
        if a is None:
            assert b is None or not b.any(), f"gradient {k}: torch has none"
        else:
            torch.testing.assert_close(b, a, **tol, msg=lambda m: f"gradient {k}: {m}")
    return o_out, o_grads


def _order(leaves_inp_hx):
    leaves, inp, hx = leaves_inp_hx
    return inp, hx, leaves


def _plain_inputs(cell, cfg, T, B, with_state=True, seed=0):
    def build():
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(T, B, cfg["input_size"], dtype=F64, generator=gen)
        hx = None
        if with_state:
            L = cfg.get("num_layers", 1) * (2 if cfg.get("bidirectional") else 1)
            hx = make_state(cell, L, B, cfg["hidden_size"], cfg.get("proj_size", 0), F64, gen)
        return _with_leaves(x, hx)
    return build


def _with_leaves(x, hx):
    """(leaves, x, hx) with x and every state tensor made a leaf requiring grad."""
    states = [] if hx is None else list(hx) if isinstance(hx, tuple) else [hx]
    for t in [x] + states:
        t.requires_grad_()
    return [x] + states, x, hx


# ----------------------------------------------------------------------------- NaN / Inf

CFG = dict(input_size=3, hidden_size=5, num_layers=2, bidirectional=True)


def _poison_input(where, value):
    def poison(build):
        def build2():
            leaves, x, hx = build()
            with torch.no_grad():
                (x if where == "x" else leaves[1]).view(-1)[7] = value
            return leaves, x, hx
        return build2
    return poison


@cells
@pytest.mark.parametrize("where", ["x", "h_0"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_nan_inf_in_input_propagate_like_torch(cell, where, value):
    torch.manual_seed(0)
    ref, ours = make(cell, **CFG)
    build = _poison_input(where, value)(_plain_inputs(cell, CFG, T=5, B=3))
    out, _ = check_pair(ref, ours, build, equal_nan=True)
    if value != value:  # NaN always reaches the output (Inf may saturate to finite)
        assert out[0].isnan().any(), "the NaN must reach the output"


@cells
@pytest.mark.parametrize("param", ["weight_ih_l0", "weight_hh_l1_reverse", "bias_hh_l0"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_inf_in_weights_propagate_like_torch(cell, param, value):
    torch.manual_seed(0)
    ref, ours = make(cell, **CFG)
    for m in (ref, ours):
        with torch.no_grad():
            getattr(m, param).view(-1)[1] = value
    check_pair(ref, ours, _plain_inputs(cell, CFG, T=4, B=2), equal_nan=True)


# ----------------------------------------------------------------- layouts and strides

def _strided_inputs(cell, cfg, T, B, layout):
    """Inputs and states with unusual strides; the gradient leaves are their bases."""
    I, H = cfg["input_size"], cfg["hidden_size"]
    L = cfg.get("num_layers", 1) * (2 if cfg.get("bidirectional") else 1)

    def build():
        gen = torch.Generator().manual_seed(1)
        if layout == "expanded":  # stride 0 over the batch (and state batch)
            xb = torch.randn(T, 1, I, dtype=F64, generator=gen).requires_grad_()
            x = xb.expand(T, B, I)
            sb = [torch.randn(L, 1, f, dtype=F64, generator=gen).requires_grad_()
                  for f in _sizes(cell, H)]
            states = [s.expand(L, B, s.shape[2]) for s in sb]
        else:
            # x sliced along features and time-major view of batch-major storage;
            # states transposed from [B, L, F] storage.
            xb = torch.randn(B, 2 * T, 2 * I, dtype=F64, generator=gen).requires_grad_()
            x = xb.transpose(0, 1)[::2, :, 1::2]
            sb = [torch.randn(B, L, f, dtype=F64, generator=gen).requires_grad_()
                  for f in _sizes(cell, H)]
            states = [s.transpose(0, 1) for s in sb]
            assert not x.is_contiguous() and not states[0].is_contiguous()
        hx = tuple(states) if cell.n_states == 2 else states[0]
        return [xb] + sb, x, hx
    return build


def _sizes(cell, H):
    return (H,) * cell.n_states


@cells
@pytest.mark.parametrize("layout", ["strided", "expanded"])
def test_non_contiguous_and_expanded_inputs(cell, layout):
    torch.manual_seed(0)
    ref, ours = make(cell, **CFG)
    check_pair(ref, ours, _strided_inputs(cell, CFG, T=4, B=3, layout=layout))


def _relayout(p, layout):
    """The same values as a non-contiguous (transposed / strided) or expanded parameter."""
    p = p.detach()
    if layout == "expanded":  # every row (or element) equal: stride 0 on dim 0
        return torch.nn.Parameter(p[:1].expand_as(p))
    if p.dim() == 2:
        t = torch.empty(p.shape[1], p.shape[0], dtype=p.dtype).t()
    else:
        t = torch.empty(2 * p.shape[0], dtype=p.dtype)[::2]
    t.copy_(p)
    assert not t.is_contiguous()
    return torch.nn.Parameter(t)


@cells
@pytest.mark.parametrize("layout", ["strided", "expanded"])
def test_non_contiguous_and_expanded_weights(cell, layout):
    torch.manual_seed(0)
    cfg = dict(CFG, proj_size=2) if cell.has_proj else CFG
    ref, ours = make(cell, **cfg)
    for name, p in list(ref.named_parameters()):
        q = _relayout(p, layout)
        setattr(ref, name, q)
        setattr(ours, name, torch.nn.Parameter(q.detach()))  # same layout, own leaf
    assert not ours.weight_hh_l0.is_contiguous()
    check_pair(ref, ours, _plain_inputs(cell, cfg, T=4, B=3))


@cells
def test_weights_shared_between_modules(cell):
    """Two modules holding the same Parameter objects, both in one graph, plus a module
    applied twice: gradients accumulate as in torch.nn."""
    cfg = dict(input_size=4, hidden_size=4)
    pairs = []
    for cls in ("ref", "ours"):
        torch.manual_seed(0)
        kw = {**cell.extra, **cfg}
        a, b = (getattr(cell, cls)(**kw, dtype=F64) for _ in range(2))
        if cls == "ours":  # same values as torch.nn's pair
            a.load_state_dict(pairs[0][0].state_dict())
            b.load_state_dict(pairs[0][1].state_dict())
        b.weight_hh_l0 = a.weight_hh_l0
        b.bias_ih_l0 = a.bias_ih_l0
        pairs.append((a, b))
    x = torch.randn(5, 2, 4, dtype=F64)
    grads = []
    for a, b in pairs:
        xx = x.clone().requires_grad_()
        y1 = a(xx)[0]
        y2 = b(y1)[0]
        y3 = a(y2)[0]  # a again, on its own output's successor
        loss = (y3 * torch.linspace(-1, 1, y3.numel(), dtype=F64).view_as(y3)).sum()
        params = list(a.parameters()) + [p for p in b.parameters()
                                         if all(p is not q for q in a.parameters())]
        grads.append(torch.autograd.grad(loss, [xx] + params))
    assert len(grads[0]) == len(grads[1]) == 1 + 4 + 2
    for k, (r, o) in enumerate(zip(*grads)):
        torch.testing.assert_close(o, r, **TOL[F64], msg=lambda m: f"gradient {k}: {m}")


@cells
@pytest.mark.parametrize("how", ["parametrized", "plain tensor", "new Parameter"])
def test_replaced_weights_are_used(cell, how):
    """Weights that no longer sit in the module's _parameters (a parametrization, a plain
    tensor set after deleting the Parameter) or were replaced by another Parameter are
    the ones a call uses, as in torch.nn; and gradients reach what they were made from."""
    cfg = dict(input_size=4, hidden_size=5, num_layers=2, **cell.extra)
    torch.manual_seed(0)
    ref = cell.ref(**cfg, dtype=F64)
    ours = cell.ours(**cfg, dtype=F64)
    ours.load_state_dict(ref.state_dict())
    source = torch.randn_like(ref.weight_hh_l1, requires_grad=True)
    for m in (ref, ours):
        if how == "parametrized":
            torch.nn.utils.parametrize.register_parametrization(m, "weight_hh_l1", _Halve())
        elif how == "plain tensor":
            del m.weight_hh_l1
            m.weight_hh_l1 = source * 0.5
        else:
            m.weight_hh_l1 = torch.nn.Parameter(source.detach() * 0.5)
    x = torch.randn(6, 3, 4, dtype=F64)
    res = []
    for m in (ref, ours):
        if how == "plain tensor":
            m.weight_hh_l1 = source * 0.5  # a new graph per call, as a hypernetwork makes
        y = m(x)[0]
        loss = (y * torch.linspace(-1, 1, y.numel(), dtype=F64).view_as(y)).sum()
        leaves = [source] if how == "plain tensor" else list(m.parameters())
        res.append([y.detach(), *torch.autograd.grad(loss, leaves)])
    for k, (r, o) in enumerate(zip(*res)):
        torch.testing.assert_close(o, r, **TOL[F64], msg=lambda m: f"tensor {k}: {m}")


class _Halve(torch.nn.Module):
    def forward(self, w):
        return w * 0.5


# ------------------------------------------------------------------ empty dimensions

@cells
@pytest.mark.parametrize("cfg", [
    dict(input_size=3, hidden_size=4),
    dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True, batch_first=True),
], ids=["plain", "2layer-bidir-batch_first"])
@pytest.mark.parametrize("with_state", [False, True])
def test_zero_batch_like_torch(cell, cfg, with_state):
    torch.manual_seed(0)
    ref, ours = make(cell, **cfg)
    B, T = 0, 3

    def build():
        shape = (B, T, 3) if cfg.get("batch_first") else (T, B, 3)
        x = torch.randn(*shape, dtype=F64)
        hx = None
        if with_state:
            L = cfg.get("num_layers", 1) * (2 if cfg.get("bidirectional") else 1)
            hx = make_state(cell, L, B, 4)
        return _with_leaves(x, hx)
    out, grads = check_pair(ref, ours, build)
    assert out[0].shape[:2] == ((B, T) if cfg.get("batch_first") else (T, B))


@cells
@pytest.mark.parametrize("shape", [(0, 2, 3), (0, 3)], ids=["batched", "unbatched"])
def test_zero_length_sequence_raises_like_torch(cell, shape):
    ref, ours = make(cell, input_size=3, hidden_size=4)
    x = torch.randn(*shape, dtype=F64)
    with pytest.raises(RuntimeError, match="sequence length to be larger than 0"):
        ref(x)
    with pytest.raises(RuntimeError, match=f"{cell.ours.__name__}: Expected sequence length "
                                           "to be larger than 0"):
        ours(x)


# ----------------------------------------------------------------- lengths (packed input)

def _packed(batch_sizes, rows=None, sorted_indices=None, unsorted_indices=None):
    bs = torch.tensor(batch_sizes)
    n = int(bs.clamp(min=0).sum()) if rows is None else rows
    return PackedSequence(torch.randn(n, 3, dtype=F64), bs, sorted_indices, unsorted_indices)


@cells
@pytest.mark.parametrize("packed,pattern", [
    # A zero batch size is a zero-length sequence: torch's unpacking corrupts memory.
    (lambda: _packed([2, 0, 1]), r"batch_sizes must be positive and non-increasing.*\[2, 0, 1\]"),
    # Increasing batch sizes: a sequence longer than the ones before it claim.
    (lambda: _packed([1, 2]), r"batch_sizes must be positive and non-increasing"),
    (lambda: _packed([2, -1]), r"batch_sizes must be positive"),
    (lambda: _packed([2, 1], rows=4), r"batch_sizes sum to 3, but data has 4 rows"),
    (lambda: _packed([], rows=0), r"batch_sizes must be a non-empty 1-D int64"),
    (lambda: PackedSequence(torch.randn(3, 3, dtype=F64), torch.tensor([2, 1], dtype=torch.int32)),
     r"batch_sizes must be a non-empty 1-D int64 CPU tensor, got torch.int32"),
    # Permutations that do not match the batch.
    (lambda: _packed([2, 1], sorted_indices=torch.tensor([0, 1, 2]),
                     unsorted_indices=torch.tensor([0, 1, 2])),
     r"sorted_indices must be an int64 permutation of range\(2\)"),
    (lambda: _packed([2, 1], sorted_indices=torch.tensor([1, 0]),
                     unsorted_indices=torch.tensor([1, 1])),
     r"unsorted_indices must be an int64 permutation of range\(2\)"),
], ids=["zero", "increasing", "negative", "sum", "empty", "int32", "sorted_len", "unsorted_perm"])
def test_malformed_packed_lengths_raise(cell, packed, pattern):
    _, ours = make(cell, input_size=3, hidden_size=4)
    with pytest.raises(ValueError, match=f"{cell.ours.__name__}: PackedSequence {pattern}"):
        ours(packed())


@cells
def test_permutations_are_checked_at_every_call_on_the_cpu(cell):
    """A pack that passed once and was then changed in place is refused at the next call."""
    _, ours = make(cell, input_size=3, hidden_size=4)
    packed = pack_padded_sequence(torch.randn(4, 3, 3, dtype=F64), torch.tensor([2, 4, 3]),
                                  enforce_sorted=False)
    ours(packed)
    packed.unsorted_indices.data[0] = packed.unsorted_indices[1]  # no longer a permutation
    with pytest.raises(ValueError, match=r"unsorted_indices must be an int64 permutation"):
        ours(packed)


def test_checked_permutations_are_remembered_per_version(monkeypatch):
    """On CUDA a pack's index permutations are checked once per version (reading them back
    waits for the GPU): the memo, run here on CPU tensors. A checked tensor is not read again;
    an in-place change, another tensor with the same values, or a tensor that died and whose
    id is reused are checked again; inference tensors are never remembered. Both indices of
    a pack that need a check are read back in one copy (one wait)."""
    from fused_rnn import _sequence
    monkeypatch.setattr(_sequence, "_memo_key", lambda idx: (
        None if idx.is_inference() else (idx._version, idx.data_ptr())))
    reads, copies = [], []
    real_sort, real_cpu = torch.Tensor.sort, torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "sort", lambda t, *a, **k: (reads.append(1),
                                                                   real_sort(t, *a, **k))[1])
    monkeypatch.setattr(torch.Tensor, "cpu", lambda t, *a, **k: (copies.append(1),
                                                                 real_cpu(t, *a, **k))[1])
    data, sizes = torch.zeros(3, 1), torch.tensor([3])

    def is_permutation(idx, other=None):
        try:
            _sequence._check_packed("LSTM", data, sizes, idx, other)
            return True
        except ValueError:
            return False
    idx = torch.tensor([2, 0, 1])
    assert is_permutation(idx) and len(reads) == 1
    assert is_permutation(idx) and len(reads) == 1  # remembered
    idx[0] = 1  # a new version, and no longer a permutation
    assert not is_permutation(idx) and len(reads) == 2
    idx[0] = 2
    assert is_permutation(idx) and len(reads) == 3
    other = idx.clone()
    assert is_permutation(other) and len(reads) == 4
    entries = len(_sequence._CHECKED)
    del other  # its entry goes with it
    assert len(_sequence._CHECKED) == entries - 1
    with torch.inference_mode():
        frozen = torch.tensor([1, 0, 2])
    assert is_permutation(frozen) and is_permutation(frozen)
    assert len(reads) == 6
    copies.clear()
    assert is_permutation(torch.tensor([1, 2, 0]), torch.tensor([2, 0, 1]))
    assert len(reads) == 8 and len(copies) == 1
    assert not is_permutation(torch.tensor([1, 2, 0]), torch.tensor([2, 2, 1]))


def test_pack_rejects_zero_lengths():
    """The public way to build lengths rejects zero lengths before we see them."""
    with pytest.raises(RuntimeError, match="greater than 0"):
        pack_padded_sequence(torch.randn(3, 2, 1), torch.tensor([3, 0]), enforce_sorted=False)


@cells
def test_lengths_longer_than_sequence_raise(cell):
    """pack_padded_sequence accepts lengths > T and returns batch_sizes that claim more
    rows than its data holds; we refuse that pack instead of reading past the data."""
    packed = pack_padded_sequence(torch.randn(3, 2, 3, dtype=F64), torch.tensor([4, 1]),
                                  enforce_sorted=False)
    _, ours = make(cell, input_size=3, hidden_size=4)
    with pytest.raises(ValueError, match=r"batch_sizes sum to 5, but data has 4 rows"):
        ours(packed)


def test_op_zero_length_row_keeps_its_state():
    """At the layer op, lengths[b] = 0 is a row that never starts (documented in
    lstm_layer): its final state is its initial state, its output zeros, and its
    gradients pass straight through."""
    gen = torch.Generator().manual_seed(0)
    T, B, I, H = 3, 2, 2, 3
    args = [torch.randn(*s, dtype=F64, generator=gen, requires_grad=True)
            for s in [(T, B, I), (4 * H, I), (4 * H, H), (4 * H,), (4 * H,)]]
    h0, c0 = (torch.randn(B, H, dtype=F64, generator=gen, requires_grad=True) for _ in range(2))
    y, h, c = fused_rnn.ops.lstm_layer(*args, None, h0, c0, torch.tensor([0, 3]))
    assert torch.equal(y[:, 0], torch.zeros(T, H, dtype=F64))
    assert torch.equal(h[0], h0[0]) and torch.equal(c[0], c0[0])
    (y.sum() + (h * 2).sum() + (c * 3).sum()).backward()
    assert torch.equal(h0.grad[0], torch.full((H,), 2.0, dtype=F64))
    assert torch.equal(c0.grad[0], torch.full((H,), 3.0, dtype=F64))
    assert not args[0].grad[:, 0].any()


# ------------------------------------------------------------- state dtype and device

def _inputs_of_form(form):
    if form == "packed":
        return pack_padded_sequence(torch.randn(4, 2, 3, dtype=F64), torch.tensor([2, 4]),
                                    enforce_sorted=False)
    if form == "unbatched":
        return torch.randn(4, 3, dtype=F64)
    return torch.randn(4, 2, 3, dtype=F64)


@cells
@pytest.mark.parametrize("form", ["batched", "unbatched", "packed"])
@pytest.mark.parametrize("bad", [dict(dtype=torch.float32), dict(dtype=torch.int64),
                                 dict(device="meta")], ids=["float32", "int64", "meta"])
def test_state_of_wrong_dtype_or_device_raises(cell, form, bad):
    _, ours = make(cell, input_size=3, hidden_size=4)
    for k, s_name in enumerate(ours.state_names):
        states = list(make_state(cell, 1, 2, 4, unbatched=form == "unbatched")
                      if cell.n_states == 2 else
                      (make_state(cell, 1, 2, 4, unbatched=form == "unbatched"),))
        states[k] = torch.zeros(states[k].shape, **{"dtype": F64, **bad})
        hx = tuple(states) if cell.n_states == 2 else states[0]
        want = bad.get("dtype", F64), bad.get("device", "cpu")
        with pytest.raises(RuntimeError, match=rf"{s_name} must have the input's dtype and "
                                               rf"device \(torch.float64, cpu\), got "
                                               rf"\({want[0]}, {want[1]}\)"):
            ours(_inputs_of_form(form), hx)
