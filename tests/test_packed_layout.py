"""The gather/scatter that maps a PackedSequence to the padded time-major batch and back:
the same layout and lengths as torch's pad_packed_sequence / pack_padded_sequence, and
exact first and second derivatives."""
import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from fused_rnn._sequence import _Gather, _Scatter, _packed_layout


@pytest.mark.parametrize("lengths", [[5, 3, 3, 1], [1], [4, 4, 4], [7, 2, 6, 1, 3]])
def test_layout_matches_torch(lengths):
    T, B = max(lengths), len(lengths)
    x = torch.randn(T, B, 3, dtype=torch.float64)
    packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
    flat, got_lengths = _packed_layout(packed.batch_sizes)
    # Rows in the packed (length-sorted) order, as the layer ops see them.
    padded, want_lengths = pad_packed_sequence(PackedSequence(packed.data, packed.batch_sizes))
    assert torch.equal(got_lengths, want_lengths)
    ours = _Scatter.apply(packed.data, flat, T * B).view(T, B, 3)
    assert torch.equal(ours, padded)
    assert torch.equal(_Gather.apply(ours.reshape(T * B, 3), flat), packed.data)


def test_gradients_first_and_second_order():
    batch_sizes = torch.tensor([3, 3, 2, 1])
    flat, _ = _packed_layout(batch_sizes)
    rows = torch.randn(int(batch_sizes.sum()), 2, dtype=torch.float64, requires_grad=True)
    full = torch.randn(12, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda r: _Scatter.apply(r, flat, 12), (rows,))
    assert torch.autograd.gradgradcheck(lambda r: _Scatter.apply(r, flat, 12), (rows,))
    assert torch.autograd.gradcheck(lambda f: _Gather.apply(f, flat), (full,))
    assert torch.autograd.gradgradcheck(lambda f: _Gather.apply(f, flat), (full,))
