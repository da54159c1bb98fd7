"""fused_rnn.LSTM: torch.nn.LSTM with the time loop fused in C++/CUDA."""
import torch

from .ops import lstm_layer
from .rnn_base import FusedRNNBase


class LSTM(FusedRNNBase):
    """Drop-in for torch.nn.LSTM: the same constructor arguments
    (input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, proj_size=0, device=None, dtype=None), parameters, init,
    state_dict, inputs and outputs. forward(input, (h_0, c_0)=None) →
    (output, (h_n, c_n)).
    """

    torch_class = torch.nn.LSTM  # whose forward an ONNX export runs (_onnx_export.py)
    state_names = ("h_0", "c_0")

    # The helpers torch.nn.LSTM adds to RNNBase for its pair of states, for subclasses and
    # copied forward code that call them (RNNBase's take one tensor). torch's own functions:
    # they read only the constructor's attributes, which these modules share.
    get_expected_cell_size = torch.nn.LSTM.get_expected_cell_size
    check_forward_args = torch.nn.LSTM.check_forward_args
    permute_hidden = torch.nn.LSTM.permute_hidden

    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)

    def state_sizes(self):
        return (self.proj_size or self.hidden_size, self.hidden_size)

    def cpu_autocast_lowers(self, x, packed):
        # The projection's linear, or oneDNN's LSTM: padded input without projection, where
        # oneDNN is enabled and takes x's dtype (float32 or bfloat16; its float16 LSTM runs
        # only without grad on CPUs with float16 arithmetic; _autocast.py).
        return self.proj_size > 0 or (not packed and torch.backends.mkldnn.enabled
                                      and x.dtype in (torch.float32, torch.bfloat16))

    def carried_state(self, hx):
        c0 = hx[1] if isinstance(hx, (tuple, list)) and len(hx) == 2 else None
        return c0 if isinstance(c0, torch.Tensor) else None

    def run_layer(self, x, w, state, lengths, reverse):
        h0, c0 = state
        y, h_n, c_n = lstm_layer(x, *w, h0, c0, lengths, reverse)
        return y, (h_n, c_n)
