"""fused_rnn.LSTM: torch.nn.LSTM with the time loop fused in C++/CUDA."""
from .ops import lstm_layer
from .rnn_base import FusedRNNBase


class LSTM(FusedRNNBase):
    """Drop-in for torch.nn.LSTM: the same constructor arguments
    (input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, proj_size=0, device=None, dtype=None), parameters, init,
    state_dict, inputs and outputs. forward(input, (h_0, c_0)=None) →
    (output, (h_n, c_n)).
    """

    state_names = ("h_0", "c_0")

    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)

    def state_sizes(self):
        return (self.proj_size or self.hidden_size, self.hidden_size)

    def cpu_autocast_lowers(self, packed):
        # oneDNN's LSTM (padded, no projection) or the projection's linear (_autocast.py).
        return self.proj_size > 0 or not packed

    def run_layer(self, x, w, state, lengths, reverse):
        h0, c0 = state
        y, h_n, c_n = lstm_layer(x, *w, h0, c0, lengths, reverse)
        return y, (h_n, c_n)
