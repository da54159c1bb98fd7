"""fused_rnn.convert / fused_rnn.to_torch on a model that mixes recurrent and other layers."""
import copy

import torch

import fused_rnn
from _parity import assert_same


class Mixed(torch.nn.Module):
    def __init__(self, dtype=torch.float64):
        super().__init__()
        kw = dict(dtype=dtype)
        self.embed = torch.nn.Linear(4, 6, **kw)
        self.lstm = torch.nn.LSTM(6, 5, num_layers=2, bidirectional=True, batch_first=True, **kw)
        self.blocks = torch.nn.ModuleList([
            torch.nn.GRU(10, 7, **kw),
            torch.nn.Sequential(torch.nn.Tanh(), torch.nn.Linear(7, 7, **kw)),
        ])
        self.lstm_cell = torch.nn.LSTMCell(7, 3, **kw)
        self.gru_cell = torch.nn.GRUCell(3, 3, bias=False, **kw)
        self.head = torch.nn.Linear(3, 2, **kw)

    def forward(self, x):
        h = self.embed(x)
        h, (h_n, _) = self.lstm(h)
        h, _ = self.blocks[0](h.transpose(0, 1))
        h = self.blocks[1](h)
        state = None
        for step in h:  # cells over time, as they are used
            state = self.lstm_cell(step, state)
            g = self.gru_cell(state[0], state[0])
        return self.head(g) + h_n.sum()


RECURRENT = (torch.nn.LSTM, torch.nn.GRU, torch.nn.LSTMCell, torch.nn.GRUCell)


def test_convert_keeps_outputs_gradients_and_parameters():
    torch.manual_seed(0)
    ref = Mixed()
    model = copy.deepcopy(ref)
    params_before = dict(model.named_parameters())
    out = fused_rnn.convert(model)
    assert out is model
    assert type(model.lstm) is fused_rnn.LSTM and type(model.blocks[0]) is fused_rnn.GRU
    assert type(model.lstm_cell) is fused_rnn.LSTMCell
    assert type(model.gru_cell) is fused_rnn.GRUCell
    assert not any(isinstance(m, RECURRENT) for m in model.modules())
    assert type(model.embed) is torch.nn.Linear
    # The very same Parameter objects: an optimizer made before the conversion still works.
    for name, p in model.named_parameters():
        assert p is params_before[name]
    assert model.lstm.batch_first and model.lstm.bidirectional and model.lstm.num_layers == 2
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    assert_same(ref, model, x, None, torch.float64)


def test_round_trip_to_torch():
    torch.manual_seed(0)
    ref = Mixed(torch.float32)
    model = fused_rnn.to_torch(fused_rnn.convert(copy.deepcopy(ref)))
    assert type(model.lstm) is torch.nn.LSTM and type(model.gru_cell) is torch.nn.GRUCell
    assert type(model.blocks[0]) is torch.nn.GRU
    x = torch.randn(2, 4, 4)
    assert_same(ref, model, x, None, torch.float32)
    assert list(model.state_dict()) == list(ref.state_dict())


def test_keeps_training_mode_dtype_and_sharing():
    lstm = torch.nn.LSTM(3, 4, dtype=torch.float64).eval()
    model = torch.nn.Sequential(lstm, torch.nn.Identity())
    model.shared = lstm  # one module under two names stays one module
    keys = list(model.state_dict())
    fused_rnn.convert(model)
    assert model[0] is model.shared and type(model.shared) is fused_rnn.LSTM
    assert not model[0].training and model[0].weight_ih_l0.dtype == torch.float64
    assert list(model.state_dict()) == keys


def test_converts_a_bare_module_and_leaves_subclasses_alone():
    gru = torch.nn.GRU(3, 4)
    fused = fused_rnn.convert(gru)
    assert type(fused) is fused_rnn.GRU and fused.weight_hh_l0 is gru.weight_hh_l0
    assert type(fused_rnn.to_torch(fused)) is torch.nn.GRU

    class MyLSTM(torch.nn.LSTM):
        pass
    model = torch.nn.Sequential(MyLSTM(3, 4))
    fused_rnn.convert(model)
    assert type(model[0]) is MyLSTM  # may override forward: not ours to replace


def test_converted_module_is_independent_of_the_original():
    gru = torch.nn.GRU(3, 4)
    fused = fused_rnn.convert(gru)
    fused.extra = torch.nn.Linear(1, 1)
    assert "extra" not in gru._modules


def test_converted_model_compiles_fullgraph():
    torch.manual_seed(0)
    ref = Mixed(torch.float32)
    model = fused_rnn.convert(copy.deepcopy(ref))
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    assert_same(ref, compiled, torch.randn(2, 4, 4), None, torch.float32)


def test_keeps_device():
    model = torch.nn.Sequential(torch.nn.GRU(3, 4, device="meta"),
                                torch.nn.LSTMCell(4, 2, device="meta"))
    fused_rnn.convert(model)
    assert type(model[0]) is fused_rnn.GRU and type(model[1]) is fused_rnn.LSTMCell
    assert all(p.device.type == "meta" for p in model.parameters())
