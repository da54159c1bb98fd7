"""One benchmark case: a cell, a shape, a mode; and how to build both implementations."""
from dataclasses import asdict, dataclass, replace
from typing import Optional

import torch

import fused_rnn

CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
MODES = ("inference", "training")

# cell -> (fused_rnn attribute, torch.nn class, extra constructor kwargs)
_IMPLS = {
    "lstm": ("LSTM", torch.nn.LSTM, {}),
    "gru": ("GRU", torch.nn.GRU, {}),
    "rnn_tanh": ("RNN", torch.nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": ("RNN", torch.nn.RNN, {"nonlinearity": "relu"}),
}
# The same for the single-step cell modules (Case.step_cell).
_STEP_IMPLS = {
    "lstm": ("LSTMCell", torch.nn.LSTMCell, {}),
    "gru": ("GRUCell", torch.nn.GRUCell, {}),
    "rnn_tanh": ("RNNCell", torch.nn.RNNCell, {"nonlinearity": "tanh"}),
    "rnn_relu": ("RNNCell", torch.nn.RNNCell, {"nonlinearity": "relu"}),
}


@dataclass(frozen=True)
class Case:
    cell: str
    mode: str                   # "inference" (forward under no_grad) or "training" (fwd + bwd)
    seq_len: int
    batch: int
    input_size: int
    hidden_size: int
    layers: int = 1
    bidirectional: bool = False
    proj_size: int = 0          # LSTM only
    varlen: bool = False        # PackedSequence of random lengths in [seq_len // 4, seq_len]
    state: bool = False         # given a random initial state without gradient, as a caller
                                # that carries h_n into its next call (streaming) passes it
    step_cell: bool = False     # the cell modules (torch.nn.LSTMCell, ...): one step per call
                                # on input [B, I] (seq_len 1, one layer, one direction)
    suite: str = "custom"

    def __post_init__(self):
        if self.step_cell and (self.seq_len != 1 or self.layers != 1 or self.bidirectional
                               or self.proj_size or self.varlen):
            raise ValueError("a step_cell case is one step of one layer in one direction "
                             "(seq_len 1, no proj_size or varlen)")

    @property
    def name(self):
        s = f"{self.cell} {self.mode[:5]} T={self.seq_len} B={self.batch} I={self.input_size} " \
            f"H={self.hidden_size}"
        if self.layers > 1:
            s += f" L={self.layers}"
        if self.bidirectional:
            s += " bi"
        if self.proj_size:
            s += f" P={self.proj_size}"
        if self.varlen:
            s += " varlen"
        if self.state:
            s += " state"
        if self.step_cell:
            s += " cell"
        return s

    def as_dict(self):
        return asdict(self)

    def with_(self, **kw):
        return replace(self, **kw)


def fused_class(cell, step_cell=False):
    """fused_rnn's module for a cell, or None while that cell is not part of this build."""
    return getattr(fused_rnn, (_STEP_IMPLS if step_cell else _IMPLS)[cell][0], None)


def make_modules(case, device, dtype, seed=0):
    """(torch.nn module, fused_rnn module) with identical weights, on device in dtype."""
    attr, ref_cls, extra = (_STEP_IMPLS if case.step_cell else _IMPLS)[case.cell]
    ours_cls = fused_class(case.cell, case.step_cell)
    if ours_cls is None:
        raise RuntimeError(f"fused_rnn.{attr} is not available in this build")
    kw = dict(extra) if case.step_cell else dict(
        num_layers=case.layers, bidirectional=case.bidirectional, **extra)
    if case.proj_size:
        kw["proj_size"] = case.proj_size
    torch.manual_seed(seed)
    ref = ref_cls(case.input_size, case.hidden_size, **kw).to(device=device, dtype=dtype)
    ours = ours_cls(case.input_size, case.hidden_size, **kw).to(device=device, dtype=dtype)
    ours.load_state_dict(ref.state_dict())
    train = case.mode == "training"
    ref.train(train)
    ours.train(train)
    return ref, ours


def lengths_for(case, seed=0):
    """Random lengths for a varlen case (int64 CPU), the longest being seq_len."""
    g = torch.Generator().manual_seed(seed + 1)
    lo = max(1, case.seq_len // 4)
    lengths = torch.randint(lo, case.seq_len + 1, (case.batch,), generator=g)
    lengths[0] = case.seq_len
    return lengths


def make_input(case, device, dtype, seed=0):
    """The input both modules get: a [T, B, I] tensor ([B, I] for a step_cell case), or a
    PackedSequence for varlen cases.

    Returns (input, tokens): tokens counts the real (non-padding) time steps of all rows."""
    g = torch.Generator().manual_seed(seed + 2)
    shape = (case.seq_len, case.batch, case.input_size)
    x = torch.randn(shape[1:] if case.step_cell else shape, generator=g, dtype=torch.float64)
    x = x.to(device=device, dtype=dtype)
    if not case.varlen:
        return x, case.seq_len * case.batch
    lengths = lengths_for(case, seed)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    return packed, int(lengths.sum())


def make_state(case, device, dtype, seed=0):
    """The initial state both modules get: None, or for case.state a random h_0 (LSTM:
    (h_0, c_0)) of torch.nn's shapes ([B, H] for a cell), without gradient (a carried state
    is detached)."""
    if not case.state:
        return None
    g = torch.Generator().manual_seed(seed + 4)
    n = case.layers * (2 if case.bidirectional else 1)

    def rand(size):
        shape = (case.batch, size) if case.step_cell else (n, case.batch, size)
        return torch.randn(shape, generator=g, dtype=torch.float64).to(device=device,
                                                                        dtype=dtype)
    if case.cell == "lstm":
        return rand(case.proj_size or case.hidden_size), rand(case.hidden_size)
    return rand(case.hidden_size)


def output_tensor(out):
    """The output sequence as a tensor (the data of a PackedSequence; a cell's new h)."""
    if isinstance(out, torch.Tensor):  # GRUCell, RNNCell
        return out
    y = out[0]
    return y.data if isinstance(y, torch.nn.utils.rnn.PackedSequence) else y


def flat_outputs(out):
    """Output sequence and every final state, as a list of tensors (a cell's new states)."""
    if isinstance(out, torch.Tensor):
        return [out]
    states = out[1] if isinstance(out[1], tuple) else (out[1],)
    return [output_tensor(out), *states]


def input_leaf(inp):
    """The tensor to mark requires_grad in training (the data of a PackedSequence)."""
    return inp.data if isinstance(inp, torch.nn.utils.rnn.PackedSequence) else inp


def with_grad(inp):
    """A copy of the input whose data requires grad (training cases also time dL/dx)."""
    if isinstance(inp, torch.nn.utils.rnn.PackedSequence):
        return inp._replace(data=inp.data.detach().requires_grad_(True))
    return inp.detach().requires_grad_(True)
