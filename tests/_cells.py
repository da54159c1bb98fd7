"""The recurrent modules the reliability tests cover: every torch.nn class that has a
fused_rnn twin in this build (GRU and RNN join automatically once they exist), plus
helpers to build a module pair and matching inputs for any of them."""
from dataclasses import dataclass, field

import torch

import fused_rnn


@dataclass(frozen=True)
class Cell:
    name: str
    ref: type                      # the torch.nn class
    ours: type                     # the fused_rnn class
    n_states: int                  # 2 for LSTM (h, c), 1 otherwise
    extra: dict = field(default_factory=dict)  # constructor kwargs, e.g. nonlinearity

    @property
    def has_proj(self):
        return self.name == "LSTM"

    def __str__(self):
        return self.name


def _cells():
    cells = [Cell("LSTM", torch.nn.LSTM, fused_rnn.LSTM, 2)]
    if hasattr(fused_rnn, "GRU"):
        cells.append(Cell("GRU", torch.nn.GRU, fused_rnn.GRU, 1))
    if hasattr(fused_rnn, "RNN"):
        cells += [Cell(f"RNN_{nl}", torch.nn.RNN, fused_rnn.RNN, 1, {"nonlinearity": nl})
                  for nl in ("tanh", "relu")]
    return cells


CELLS = _cells()


def make(cell, dtype=torch.float64, **cfg):
    """(torch.nn module, fused_rnn module) with identical weights."""
    cfg = {**cell.extra, **cfg}
    ref = cell.ref(**cfg, dtype=dtype)
    ours = cell.ours(**cfg, dtype=dtype)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def state_sizes(cell, hidden_size, proj_size=0):
    """Feature size of each state tensor (h first)."""
    return (proj_size or hidden_size, hidden_size) if cell.n_states == 2 else (hidden_size,)


def make_state(cell, L, B, hidden_size, proj_size=0, dtype=torch.float64, gen=None,
               unbatched=False):
    """A random initial state in the form the module takes: (h_0, c_0) or h_0."""
    shape = (lambda f: (L, f)) if unbatched else (lambda f: (L, B, f))
    states = tuple(torch.randn(*shape(f), dtype=dtype, generator=gen)
                   for f in state_sizes(cell, hidden_size, proj_size))
    return states if cell.n_states == 2 else states[0]


def outputs(out):
    """Flatten a module's (output, state) into a list of tensors."""
    y, hx = out
    y = y.data if isinstance(y, torch.nn.utils.rnn.PackedSequence) else y
    return [y] + (list(hx) if isinstance(hx, tuple) else [hx])
