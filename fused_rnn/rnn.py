"""fused_rnn.RNN: torch.nn.RNN (Elman, tanh or relu) with the time loop fused in C++/CUDA."""
import torch

from .ops import rnn_layer
from .rnn_base import FusedRNNBase


class RNN(FusedRNNBase):
    """Drop-in for torch.nn.RNN: the same constructor arguments
    (input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None),
    parameters, init, state_dict, inputs and outputs. forward(input, h_0=None) →
    (output, h_n).
    """

    torch_class = torch.nn.RNN  # whose forward an ONNX export runs (_onnx_export.py)
    state_names = ("h_0",)

    def __init__(self, *args, **kwargs):
        # torch.nn.RNN's own argument handling: nonlinearity is the 4th positional
        # argument or a keyword, and picks the mode RNNBase is built with.
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if len(args) > 3:
            self.nonlinearity = args[3]
            args = args[:3] + args[4:]
        else:
            self.nonlinearity = kwargs.pop("nonlinearity", "tanh")
        if self.nonlinearity == "tanh":
            mode = "RNN_TANH"
        elif self.nonlinearity == "relu":
            mode = "RNN_RELU"
        else:
            raise ValueError(
                f"Unknown nonlinearity '{self.nonlinearity}'. Select from 'tanh' or 'relu'.")
        super().__init__(mode, *args, **kwargs)

    def state_sizes(self):
        return (self.hidden_size,)

    def cpu_autocast_lowers(self, x, packed):
        return True  # torch.nn.RNN's state is the sum of two linears (_autocast.py)

    def run_layer(self, x, w, state, lengths, reverse):
        (h0,) = state
        # The mode, not self.nonlinearity, is what torch.nn.RNN runs by.
        act = "relu" if self.mode == "RNN_RELU" else "tanh"
        w_ih, w_hh, b_ih, b_hh, _ = w
        y, h_n = rnn_layer(x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse, act)
        return y, (h_n,)
