"""Details of torch.nn's module behaviour that drop-in code relies on: dropout's random
draws on packed input, torch.nn.LSTM's helper methods, and malformed states (found by an
audit against torch.nn; each test compares with torch.nn itself)."""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fused_rnn

MODULES = [(torch.nn.LSTM, fused_rnn.LSTM), (torch.nn.GRU, fused_rnn.GRU),
           (torch.nn.RNN, fused_rnn.RNN)]


def _pair(ref_cls, our_cls, **kw):
    ref = ref_cls(4, 5, **kw).double()
    ours = our_cls(4, 5, **kw).double()
    ours.load_state_dict(ref.state_dict())
    return ref, ours


@pytest.mark.parametrize("ref_cls,our_cls", MODULES)
@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_packed_dropout_draws_as_torch(ref_cls, our_cls, enforce_sorted):
    """torch.nn drops out the packed rows (sum(lengths) x F draws), not a padded batch:
    the same seed gives the same output and gradients, and leaves the generator where
    torch.nn leaves it."""
    ref, ours = _pair(ref_cls, our_cls, num_layers=3, dropout=0.5, bidirectional=True)
    lengths = torch.tensor([6, 3, 2, 5]) if not enforce_sorted else torch.tensor([6, 5, 3, 2])
    x = torch.randn(6, 4, 4, dtype=torch.float64)
    runs = []
    for m in (ref, ours):
        xr = x.clone().requires_grad_()
        torch.manual_seed(11)
        y = m(pack_padded_sequence(xr, lengths, enforce_sorted=enforce_sorted))[0]
        after = torch.rand(3)
        grads = torch.autograd.grad((y.data * y.data.detach().cos()).sum(),
                                    [xr] + list(m.parameters()))
        runs.append((y.data, after, grads))
    (y_ref, after_ref, g_ref), (y_ours, after_ours, g_ours) = runs
    assert torch.equal(after_ours, after_ref)
    torch.testing.assert_close(y_ours, y_ref, atol=1e-10, rtol=1e-10)
    for a, b in zip(g_ref, g_ours):
        torch.testing.assert_close(b, a, atol=1e-10, rtol=1e-10)


def test_lstm_helper_methods_as_torch():
    """get_expected_cell_size, check_forward_args and permute_hidden take LSTM's (h, c)."""
    ref, ours = _pair(torch.nn.LSTM, fused_rnn.LSTM, num_layers=2, proj_size=3)
    x = torch.randn(7, 4, 4, dtype=torch.float64)
    h, c = torch.randn(2, 4, 3, dtype=torch.float64), torch.randn(2, 4, 5, dtype=torch.float64)
    assert ours.get_expected_cell_size(x, None) == ref.get_expected_cell_size(x, None) == (2, 4, 5)
    assert ours.get_expected_hidden_size(x, None) == (2, 4, 3)
    ours.check_forward_args(x, (h, c), None)
    with pytest.raises(RuntimeError, match=r"Expected hidden\[1\] size \(2, 4, 5\), got \[2, 4, 3\]"):
        ours.check_forward_args(x, (h, h), None)
    perm = torch.tensor([2, 0, 3, 1])
    for a, b in zip(ours.permute_hidden((h, c), perm), ref.permute_hidden((h, c), perm)):
        assert torch.equal(a, b)
    assert ours.permute_hidden((h, c), None) == (h, c)


@pytest.mark.parametrize("batch", [2, 4])
def test_unsorted_pack_state_of_wrong_batch_is_refused(batch):
    """The state's batch is checked before the pack's permutation picks its rows: torch.nn
    runs a larger state on the rows the permutation picks and fails inside index_select on
    a smaller one."""
    lstm = fused_rnn.LSTM(4, 5)
    packed = pack_padded_sequence(torch.randn(6, 3, 4), torch.tensor([2, 6, 4]),
                                  enforce_sorted=False)
    hx = (torch.zeros(1, batch, 5), torch.zeros(1, batch, 5))
    with pytest.raises(RuntimeError, match=rf"LSTM: Expected h_0 size \(1, 3, 5\), got \[1, {batch}, 5\]"):
        lstm(packed, hx)
    with pytest.raises(RuntimeError, match=r"GRU: Expected h_0 size \(1, 3, 5\)"):
        fused_rnn.GRU(4, 5)(packed, hx[0][:, :batch])


def _error_type(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the type is what is compared
        return type(e)
    return None


X, HX = torch.randn(3, 2, 4), torch.zeros(1, 2, 5)
XC, HC = torch.randn(2, 4), torch.zeros(2, 5)


@pytest.mark.parametrize("name,call,expected", [
    # torch.nn's own checks: the same exception type
    ("LSTM, three states", lambda m: m(X, (HX, HX, HX)), RuntimeError),
    ("LSTMCell, one state", lambda m: m(XC, (HC,)), RuntimeError),
    ("LSTMCell, three states", lambda m: m(XC, (HC, HC, HC)), RuntimeError),
    ("LSTMCell, a Tensor", lambda m: m(XC, HC), TypeError),
    ("GRUCell, 1-D input and 2-D state", lambda m: m(XC[0], HC), RuntimeError),
    ("LSTMCell, 1-D input and 2-D states", lambda m: m(XC[0], (HC, HC)), RuntimeError),
    ("GRU, 2-D state for a packed batch", lambda m: m(
        pack_padded_sequence(X, torch.tensor([3, 2])), HC), RuntimeError),
])
def test_malformed_state_raises_torch_type(name, call, expected):
    cls = name.split(",")[0]
    ref = getattr(torch.nn, cls)(4, 5)
    ours = getattr(fused_rnn, cls)(4, 5)
    assert _error_type(lambda: call(ref)) is expected
    assert _error_type(lambda: call(ours)) is expected


@pytest.mark.parametrize("name,call,expected,match", [
    # torch.nn fails by accident (IndexError, AttributeError on the tuple or the None)
    ("LSTM, one state", lambda m: m(X, (HX,)), RuntimeError, r"two Tensors, got 1"),
    ("LSTM, a Tensor", lambda m: m(X, HX), RuntimeError, r"two Tensors, got a Tensor"),
    ("LSTM, a None", lambda m: m(X, (HX, None)), TypeError, r"c_0 must be a Tensor"),
    ("GRU, a tuple", lambda m: m(X, (HX,)), TypeError, r"GRU: hx must be a Tensor h_0, got tuple"),
    ("RNN, a list", lambda m: m(X, [HX]), TypeError, r"RNN: hx must be a Tensor h_0, got list"),
    ("LSTMCell, a None", lambda m: m(XC, (HC, None)), TypeError, r"got a None"),
    ("GRUCell, a tuple", lambda m: m(XC, (HC,)), TypeError, r"GRUCell: hx must be a Tensor"),
    ("RNNCell, a tuple", lambda m: m(XC, (HC,)), TypeError, r"RNNCell: hx must be a Tensor"),
])
def test_malformed_state_torch_fails_on_by_accident(name, call, expected, match):
    """Where torch.nn fails without a check of its own, a named error; never a run."""
    cls = name.split(",")[0]
    assert _error_type(lambda: call(getattr(torch.nn, cls)(4, 5))) is not None
    with pytest.raises(expected, match=match):
        call(getattr(fused_rnn, cls)(4, 5))
