"""The input forms torch.nn's recurrent modules accept, mapped to one time-major batch.

Batched (T, B, I), batch_first (B, T, I), unbatched (T, I) and PackedSequence inputs all
become x [T, B, I] plus optional per-row lengths (int64, CPU) for the layer ops; outputs
are mapped back to the form that came in.
"""
import weakref
from dataclasses import dataclass
from typing import Optional

import torch
from torch.nn.utils.rnn import PackedSequence


class _Scatter(torch.autograd.Function):
    """rows [N, F] -> [T*B, F] zeros with out[index[i]] = rows[i] (index: distinct rows).
    setup_context style, so torch.func's grad transforms can run it (both Functions)."""

    @staticmethod
    def forward(rows, index, total):
        return rows.new_zeros(total, rows.shape[1]).index_copy_(0, index, rows)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, index, _ = inputs
        ctx.save_for_backward(index)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        return _Gather.apply(grad, index), None, None


class _Gather(torch.autograd.Function):
    """full [T*B, F] -> rows [N, F] = full[index]; its gradient scatters back (no atomics)."""

    @staticmethod
    def forward(full, index):
        return full.index_select(0, index)

    @staticmethod
    def setup_context(ctx, inputs, output):
        full, index = inputs
        ctx.save_for_backward(index)
        ctx.total = full.shape[0]

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        return _Scatter.apply(grad, index, ctx.total), None


def _packed_layout(batch_sizes):
    """For PackedSequence batch_sizes [T]: the flat time-major position t*B + b of every
    packed row (rows of step t are batch rows 0..batch_sizes[t]-1, in order) and each batch
    row's length. One gather/scatter then replaces torch's pad/pack, which copy step by step
    in forward and backward (on CUDA a kernel per step each way)."""
    T, B = batch_sizes.numel(), int(batch_sizes[0])
    # Packed row i of step t sits at t*B + (i - start of step t); few ops (this runs per call).
    starts = torch.cumsum(batch_sizes, 0) - batch_sizes
    shift = torch.repeat_interleave(torch.arange(T) * B - starts, batch_sizes)
    flat = torch.arange(shift.numel()) + shift
    # batch_sizes is non-increasing: row b runs the steps t with batch_sizes[t] > b, a prefix.
    lengths = torch.searchsorted(-batch_sizes, -torch.arange(B))
    return flat, lengths


@dataclass(slots=True)  # slots: ~1 us less per call to build and read
class Sequence:
    x: torch.Tensor                         # [T, B, I], time-major
    lengths: Optional[torch.Tensor]         # [B] int64 on the CPU (packed input only)
    flat_index: Optional[torch.Tensor]      # packed row -> t*B + b, on x's device (packed only)
    batch_sizes: Optional[torch.Tensor]     # PackedSequence fields, to rebuild the output
    sorted_indices: Optional[torch.Tensor]
    unsorted_indices: Optional[torch.Tensor]
    unbatched: bool
    batch_first: bool

    def output(self, y):
        """y [T, B, F] time-major → the output form torch.nn would return."""
        if self.batch_sizes is not None:  # a PackedSequence came in
            data = _Gather.apply(y.reshape(-1, y.shape[2]), self.flat_index)
            return PackedSequence(data, self.batch_sizes, self.sorted_indices,
                                  self.unsorted_indices)
        if self.unbatched:
            return y.squeeze(1)
        return y.transpose(0, 1) if self.batch_first else y

    def dropout(self, y, p):
        """Dropout between layers on y [T, B, F], drawn as torch.nn draws it: over the
        packed rows [N, F] for packed input (not the padded [T, B, F]), so that the same
        seed gives the same masks and leaves the generator in the same state."""
        if self.flat_index is None:
            return torch.nn.functional.dropout(y, p, training=True)
        T, B, F = y.shape
        rows = _Gather.apply(y.reshape(T * B, F), self.flat_index)
        rows = torch.nn.functional.dropout(rows, p, training=True)
        return _Scatter.apply(rows, self.flat_index, T * B).view(T, B, F)

    def state_in(self, hx):
        """User's initial state [L*D, B, F] (or [L*D, F] unbatched) → [L*D, B, F] in our row order."""
        if self.unbatched:
            return hx.unsqueeze(1)
        if self.sorted_indices is not None:
            return hx.index_select(1, self.sorted_indices)
        return hx

    def state_out(self, h):
        """Final state [L*D, B, F] in our row order → the user's order and form."""
        if self.unbatched:
            return h.squeeze(1)
        if self.unsorted_indices is not None:
            return h.index_select(1, self.unsorted_indices)
        return h


def _check_features(name, x, input_size):
    if not x.is_floating_point():
        # ValueError, as torch.nn raises for an input dtype that does not match the weights.
        raise ValueError(f"{name}: input must be a floating point tensor of the weights' dtype, "
                         f"got {x.dtype}")
    if x.shape[-1] != input_size:
        raise RuntimeError(f"{name}: input.size(-1) must be equal to input_size. "
                           f"Expected {input_size}, got {x.shape[-1]}")


def _check_packed(name, data, batch_sizes, sorted_indices, unsorted_indices):
    """A hand-made PackedSequence can carry any batch_sizes: check them before they become
    gather/scatter indices (a zero or increasing entry would point outside the batch)."""
    if (batch_sizes.dim() != 1 or batch_sizes.dtype != torch.int64
            or batch_sizes.device.type != "cpu" or batch_sizes.numel() == 0):
        raise ValueError(f"{name}: PackedSequence batch_sizes must be a non-empty 1-D int64 CPU "
                         f"tensor, got {batch_sizes.dtype} {list(batch_sizes.shape)} on "
                         f"{batch_sizes.device}")
    sizes = batch_sizes.tolist()  # T ints: checked in Python, cheaper than tensor ops here
    if min(sizes) < 1 or any(b > a for a, b in zip(sizes, sizes[1:])):
        raise ValueError(f"{name}: PackedSequence batch_sizes must be positive and "
                         f"non-increasing (every sequence length in [1, seq_len]), got "
                         f"{sizes}")
    total = sum(sizes)
    if total != data.shape[0]:
        raise ValueError(f"{name}: PackedSequence batch_sizes sum to {total}, but data has "
                         f"{data.shape[0]} rows")
    batch = sizes[0]
    named = [(n, i) for n, i in (("sorted_indices", sorted_indices),
                                 ("unsorted_indices", unsorted_indices)) if i is not None]
    for idx_name, idx in named:
        if idx.dim() != 1 or idx.dtype != torch.int64 or idx.numel() != batch:
            _bad_indices(name, idx_name, idx, batch)
    unchecked = [(n, i) for n, i in named if not _known_permutation(i)]
    if not unchecked:
        return
    ordered = [i.sort().values for _, i in unchecked]
    if len({i.device for _, i in unchecked}) == 1:
        # Both read back at once: reading a CUDA tensor waits for the GPU to drain, once.
        ordered = torch.stack(ordered).cpu()
    else:
        ordered = [v.cpu() for v in ordered]
    for (idx_name, idx), values in zip(unchecked, ordered):
        if not torch.equal(values, torch.arange(batch)):
            _bad_indices(name, idx_name, idx, batch)
        _remember_permutation(idx)


def _bad_indices(name, idx_name, idx, batch):
    raise ValueError(f"{name}: PackedSequence {idx_name} must be an int64 permutation of "
                     f"range({batch}) (one entry per sequence), got {idx.dtype} "
                     f"{list(idx.shape)}")


# CUDA index tensors found to be permutations: id -> (weak reference, version counter, data
# pointer) at the check. Reading a CUDA tensor's values waits for all the GPU work queued
# before it (a stream sync), which made every call on a PackedSequence stall the host until
# the GPU had drained (the varlen suite on an H100: GRU B = 64 H = 512 4.1 ms packed against
# 2.2 ms padded); a pack fed to several calls (layers of modules, repeated inference) is
# checked once (a new pack per call, as a training loop builds, still waits once per call:
# checking on the device without waiting could only fail by a device-side assert, which ends
# the CUDA context). An in-place change bumps the version, and the next call checks again;
# writes that bypass the counter (through .data, NumPy or DLPack) are not seen. Inference
# tensors have no counter and are checked at every call; CPU tensors always (no sync there).
_CHECKED = {}


def _memo_key(idx):
    """(version counter, data pointer) of a CUDA idx, or None where it is not remembered."""
    if not idx.is_cuda or torch.compiler.is_compiling() or idx.is_inference():
        return None
    try:
        return idx._version, idx.data_ptr()
    except RuntimeError:  # a wrapper without a version counter or storage
        return None


def _known_permutation(idx):
    """Whether idx (a CUDA tensor) was found to be a permutation and is unchanged since."""
    key = _memo_key(idx)
    entry = _CHECKED.get(id(idx)) if key is not None else None
    return entry is not None and entry[0]() is idx and entry[1] == key


def _remember_permutation(idx):
    key = _memo_key(idx)
    if key is not None:
        ident = id(idx)
        _CHECKED[ident] = (weakref.ref(idx, lambda _, i=ident: _CHECKED.pop(i, None)), key)


def _to_device(t, device):
    """A host tensor copied to `device` without a stream sync: a blocking copy from pageable
    memory waits for every queued kernel; from pinned memory it is queued like a kernel."""
    if device.type == "cuda" and not torch.compiler.is_compiling():
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def to_sequence(name, input, batch_first, input_size):
    if isinstance(input, PackedSequence):
        data, batch_sizes, sorted_indices, unsorted_indices = input
        if data.dim() != 2:
            raise ValueError(f"{name}: PackedSequence data must be 2-D [sum(lengths), "
                             f"input_size], got {data.dim()}-D")
        _check_features(name, data, input_size)
        if data.is_cuda and torch.cuda.is_current_stream_capturing():
            # Validating the indices and passing the lengths to the kernels read host
            # memory; a graph would also replay this batch's lengths on any other.
            raise RuntimeError(f"{name}: a PackedSequence cannot be captured in a CUDA graph: "
                               "capture padded input, or run this call outside the graph")
        _check_packed(name, data, batch_sizes, sorted_indices, unsorted_indices)
        flat, lengths = _packed_layout(batch_sizes)
        flat = _to_device(flat, data.device)
        T, B = batch_sizes.numel(), int(batch_sizes[0])
        x = _Scatter.apply(data, flat, T * B).view(T, B, data.shape[1])
        return Sequence(x, lengths, flat, batch_sizes, sorted_indices, unsorted_indices,
                        unbatched=False, batch_first=False)
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{name}: input must be a Tensor or a PackedSequence, got "
                        f"{type(input).__name__}")
    if input.dim() not in (2, 3):
        raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.dim()}D instead")
    _check_features(name, input, input_size)
    if input.dim() == 2:
        return Sequence(input.unsqueeze(1), None, None, None, None, None, True, batch_first)
    x = input.transpose(0, 1) if batch_first else input
    return Sequence(x, None, None, None, None, None, False, batch_first)
