"""Under torch.autocast("cpu") every module and cell returns the dtypes torch.nn's returns
(which differ by module: fused_rnn/_autocast.py), values within the autocast dtype's
precision of torch.nn's, and gradients in the parameters' and input's own dtypes."""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fused_rnn

T, B, I, H = 6, 3, 5, 16
LENGTHS = [6, 4, 2]

MODULES = [
    ("LSTM", {}),
    ("LSTM", {"num_layers": 2, "bidirectional": True}),
    ("LSTM", {"proj_size": 4}),
    ("LSTM", {"proj_size": 4, "num_layers": 2, "batch_first": True}),
    ("GRU", {}),
    ("GRU", {"num_layers": 2, "bidirectional": True}),
    ("RNN", {}),
    ("RNN", {"nonlinearity": "relu", "batch_first": True}),
]
FORMS = ["padded", "unbatched", "packed", "with_state"]


def _pair(name, kwargs):
    torch.manual_seed(0)
    ref = getattr(torch.nn, name)(I, H, **kwargs)
    ours = getattr(fused_rnn, name)(I, H, **kwargs)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _flat(out):
    """Every tensor a module or cell returned (a PackedSequence's data), in order."""
    if isinstance(out, torch.nn.utils.rnn.PackedSequence):
        return [out.data]
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for part in out for t in _flat(part)]


def _input(form, batch_first):
    torch.manual_seed(1)
    x = torch.randn(T, B, I)
    if form == "unbatched":
        return x[:, 0].clone()
    if form == "packed":
        return pack_padded_sequence(x, LENGTHS)
    return x.transpose(0, 1).contiguous() if batch_first else x


def _run(module, form, x, dtype):
    with torch.autocast("cpu", dtype=dtype):
        out = module(x)
        if form == "with_state":  # the states autocast returned, fed back in
            out = module(x, out[1])
    return out


def _loss(outs):
    # Fixed random weights, so every output element carries a distinct gradient.
    g = torch.Generator().manual_seed(2)
    return sum((t.float() * torch.randn(t.shape, generator=g)).sum() for t in outs)


def _torch_runs(name, kwargs, form, dtype):
    # oneDNN has no float16 LSTM on this CPU: torch.nn.LSTM on padded input without
    # projection (oneDNN's case) raises there.
    return not (dtype == torch.float16 and name == "LSTM" and not kwargs.get("proj_size")
                and form != "packed")


def _check_against(ref_outs, outs, tol):
    assert [t.dtype for t in outs] == [t.dtype for t in ref_outs]
    for r, o in zip(ref_outs, outs):
        torch.testing.assert_close(o.float(), r.float(), atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name,kwargs", MODULES, ids=lambda v: str(v))
def test_modules_match_torch_nn_under_cpu_autocast(name, kwargs, form, dtype):
    ref, ours = _pair(name, kwargs)
    tol = 3e-2 if dtype == torch.bfloat16 else 5e-3
    x_ref = _input(form, kwargs.get("batch_first", False))
    x_ours = _input(form, kwargs.get("batch_first", False))
    for x in (x_ref, x_ours):
        (x.data if form == "packed" else x).requires_grad_()
    ours_out = _flat(_run(ours, form, x_ours, dtype))
    if _torch_runs(name, kwargs, form, dtype):
        ref_out = _flat(_run(ref, form, x_ref, dtype))
    else:
        # torch.nn raises; the reference is torch.nn in float32 with the dtypes torch.nn's
        # bfloat16 run returns (all in the autocast dtype).
        ref_out = [t.to(dtype) for t in _flat(ref(x_ref) if form != "with_state"
                                               else ref(x_ref, ref(x_ref)[1]))]
    _check_against(ref_out, ours_out, tol)

    _loss(ref_out).backward()
    _loss(ours_out).backward()
    grads = [(x_ref.data if form == "packed" else x_ref).grad,
             *(p.grad for p in ref.parameters())]
    our_grads = [(x_ours.data if form == "packed" else x_ours).grad,
                 *(p.grad for p in ours.parameters())]
    assert all(g.dtype == torch.float32 for g in our_grads)
    for r, o in zip(grads, our_grads):
        # Gradients sum over steps and rows: a looser bound, relative to their size.
        torch.testing.assert_close(o, r, atol=4 * tol * max(1.0, r.abs().max().item()),
                                   rtol=4 * tol)


CELLS = ["LSTMCell", "GRUCell", "RNNCell"]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("name", CELLS)
def test_cells_match_torch_nn_under_cpu_autocast(name, batched, dtype):
    torch.manual_seed(0)
    ref = getattr(torch.nn, name)(I, H)
    ours = getattr(fused_rnn, name)(I, H)
    ours.load_state_dict(ref.state_dict())
    tol = 3e-2 if dtype == torch.bfloat16 else 5e-3
    x = torch.randn(B, I) if batched else torch.randn(I)
    outs = []
    for cell in (ref, ours):
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=dtype):
            state = cell(xi)
            state2 = cell(xi, state)  # the state autocast returned, fed back in
        flat = _flat(state) + _flat(state2)
        _loss(flat).backward()
        outs.append((flat, [xi.grad, *(p.grad for p in cell.parameters())]))
    (ref_flat, ref_grads), (our_flat, our_grads) = outs
    _check_against(ref_flat, our_flat, tol)
    for r, o in zip(ref_grads, our_grads):
        assert o.dtype == torch.float32
        torch.testing.assert_close(o, r, atol=4 * tol * max(1.0, r.abs().max().item()),
                                   rtol=4 * tol)


def test_autocast_off_inside_keeps_float32():
    """torch.autocast("cpu", enabled=False) inside an autocast region: float32 again, and
    the C++ module route (bit-identical to the Python route, tests/test_module_route.py)
    runs again."""
    _, ours = _pair("LSTM", {})
    x = torch.randn(T, B, I)
    with torch.autocast("cpu"):
        with torch.autocast("cpu", enabled=False):
            y, (h, c) = ours(x)
    assert y.dtype == h.dtype == c.dtype == torch.float32
    torch.testing.assert_close(y, ours(x)[0], atol=0, rtol=0)


def test_float64_module_is_not_cast():
    """autocast leaves float64 alone, as torch.nn's modules' float64 runs are."""
    ref, ours = _pair("LSTM", {})
    ref.double()
    ours.double()
    x = torch.randn(T, B, I, dtype=torch.float64)
    with torch.autocast("cpu"):
        ref_out, ours_out = _flat(ref(x)), _flat(ours(x))
    assert [t.dtype for t in ours_out] == [torch.float64] * 3
    for r, o in zip(ref_out, ours_out):
        torch.testing.assert_close(o, r, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_compiled_module_under_cpu_autocast(name):
    """torch.compile traces the same dtype choice: the compiled module's outputs and gradients
    have torch.nn's dtypes under autocast."""
    ref, ours = _pair(name, {})
    compiled = torch.compile(ours, fullgraph=True, backend="aot_eager")
    x = torch.randn(T, B, I)
    with torch.autocast("cpu"):
        ref_out, ours_out = _flat(ref(x)), _flat(compiled(x))
    _check_against(ref_out, ours_out, 3e-2)
    _loss(ours_out).backward()
    assert all(p.grad.dtype == torch.float32 for p in ours.parameters())


def _state(name, kwargs, form, dtypes):
    """hx for the module in `form`, its tensors in dtypes (h, then c for the LSTM)."""
    torch.manual_seed(3)
    L = kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
    sizes = [kwargs.get("proj_size") or H, H] if name == "LSTM" else [H]
    shape = (lambda f: (L, f)) if form == "unbatched" else (lambda f: (L, B, f))
    hx = tuple(torch.randn(shape(f)).to(dt).requires_grad_() for f, dt in zip(sizes, dtypes))
    return hx if name == "LSTM" else hx[0]


STATE_DTYPES = {
    "bf16": (torch.bfloat16, torch.bfloat16),
    "fp16": (torch.float16, torch.float16),
    "h_bf16": (torch.bfloat16, torch.float32),  # what a projected LSTM returns
    "c_bf16": (torch.float32, torch.bfloat16),
}


@pytest.mark.parametrize("autocast_dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("states", list(STATE_DTYPES))
@pytest.mark.parametrize("form", ["padded", "unbatched", "packed"])
@pytest.mark.parametrize("name,kwargs", MODULES, ids=lambda v: str(v))
def test_states_of_other_dtypes_under_cpu_autocast(name, kwargs, form, states, autocast_dtype):
    """States another module returned under autocast (an encoder's bfloat16 h and c fed to
    a decoder): torch.nn's modules that add the state in unlowered return promote(autocast
    dtype, the state's dtype), so a bfloat16 state gives bfloat16 results."""
    if name != "LSTM" and states in ("h_bf16", "c_bf16"):
        pytest.skip("one state")
    ref, ours = _pair(name, kwargs)
    x = _input(form, kwargs.get("batch_first", False))
    hx = _state(name, kwargs, form, STATE_DTYPES[states])
    try:
        with torch.autocast("cpu", dtype=autocast_dtype):
            ref_out = _flat(ref(x, hx))
    except RuntimeError as e:  # e.g. oneDNN's float16 LSTM, or autocast mixing fp16 and bf16
        pytest.skip(f"torch.nn raises here: {e}"[:120])
    with torch.autocast("cpu", dtype=autocast_dtype):
        ours_out = _flat(ours(x, hx))
    _check_against(ref_out, ours_out, 3e-2)


@pytest.mark.parametrize("autocast_dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("x_dtype", [torch.bfloat16, torch.float16], ids=["x_bf16", "x_fp16"])
@pytest.mark.parametrize("with_hx", [False, True], ids=["zeros", "hx_float32"])
@pytest.mark.parametrize("form", ["padded", "packed"])
@pytest.mark.parametrize("name,kwargs", MODULES[::2], ids=lambda v: str(v))
def test_half_input_to_float32_module_under_cpu_autocast(name, kwargs, form, with_hx, x_dtype,
                                                         autocast_dtype):
    ref, ours = _pair(name, kwargs)
    x = _input(form, kwargs.get("batch_first", False))
    if form == "packed":
        x = torch.nn.utils.rnn.PackedSequence(x.data.to(x_dtype), x.batch_sizes)
    else:
        x = x.to(x_dtype)
    hx = _state(name, kwargs, "padded", (torch.float32, torch.float32)) if with_hx else None
    try:
        with torch.autocast("cpu", dtype=autocast_dtype):
            ref_out = _flat(ref(x, hx))
    except RuntimeError as e:
        pytest.skip(f"torch.nn raises here: {e}"[:120])
    with torch.autocast("cpu", dtype=autocast_dtype):
        ours_out = _flat(ours(x, hx))
    _check_against(ref_out, ours_out, 3e-2)


@pytest.mark.parametrize("states", ["bf16", "c_bf16", "h_bf16", "none"])
@pytest.mark.parametrize("name", CELLS)
def test_cells_with_states_of_other_dtypes_under_cpu_autocast(name, states):
    torch.manual_seed(0)
    ref = getattr(torch.nn, name)(I, H)
    ours = getattr(fused_rnn, name)(I, H)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(B, I)
    if states == "none":
        hx = None
    else:
        h_dt, c_dt = STATE_DTYPES[states]
        hx = (torch.randn(B, H).to(h_dt), torch.randn(B, H).to(c_dt))
        hx = hx if name == "LSTMCell" else hx[1 if states == "c_bf16" else 0]
    for x_dtype in (torch.float32, torch.bfloat16):
        with torch.autocast("cpu"):
            ref_out, ours_out = _flat(ref(x.to(x_dtype), hx)), _flat(ours(x.to(x_dtype), hx))
        _check_against(ref_out, ours_out, 3e-2)


def test_lstm_without_onednn_under_cpu_autocast():
    """torch.nn's LSTM lowers because oneDNN runs it: with oneDNN off, ATen's cell runs and
    the results stay float32; ours follow."""
    ref, ours = _pair("LSTM", {})
    x = torch.randn(T, B, I)
    with torch.backends.mkldnn.flags(enabled=False), torch.autocast("cpu"):
        ref_out, ours_out = _flat(ref(x)), _flat(ours(x))
    assert [t.dtype for t in ref_out] == [torch.float32] * 3
    _check_against(ref_out, ours_out, 3e-2)


def test_mixed_weight_dtypes_under_cpu_autocast():
    """A later layer's weights in bfloat16 (autocast casts every weight): torch.nn runs, so
    do both our routes (the C++ route leaves it to the Python one)."""
    ref, ours = _pair("GRU", {"num_layers": 2})
    with torch.no_grad():
        for m in (ref, ours):
            m.weight_hh_l1.data = m.weight_hh_l1.data.bfloat16()
    x = torch.randn(T, B, I)
    with torch.autocast("cpu"):
        ref_out, ours_out = _flat(ref(x)), _flat(ours(x))
    _check_against(ref_out, ours_out, 3e-2)
