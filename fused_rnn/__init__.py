"""fused_rnn: fused LSTM and GRU kernels for PyTorch, as drop-in torch.nn modules."""
from ._extension import build_info
from ._version import __version__
from . import ops
from .lstm import LSTM

__all__ = ["LSTM", "build_info", "ops", "__version__"]
