"""Bad input to fused_rnn.LSTM and the LSTM ops: a clear error naming the argument,
raised before any kernel runs; empty batches and sequences behave as in torch.nn."""
import pytest
import torch

import fused_rnn


@pytest.fixture
def lstm():
    return fused_rnn.LSTM(5, 7, num_layers=2)


def test_wrong_feature_size(lstm):
    with pytest.raises(RuntimeError, match=r"input_size. Expected 5, got 4"):
        lstm(torch.randn(3, 2, 4))


def test_four_d_input(lstm):
    with pytest.raises(ValueError, match=r"2D or 3D, got 4D"):
        lstm(torch.randn(3, 2, 1, 5))


def test_integer_input(lstm):
    with pytest.raises(ValueError, match=r"floating point.*torch.int64"):
        lstm(torch.randint(0, 3, (3, 2, 5)))


def test_dtype_mismatch_with_weights(lstm):
    with pytest.raises(ValueError, match=r"input dtype \(torch.float64\) does not match weight"):
        lstm(torch.randn(3, 2, 5, dtype=torch.float64))


def test_device_mismatch_with_weights(lstm):
    with pytest.raises(RuntimeError, match=r"input is on meta but the weights are on cpu"):
        lstm(torch.randn(3, 2, 5, device="meta"))


@pytest.mark.parametrize("which,shape,pattern", [
    (0, (2, 3, 7), r"Expected h_0 size \(2, 2, 7\), got \[2, 3, 7\]"),
    (1, (1, 2, 7), r"Expected c_0 size \(2, 2, 7\), got \[1, 2, 7\]"),
    (0, (2, 2, 6), r"Expected h_0 size \(2, 2, 7\), got \[2, 2, 6\]"),
])
def test_wrong_state_shape(lstm, which, shape, pattern):
    hx = [torch.zeros(2, 2, 7), torch.zeros(2, 2, 7)]
    hx[which] = torch.zeros(*shape)
    with pytest.raises(RuntimeError, match=pattern):
        lstm(torch.randn(3, 2, 5), tuple(hx))


def test_state_dims_must_match_input(lstm):
    with pytest.raises(RuntimeError, match=r"batched 3-D input, h_0 must be 3-D"):
        lstm(torch.randn(3, 2, 5), (torch.zeros(2, 7), torch.zeros(2, 7)))
    with pytest.raises(RuntimeError, match=r"unbatched 2-D input, h_0 must be 2-D"):
        lstm(torch.randn(3, 5), (torch.zeros(2, 1, 7), torch.zeros(2, 1, 7)))


def test_state_dtype(lstm):
    with pytest.raises(RuntimeError, match=r"c_0 must have the input's dtype and device"):
        lstm(torch.randn(3, 2, 5), (torch.zeros(2, 2, 7), torch.zeros(2, 2, 7, dtype=torch.float64)))


def test_state_not_a_pair(lstm):
    with pytest.raises(RuntimeError, match=r"hx must be a tuple \(h_0, c_0\)"):
        lstm(torch.randn(3, 2, 5), (torch.zeros(2, 2, 7),))


def test_empty_sequence_raises_like_torch(lstm):
    with pytest.raises(RuntimeError, match="sequence length to be larger than 0"):
        torch.nn.LSTM(5, 7)(torch.randn(0, 2, 5))
    with pytest.raises(RuntimeError, match="sequence length to be larger than 0"):
        lstm(torch.randn(0, 2, 5))


def test_empty_batch_like_torch(lstm):
    ref = torch.nn.LSTM(5, 7, num_layers=2)
    x = torch.randn(4, 0, 5, requires_grad=True)
    y, (h, c) = lstm(x)
    y_ref, (h_ref, c_ref) = ref(x)
    assert y.shape == y_ref.shape and h.shape == h_ref.shape and c.shape == c_ref.shape
    (y.sum() + h.sum()).backward()
    assert x.grad.shape == x.shape


# ----------------------------------------------------------------------------- raw op

def _args(**over):
    T, B, I, H = 3, 2, 5, 4
    a = dict(x=torch.randn(T, B, I), w_ih=torch.randn(4 * H, I), w_hh=torch.randn(4 * H, H),
             b_ih=torch.randn(4 * H), b_hh=torch.randn(4 * H), w_hr=None, h0=torch.zeros(B, H),
             c0=torch.zeros(B, H), lengths=None, reverse=False)
    a.update(over)
    return list(a.values())


@pytest.mark.parametrize("over,pattern", [
    (dict(w_hh=torch.randn(16, 5)), r"w_hh must have shape \[16, 4\]"),
    (dict(w_ih=torch.randn(15, 5)), r"w_ih must be 2-D \[4\*hidden_size, input_size\]"),
    (dict(w_ih=torch.randn(16, 6)), r"w_ih must have shape \[16, 5\]"),
    (dict(b_hh=None), r"b_ih and b_hh must both be given"),
    (dict(b_ih=torch.randn(12)), r"b_ih must have shape \[16\]"),
    (dict(h0=torch.zeros(3, 4)), r"h0 must have shape \[2, 4\]"),
    (dict(c0=torch.zeros(2, 4, dtype=torch.float64)), r"c0 must have the dtype of x"),
    (dict(x=torch.randn(3, 2)), r"x must be 3-D"),
    (dict(x=torch.ones(3, 2, 5, dtype=torch.int32)), r"x must be float32, float64, float16 or bfloat16"),
    (dict(w_hr=torch.randn(2, 4)), r"w_hh must have shape \[16, 2\]"),
    (dict(lengths=torch.tensor([3, 4])), r"lengths\[1\] = 4 is outside \[0, seq_len = 3\]"),
    (dict(lengths=torch.tensor([3, -1])), r"lengths\[1\] = -1 is outside"),
    (dict(lengths=torch.tensor([3])), r"lengths must have shape \[2\]"),
    (dict(lengths=torch.tensor([3, 1], dtype=torch.int32)), r"lengths must be an int64 tensor"),
])
def test_raw_op_errors_name_the_argument(over, pattern):
    with pytest.raises(RuntimeError, match=pattern):
        torch.ops.fused_rnn.lstm_forward(*_args(**over))
