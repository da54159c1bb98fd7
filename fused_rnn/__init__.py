"""fused_rnn: fused LSTM, GRU and RNN kernels for PyTorch, as drop-in torch.nn modules."""
from ._extension import build_info, empty_cpu_cache
from ._version import __version__
from . import ops
from .cells import GRUCell, LSTMCell
from .convert import convert, to_torch
from .gru import GRU
from .lstm import LSTM
from .rnn import RNN
from .rnn_cell import RNNCell

__all__ = ["GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNCell", "build_info", "convert",
           "empty_cpu_cache", "ops", "to_torch", "__version__"]
