"""fused_rnn.GRU: torch.nn.GRU with the time loop fused in C++/CUDA."""
import torch

from .ops import gru_layer
from .rnn_base import FusedRNNBase


class GRU(FusedRNNBase):
    """Drop-in for torch.nn.GRU: the same constructor arguments
    (input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, device=None, dtype=None), parameters, init, state_dict, inputs
    and outputs. forward(input, h_0=None) → (output, h_n).
    """

    torch_class = torch.nn.GRU  # whose forward an ONNX export runs (_onnx_export.py)
    state_names = ("h_0",)

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:  # as torch.nn.GRU
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, **kwargs)

    def state_sizes(self):
        return (self.hidden_size,)

    def cpu_autocast_lowers(self, x, packed):
        return False  # torch.nn.GRU's update adds the input-dtype state (_autocast.py)

    def run_layer(self, x, w, state, lengths, reverse):
        (h0,) = state
        w_ih, w_hh, b_ih, b_hh, _ = w
        y, h_n = gru_layer(x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse)
        return y, (h_n,)
