"""float16 on the CPU, where torch.nn's RNNs accept it too: the modules and cells take and
return float16 (outputs, states, gradients), computing in float32 inside as for bfloat16.

Each case runs three twins on the same weights: ours in float16, torch.nn in float16 and
torch.nn in float32. Ours must be within twice torch.nn's own float16 distance from the
float32 answer, or within 4e-3 of it relative to its size (measured: ours is the closer).
"""
import pytest
import torch

import fused_rnn

from _parity import STEP_CELL_IDS, STEP_CELLS, twin

# float16 keeps 11 significant bits: one rounding of a value of size ~1 is ~5e-4.
ATOL = 1e-2

MODULES = [
    (torch.nn.LSTM, fused_rnn.LSTM, {}),
    (torch.nn.LSTM, fused_rnn.LSTM, dict(proj_size=5, bidirectional=True)),
    (torch.nn.GRU, fused_rnn.GRU, dict(bidirectional=True)),
    (torch.nn.RNN, fused_rnn.RNN, dict(nonlinearity="tanh")),
    (torch.nn.RNN, fused_rnn.RNN, dict(nonlinearity="relu")),
]


def _flat(out):
    return [t for item in out for t in (item if isinstance(item, tuple) else (item,))]


def _run(module, x, state):
    x = x.detach().requires_grad_()
    out = _flat(module(x, state) if state is not None else module(x))
    # A fixed, non-uniform weighting of every output, so every gradient path is checked.
    loss = sum((o.float() * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in out)
    loss.backward()
    grads = [x.grad] + [p.grad for p in module.parameters()]
    return out, grads


def _assert_close_as_torch(ours, ref16, ref32, what):
    for k, (a, b, c) in enumerate(zip(ours, ref16, ref32)):
        assert a.dtype == b.dtype == torch.float16, (what, k, a.dtype, b.dtype)
        assert a.shape == b.shape, (what, k)
        err_ours = (a.float() - c.float()).abs().max().item()
        err_torch = (b.float() - c.float()).abs().max().item()
        scale = c.float().abs().max().item()
        bound = max(4e-3 * max(scale, 1.0), 2 * err_torch)
        assert err_ours <= bound, (what, k, err_ours, err_torch)


@pytest.mark.parametrize("ref_cls,our_cls,extra", MODULES,
                         ids=["lstm", "lstm-proj-bi", "gru-bi", "rnn-tanh", "rnn-relu"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_module_float16_matches_torch(ref_cls, our_cls, extra, batch_first):
    torch.manual_seed(0)
    ref32, ours = twin(ref_cls, our_cls, dtype=torch.float32, input_size=6, hidden_size=8,
                       num_layers=2, batch_first=batch_first, **extra)
    ref16, _ = twin(ref_cls, our_cls, dtype=torch.float32, input_size=6, hidden_size=8,
                    num_layers=2, batch_first=batch_first, **extra)
    ref16.load_state_dict(ref32.state_dict())
    ref16.half()
    ours.half()
    x = torch.randn(7, 3, 6).half()
    if batch_first:
        x = x.transpose(0, 1).contiguous()
    out16, g16 = _run(ref16, x, None)
    out_ours, g_ours = _run(ours, x, None)
    out32, g32 = _run(ref32, x.float(), None)
    _assert_close_as_torch(out_ours, out16, [o.float() for o in out32], "outputs")
    _assert_close_as_torch(g_ours, g16, g32, "gradients")


@pytest.mark.parametrize("ref_cls,our_cls", [(torch.nn.LSTM, fused_rnn.LSTM),
                                             (torch.nn.GRU, fused_rnn.GRU)], ids=["lstm", "gru"])
def test_packed_float16_with_initial_state(ref_cls, our_cls):
    torch.manual_seed(1)
    ref32, ours = twin(ref_cls, our_cls, dtype=torch.float32, input_size=4, hidden_size=8)
    ours.half()
    x = torch.randn(6, 3, 4)
    lengths = torch.tensor([6, 2, 4])
    h0 = torch.randn(1, 3, 8)
    state32 = (h0, torch.randn(1, 3, 8)) if ref_cls is torch.nn.LSTM else h0
    state16 = tuple(s.half() for s in state32) if isinstance(state32, tuple) else state32.half()
    pack = torch.nn.utils.rnn.pack_padded_sequence
    y16, s16 = ours(pack(x.half(), lengths, enforce_sorted=False), state16)
    y32, s32 = ref32(pack(x, lengths, enforce_sorted=False), state32)
    assert y16.data.dtype == torch.float16
    torch.testing.assert_close(y16.data.float(), y32.data, atol=ATOL, rtol=ATOL)
    for a, b in zip(_flat((s16,)), _flat((s32,))):
        assert a.dtype == torch.float16
        torch.testing.assert_close(a.float(), b, atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("ref_cls,our_cls", STEP_CELLS, ids=STEP_CELL_IDS)
def test_cells_float16(ref_cls, our_cls):
    torch.manual_seed(2)
    ref, ours = twin(ref_cls, our_cls, dtype=torch.float32, input_size=5, hidden_size=7)
    ours.half()
    x = torch.randn(4, 5)
    out_ours = _flat((ours(x.half()),))
    out_ref = _flat((ref(x),))
    for a, b in zip(out_ours, out_ref):
        assert a.dtype == torch.float16
        torch.testing.assert_close(a.float(), b, atol=ATOL, rtol=ATOL)
