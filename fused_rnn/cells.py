"""fused_rnn.LSTMCell and fused_rnn.GRUCell: torch.nn.LSTMCell / GRUCell, one fused step.

A cell step is the layer op run over a sequence of length 1, so cells share the layer
kernels (and their autograd) instead of having ops of their own. We derive from
torch.nn.RNNCellBase, as torch's cells do, so parameters, init, state_dict and repr are
torch's own.
"""
import contextlib

import torch

from ._autocast import autocast_cast, cpu_autocast_dtypes, cuda_cell_autocast_dtype
from ._extension import check_device
from ._no_script import NotScriptable
from ._onnx_export import exporting_to_onnx
from .ops import cell_forward, eager_states, gru_layer, lstm_layer
from .rnn_base import current_weights

_CELL_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", None)  # rnn_base._ROLES


def cell_step(cell, mode, input, hx):
    """A cell's step in one C++ call (fused_rnn::cell_forward, csrc/module_forward.cpp) for
    plain tensors in eager mode, whose Python cost as much as a small step (B = 1,
    H = 128). Returns (new states, weights): the states are [] where the cell's Python
    route must run (and raise its errors), which then takes the weights looked up here
    (None if none were: a parametrization runs once per call)."""
    states = eager_states(input, hx)
    if states is None:
        return [], None
    weights = current_weights(cell, _CELL_WEIGHTS)
    return cell_forward(mode, input, states, weights, cell.input_size, cell.hidden_size), weights


def cell_weights(cell, weights):
    """(weight_ih, weight_hh, bias_ih, bias_hh): cell_step's weights, or looked up now."""
    return (weights or current_weights(cell, _CELL_WEIGHTS))[:4]


def autocast_args(input, weights, states, lowers, carried):
    """(input, weights, states, result dtype, context) of a cell step under autocast:
    - torch.autocast("cpu"): input, weights and states (sequences) cast to the dtype the
      cell computes in, and the dtype its new state must be returned in (lowers: whether
      torch.nn's cell returns the autocast dtype; carried: the state it adds in, c or h,
      or None; _autocast.py);
    - torch.autocast("cuda"): all cast to the autocast dtype, as torch.nn casts every
      argument of its cells (cuda_cell_autocast_dtype), and a context that turns CUDA
      autocast off around the layer op, whose own rule (float16, as torch.nn's modules)
      would recast a bfloat16 cell; the results come back in that dtype (result None);
    - otherwise, or where input is no tensor: all as they are, None, and a context that
      does nothing."""
    if not isinstance(input, torch.Tensor):
        return input, weights, states, None, contextlib.nullcontext()
    low = cuda_cell_autocast_dtype(input)
    if low is not None:
        run, result, context = low, None, torch.autocast("cuda", enabled=False)
    else:
        amp = cpu_autocast_dtypes(input, lowers, carried)
        if amp is None:
            return input, weights, states, None, contextlib.nullcontext()
        run, result, _ = amp
        context = contextlib.nullcontext()

    def cast(t):
        return autocast_cast(t, run) if isinstance(t, torch.Tensor) else t
    return cast(input), [cast(w) for w in weights], [cast(s) for s in states], result, context


def as_result(states, dtype):
    """A cell's new states in dtype (autocast_args' result dtype; None: as they are)."""
    return states if dtype is None else tuple(s.to(dtype) for s in states)


class _FusedCellBase(NotScriptable, torch.nn.RNNCellBase):
    def _batched(self, input, states, w):
        """Checks input and states as torch's cells do (w: weight_ih); returns input
        [1, B, I] (a sequence of one step), the states as [B, H] (zeros when not given) and
        whether the input was batched."""
        name = type(self).__name__
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
        if input.dim() not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if input.shape[-1] != self.input_size:
            raise RuntimeError(f"{name}: input has inconsistent input_size: got "
                               f"{input.shape[-1]} expected {self.input_size}")
        if input.dtype != w.dtype or input.device != w.device:
            raise RuntimeError(f"{name}: input ({input.dtype}, {input.device}) must have the "
                               f"weights' dtype and device ({w.dtype}, {w.device})")
        check_device(name, input.device)
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)
        B = x.shape[0]
        out = []
        for s_name, s in states:
            if s is None:
                out.append(x.new_zeros((B, self.hidden_size)))
                continue
            if not isinstance(s, torch.Tensor):
                raise TypeError(f"{name}: {s_name} must be a Tensor, got {type(s).__name__}")
            if s.dim() != input.dim():
                raise RuntimeError(f"{name}: for {input.dim()}D input, {s_name} must be "
                                 f"{input.dim()}D, got {s.dim()}D")
            s = s if batched else s.unsqueeze(0)
            if tuple(s.shape) != (B, self.hidden_size):
                want = [B, self.hidden_size] if batched else [self.hidden_size]
                raise RuntimeError(f"{name}: Expected {s_name} size {want}, got "
                                   f"{list(s.shape if batched else s.shape[1:])}")
            if s.dtype != x.dtype or s.device != x.device:
                raise RuntimeError(f"{name}: {s_name} must have the input's dtype and device "
                                   f"({x.dtype}, {x.device}), got ({s.dtype}, {s.device})")
            out.append(s)
        return x.unsqueeze(0), out, batched


class LSTMCell(_FusedCellBase):
    """Drop-in for torch.nn.LSTMCell(input_size, hidden_size, bias=True, device=None,
    dtype=None). forward(input, (h, c)=None) → (h', c'); input [B, I] or unbatched [I]."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, num_chunks=4, device=device, dtype=dtype)

    def forward(self, input, hx=None):
        out, weights = cell_step(self, "LSTM", input, hx)
        if out:
            return out[0], out[1]
        if weights is None and exporting_to_onnx():
            return torch.nn.LSTMCell.forward(self, input, hx)
        if hx is None:
            hx = (None, None)  # zeros
        elif not isinstance(hx, (tuple, list)):
            raise TypeError(f"LSTMCell: hx must be a tuple (h, c) of two Tensors, got "
                            f"{type(hx).__name__}")
        elif len(hx) != 2:  # RuntimeError, as torch.nn's "expects two hidden states"
            raise RuntimeError(f"LSTMCell: hx must be a tuple (h, c) of two Tensors, got "
                               f"{len(hx)}")
        elif hx[0] is None or hx[1] is None:  # torch.nn fails on the None too
            raise TypeError("LSTMCell: hx must be a tuple (h, c) of two Tensors, got a None")
        input, (w_ih, w_hh, b_ih, b_hh), hx, result, context = autocast_args(
            input, cell_weights(self, weights), hx, lowers=False, carried=hx[1])
        x, (h0, c0), batched = self._batched(input, [("hx[0]", hx[0]), ("hx[1]", hx[1])], w_ih)
        with context:
            _, h, c = lstm_layer(x, w_ih, w_hh, b_ih, b_hh, None, h0, c0)
        return as_result((h, c) if batched else (h.squeeze(0), c.squeeze(0)), result)


class GRUCell(_FusedCellBase):
    """Drop-in for torch.nn.GRUCell(input_size, hidden_size, bias=True, device=None,
    dtype=None). forward(input, h=None) → h'; input [B, I] or unbatched [I]."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, num_chunks=3, device=device, dtype=dtype)

    def forward(self, input, hx=None):
        out, weights = cell_step(self, "GRU", input, hx)
        if out:
            return out[0]
        if weights is None and exporting_to_onnx():
            return torch.nn.GRUCell.forward(self, input, hx)
        input, (w_ih, w_hh, b_ih, b_hh), (hx,), result, context = autocast_args(
            input, cell_weights(self, weights), (hx,), lowers=False, carried=hx)
        x, (h0,), batched = self._batched(input, [("hx", hx)], w_ih)
        with context:
            _, h = gru_layer(x, w_ih, w_hh, b_ih, b_hh, h0)
        return as_result((h if batched else h.squeeze(0),), result)[0]
