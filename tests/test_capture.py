"""Ways users capture a model besides torch.compile (tested in each cell's file):
torch.jit.trace and torch.export run our ops; torch.jit.script (deprecated in torch)
cannot compile our Python forward and must say so clearly, naming the way out."""
import warnings

import pytest
import torch

import fused_rnn

from _parity import twin

MODULES = [(torch.nn.LSTM, fused_rnn.LSTM, dict(num_layers=2, proj_size=3)),
           (torch.nn.GRU, fused_rnn.GRU, dict(bidirectional=True)),
           (torch.nn.RNN, fused_rnn.RNN, dict(nonlinearity="relu"))]
IDS = ["lstm", "gru", "rnn"]


def _flat(out):
    return [t for item in out for t in (item if isinstance(item, tuple) else (item,))]


@pytest.mark.parametrize("ref_cls,our_cls,extra", MODULES, ids=IDS)
def test_jit_trace_runs_our_ops(ref_cls, our_cls, extra):
    torch.manual_seed(0)
    ref, ours = twin(ref_cls, our_cls, input_size=4, hidden_size=5, **extra)
    x = torch.randn(6, 2, 4, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trace's warnings about Python-side checks
        traced = torch.jit.trace(ours, (x,))
    assert "fused_rnn::" in str(traced.inlined_graph)
    x2 = torch.randn(6, 2, 4, dtype=torch.float64)  # a new input of the traced shape
    for a, b in zip(_flat(traced(x2)), _flat(ref(x2))):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("ref_cls,our_cls,extra", MODULES, ids=IDS)
def test_export_runs_our_ops(ref_cls, our_cls, extra):
    torch.manual_seed(1)
    ref, ours = twin(ref_cls, our_cls, input_size=4, hidden_size=5, **extra)
    x = torch.randn(6, 2, 4, dtype=torch.float64)
    ep = torch.export.export(ours, (x,))
    assert "fused_rnn" in str(ep.graph)
    for a, b in zip(_flat(ep.module()(x)), _flat(ref(x))):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("module", [fused_rnn.LSTM(3, 4), fused_rnn.GRU(3, 4), fused_rnn.RNN(3, 4),
                                    fused_rnn.LSTMCell(3, 4), fused_rnn.GRUCell(3, 4),
                                    fused_rnn.RNNCell(3, 4)],
                         ids=["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"])
def test_jit_script_says_what_to_do(module):
    model = torch.nn.Sequential(module)  # also when the fused module is a submodule
    name = type(module).__name__
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation warning
        with pytest.raises(RuntimeError, match=rf"fused_rnn\.{name} cannot be compiled by "
                                               r"torch\.jit\.script.*fused_rnn\.to_torch"):
            torch.jit.script(model)
        # The way out it names works: the same model scripted with torch.nn's modules.
        torch.jit.script(fused_rnn.to_torch(model))
