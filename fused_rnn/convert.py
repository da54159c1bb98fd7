"""Swap torch.nn's recurrent modules for fused_rnn's inside a model, and back.

A fused module and its torch.nn counterpart hold the same attributes (both are built by
the same torch.nn.RNNBase / RNNCellBase constructor), so a conversion makes a new module of
the other class that takes over the old one's attributes: the very same Parameter objects
(an optimizer built before the conversion keeps working), buffers, hooks, device, dtype
and training mode.
"""
import torch

from .cells import GRUCell, LSTMCell
from .gru import GRU
from .lstm import LSTM

#: (torch.nn class, fused_rnn class) pairs that convert() and to_torch() swap; add a pair
#: here to convert one more kind of module.
PAIRS = [
    (torch.nn.LSTM, LSTM),
    (torch.nn.GRU, GRU),
    (torch.nn.LSTMCell, LSTMCell),
    (torch.nn.GRUCell, GRUCell),
]


def _rebuild(module, cls):
    new = cls.__new__(cls)
    # Copy containers, so that later additions to one module do not show up in the other.
    new.__dict__.update({k: v.copy() if isinstance(v, (dict, list, set)) else v
                         for k, v in module.__dict__.items()})
    return new


def _swap(model, table, after=None):
    # Exact type matches only: a subclass of torch.nn.LSTM may override forward.
    done = {}  # id(old) → new, so a module shared by several parents stays shared

    def convert_one(m):
        cls = table.get(type(m))
        if cls is None:
            return m
        if id(m) not in done:
            done[id(m)] = _rebuild(m, cls)
            if after is not None:
                after(done[id(m)])
        return done[id(m)]

    root = convert_one(model)
    for parent in list(root.modules()):
        for name, child in list(parent._modules.items()):
            if child is not None:
                parent._modules[name] = convert_one(child)
    return root


def convert(model):
    """Replaces every torch.nn.LSTM, GRU, LSTMCell and GRUCell inside `model` (in place) by
    fused_rnn's, keeping weights, device, dtype and training mode, and returns the model
    (the converted module itself when `model` is one of those classes)."""
    return _swap(model, {t: f for t, f in PAIRS})


def _refresh_torch_rnn(m):
    # torch.nn.RNNBase keeps cuDNN's flat weight buffer in sync through flatten_parameters.
    if isinstance(m, torch.nn.RNNBase):
        m.flatten_parameters()


def to_torch(model):
    """The reverse of convert(): replaces every fused_rnn module inside `model` (in place) by
    its torch.nn counterpart and returns the model."""
    return _swap(model, {f: t for t, f in PAIRS}, after=_refresh_torch_rnn)
