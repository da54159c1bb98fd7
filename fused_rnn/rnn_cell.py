"""fused_rnn.RNNCell: torch.nn.RNNCell as one fused step (the RNN layer op with T = 1)."""
import torch

from ._no_script import NotScriptable
from ._onnx_export import exporting_to_onnx
from .cells import as_result, autocast_args, cell_step, cell_weights
from .ops import rnn_layer

_MODES = {"tanh": "RNN_TANH", "relu": "RNN_RELU"}


class RNNCell(NotScriptable, torch.nn.RNNCellBase):
    """Drop-in for torch.nn.RNNCell: the same constructor arguments
    (input_size, hidden_size, bias=True, nonlinearity='tanh', device=None, dtype=None),
    parameters, init and state_dict. forward(input [B, I] or [I], hx [B, H] or [H] = None)
    → h' of hx's shape.

    Derives torch.nn.RNNCellBase, not torch.nn.RNNCell, so torch.compile traces it.
    """

    __constants__ = ["input_size", "hidden_size", "bias", "nonlinearity"]

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None,
                 dtype=None):
        super().__init__(input_size, hidden_size, bias, num_chunks=1, device=device,
                         dtype=dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):
        mode = _MODES.get(self.nonlinearity) if isinstance(self.nonlinearity, str) else None
        weights = None
        if mode is not None:  # else the checks below raise torch's error
            out, weights = cell_step(self, mode, input, hx)
            if out:
                return out[0]
        if weights is None and exporting_to_onnx():
            return torch.nn.RNNCell.forward(self, input, hx)
        # torch.nn.RNNCell's checks, in its order and with its exception types (where it
        # fails on a non-tensor by accident, an AttributeError, a TypeError that says so).
        for arg, t in (("input", input), ("hx", hx)):
            if t is not None and not isinstance(t, torch.Tensor):
                raise TypeError(f"RNNCell: {arg} must be a Tensor, got {type(t).__name__}")
        if input.dim() not in (1, 2):
            raise ValueError(f"RNNCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None and hx.dim() not in (1, 2):
            raise ValueError(f"RNNCell: Expected hidden to be 1D or 2D, got {hx.dim()}D instead")
        if self.nonlinearity not in ("tanh", "relu"):
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
        input, (w_ih, w_hh, b_ih, b_hh), (hx,), result, context = autocast_args(
            input, cell_weights(self, weights), (hx,), lowers=True, carried=None)
        is_batched = input.dim() == 2
        if not is_batched:
            input = input.unsqueeze(0)
        if hx is None:
            hx = torch.zeros(input.size(0), self.hidden_size, dtype=input.dtype,
                             device=input.device)
        elif not is_batched:
            hx = hx.unsqueeze(0)
        self._check(input, hx, w_ih)
        with context:
            _, h = rnn_layer(input.unsqueeze(0), w_ih, w_hh, b_ih, b_hh, hx, None, False,
                             self.nonlinearity)
        return as_result((h if is_batched else h.squeeze(0),), result)[0]

    def _check(self, input, hx, w):
        """torch's cell checks (same messages), then dtype/device agreement with w
        (weight_ih)."""
        if input.size(1) != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {input.size(1)} "
                               f"expected {self.input_size}")
        if input.size(0) != hx.size(0):
            raise RuntimeError(f"Input batch size {input.size(0)} doesn't match hidden0 batch "
                               f"size {hx.size(0)}")
        if hx.dim() != 2:  # a 2-D hx with 1-D input, or the reverse
            raise RuntimeError(f"RNNCell: hx must be 1-D [hidden_size] for 1-D input and 2-D "
                               f"[batch, hidden_size] for 2-D input, got shape {list(hx.shape)} "
                               f"after matching it to the input")
        if hx.size(1) != self.hidden_size:
            raise RuntimeError(f"hidden0 has inconsistent hidden_size: got {hx.size(1)}, "
                               f"expected {self.hidden_size}")
        for name, t in (("input", input), ("hx", hx)):
            if t.dtype != w.dtype or t.device != w.device:
                raise RuntimeError(f"RNNCell: {name} ({t.dtype}, {t.device}) must have the "
                                   f"weights' dtype and device ({w.dtype}, {w.device})")
