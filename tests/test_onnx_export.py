"""torch.onnx.export of the fused modules writes torch.nn's graph (fused_rnn/_onnx_export.py):
ONNX's LSTM/GRU/RNN ops for the modules, the gate math for the cells, with the same ops as
torch.nn's own module gives, and the file computes what our module computes."""
import pytest
import torch

import fused_rnn

onnx = pytest.importorskip("onnx")
from onnx import reference  # noqa: E402  (after the skip)

CASES = {
    "lstm": (lambda: fused_rnn.LSTM(4, 5, num_layers=2, bidirectional=True, batch_first=True),
             (3, 6, 4)),
    "gru": (lambda: fused_rnn.GRU(4, 5, num_layers=2), (6, 3, 4)),
    "rnn": (lambda: fused_rnn.RNN(4, 5), (6, 3, 4)),
    "lstm_cell": (lambda: fused_rnn.LSTMCell(4, 5), (3, 4)),
    "gru_cell": (lambda: fused_rnn.GRUCell(4, 5), (3, 4)),
    "rnn_cell": (lambda: fused_rnn.RNNCell(4, 5), (3, 4)),
}


def _export(module, x, path, dynamo):
    torch.onnx.export(module, (x,), str(path), dynamo=dynamo)
    return onnx.load(str(path))


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize("case", list(CASES))
def test_onnx_export_is_torch_nn_graph(case, dynamo, tmp_path):
    if dynamo:
        pytest.importorskip("onnxscript")
    make, shape = CASES[case]
    torch.manual_seed(0)
    ours = make().eval()
    ref = fused_rnn.to_torch(ours).eval()
    assert not isinstance(ref, type(ours))
    x = torch.randn(*shape)
    graph = _export(ours, x, tmp_path / "ours.onnx", dynamo)
    ref_graph = _export(ref, x, tmp_path / "ref.onnx", dynamo)
    ops = [n.op_type for n in graph.graph.node]
    assert ops == [n.op_type for n in ref_graph.graph.node]
    if not case.endswith("cell"):
        assert case.upper() in ops or "Tanh" in ops  # ONNX's RNN op, or its unrolled math
    with torch.no_grad():
        want = ours(x)
    want = want[0] if isinstance(want, tuple) else want
    got = reference.ReferenceEvaluator(graph).run(None, {graph.graph.input[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got[0]), want, atol=1e-6, rtol=1e-5)


def test_export_outside_onnx_keeps_the_fused_ops():
    """torch.export without ONNX still captures our op, not torch.nn's."""
    m = fused_rnn.GRU(4, 5)
    x = torch.randn(6, 3, 4)
    ep = torch.export.export(m, (x,))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert any(t.startswith("fused_rnn.") for t in targets)
    assert not any("aten.gru" in t for t in targets)
