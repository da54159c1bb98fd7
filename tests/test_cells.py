"""fused_rnn.LSTMCell and fused_rnn.GRUCell against torch.nn.LSTMCell / GRUCell."""
import pytest
import torch

import fused_rnn
from _parity import assert_same, twin

B, I, H = 3, 4, 11

CELLS = {"LSTMCell": (torch.nn.LSTMCell, fused_rnn.LSTMCell, 2),
         "GRUCell": (torch.nn.GRUCell, fused_rnn.GRUCell, 1)}


def make_pair(kind, dtype, bias=True):
    ref_cls, our_cls, _ = CELLS[kind]
    torch.manual_seed(0)
    return twin(ref_cls, our_cls, dtype=dtype, input_size=I, hidden_size=H, bias=bias)


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_state", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_cell_parity(kind, dtype, batched, with_state, bias):
    ref, ours = make_pair(kind, dtype, bias)
    n_states = CELLS[kind][2]
    shape = (B,) if batched else ()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, I, generator=gen, dtype=dtype)
    hx = None
    if with_state:
        states = tuple(torch.randn(*shape, H, generator=gen, dtype=dtype)
                       for _ in range(n_states))
        hx = states if kind == "LSTMCell" else states[0]
    assert_same(ref, ours, x, hx, dtype)


class Unrolled(torch.nn.Module):
    """A cell stepped over a sequence in Python, as cells are used."""

    def __init__(self, cell):
        super().__init__()
        self.cell = cell

    def forward(self, xs):
        state = None
        outs = []
        for x in xs:
            state = self.cell(x, state)
            outs.append(state[0] if isinstance(state, tuple) else state)
        return torch.stack(outs), state


@pytest.mark.parametrize("kind", list(CELLS))
def test_unrolled_cell_gradients_through_state(kind):
    ref, ours = make_pair(kind, torch.float64)
    xs = torch.randn(6, B, I, dtype=torch.float64)
    assert_same(Unrolled(ref), Unrolled(ours), xs, None, torch.float64)


@pytest.mark.parametrize("kind", list(CELLS))
def test_parameters_state_dict_and_init(kind):
    ref_cls, our_cls, _ = CELLS[kind]
    torch.manual_seed(3)
    ref = ref_cls(I, H)
    torch.manual_seed(3)
    ours = our_cls(I, H)
    assert isinstance(ours, torch.nn.RNNCellBase) and not isinstance(ours, ref_cls)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    for (n, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p, q, atol=0, rtol=0)
    ref.load_state_dict(our_cls(I, H).state_dict())
    ours.load_state_dict(ref_cls(I, H).state_dict())
    assert repr(ours) == repr(ref)
    no_bias = our_cls(I, H, bias=False)
    assert no_bias.bias_ih is None and list(no_bias.state_dict()) == ["weight_ih", "weight_hh"]


@pytest.mark.parametrize("kind", list(CELLS))
def test_compile_fullgraph(kind):
    ref, ours = make_pair(kind, torch.float32)
    xs = torch.randn(3, B, I)
    compiled = torch.compile(Unrolled(ours), fullgraph=True, backend="aot_eager")
    assert_same(Unrolled(ref), compiled, xs, None, torch.float32)


def test_bad_inputs():
    lstm, gru = fused_rnn.LSTMCell(I, H), fused_rnn.GRUCell(I, H)
    x = torch.randn(B, I)
    with pytest.raises(ValueError, match="GRUCell: Expected input to be 1D or 2D, got 3D"):
        gru(torch.randn(1, B, I))
    with pytest.raises(RuntimeError, match="GRUCell: input has inconsistent input_size"):
        gru(torch.randn(B, I + 1))
    with pytest.raises(RuntimeError, match="GRUCell: Expected hx size \\[3, 11\\], got \\[2"):
        gru(x, torch.randn(2, H))
    with pytest.raises(RuntimeError, match="GRUCell: for 2D input, hx must be 2D"):
        gru(x, torch.randn(H))
    with pytest.raises(RuntimeError, match="weights' dtype"):
        gru(x.double())
    with pytest.raises(TypeError, match="LSTMCell: hx must be a tuple"):
        lstm(x, torch.randn(B, H))
    with pytest.raises(RuntimeError, match="LSTMCell: Expected hx\\[1\\] size \\[3, 11\\]"):
        lstm(x, (torch.randn(B, H), torch.randn(B, H + 1)))
    with pytest.raises(RuntimeError, match="LSTMCell: hx\\[0\\] must have the input's dtype"):
        lstm(x, (torch.randn(B, H, dtype=torch.float64), torch.randn(B, H)))
