"""ONNX export writes torch.nn's graph.

An ONNX model runs on its runtime's kernels, not ours, and ONNX has LSTM, GRU and RNN ops
that torch's exporters emit for torch.nn's modules (and, for the cells, their gate math).
So while torch.onnx.export traces a fused module, the module runs torch.nn's forward on
its own parameters (they are torch.nn's, name for name): the file is the one torch.nn's
module would give, with what torch supports and refuses (a projected LSTM, for one).
"""
import sys

import torch


def exporting_to_onnx():
    """Whether torch.onnx.export (either exporter) is tracing this call. False at no
    cost under torch.compile, which must not trace into torch.onnx."""
    if torch.compiler.is_compiling() and not torch.compiler.is_exporting():
        return False
    onnx = sys.modules.get("torch.onnx")  # not imported: nobody is exporting
    return onnx is not None and onnx.is_in_onnx_export()
