"""fused_rnn: fused LSTM and GRU kernels for PyTorch, as drop-in torch.nn modules."""
from ._extension import build_info
from ._version import __version__
from . import ops
from .lstm import LSTM
from .rnn import RNN
from .rnn_cell import RNNCell

__all__ = ["LSTM", "RNN", "RNNCell", "build_info", "ops", "__version__"]
