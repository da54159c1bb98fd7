"""fused_rnn.GRU and the gru_forward/gru_backward ops against torch.nn.GRU."""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fused_rnn
from _parity import assert_same, twin

T, B, I, H = 5, 3, 4, 19  # H = 19: full SIMD vectors plus a scalar tail, float32 and float64, AVX2 and AVX-512
LENGTHS = [5, 2, 4]  # unsorted; row 1 stops early

ops = torch.ops.fused_rnn


def make_pair(dtype, seed=0, **kwargs):
    torch.manual_seed(seed)
    return twin(torch.nn.GRU, fused_rnn.GRU, dtype=dtype, **dict(input_size=I, hidden_size=H),
                **kwargs)


def inputs(form, dtype, D_L, with_h0):
    """(input, h0 or None) in one of the input forms torch.nn.GRU accepts."""
    gen = torch.Generator().manual_seed(1)
    rnd = lambda *s: torch.randn(*s, generator=gen, dtype=dtype)  # noqa: E731
    unbatched = form == "unbatched"
    x = rnd(T, I) if unbatched else (rnd(B, T, I) if form == "batch_first" else rnd(T, B, I))
    h0 = None
    if with_h0:
        h0 = rnd(D_L, H) if unbatched else rnd(D_L, B, H)
    if form.startswith("packed"):
        sort = form == "packed_sorted"
        lengths = torch.tensor(LENGTHS)
        lengths = lengths.sort(descending=True).values if sort else lengths
        x = pack_padded_sequence(x, lengths, enforce_sorted=sort)
    return x, h0


FORMS = ["seq", "batch_first", "unbatched", "packed_sorted", "packed_unsorted"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("num_layers,bidirectional,with_h0", [
    (1, False, False), (2, False, True), (1, True, True), (2, True, False)])
def test_module_parity(dtype, form, num_layers, bidirectional, with_h0):
    ref, ours = make_pair(dtype, num_layers=num_layers, bidirectional=bidirectional,
                          batch_first=form == "batch_first")
    D_L = num_layers * (2 if bidirectional else 1)
    assert_same(ref, ours, *inputs(form, dtype, D_L, with_h0), dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("T_,B_,I_,H_", [(1, 1, 4, 11), (1, 4, 4, 11), (6, 1, 4, 11),
                                          (4, 5, 17, 33), (3, 2, 3, 1)])
def test_module_parity_shapes(dtype, T_, B_, I_, H_):
    torch.manual_seed(0)
    ref, ours = twin(torch.nn.GRU, fused_rnn.GRU, dtype=dtype, input_size=I_, hidden_size=H_,
                     num_layers=2, bidirectional=True)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(T_, B_, I_, generator=gen, dtype=dtype)
    h0 = torch.randn(4, B_, H_, generator=gen, dtype=dtype)
    assert_same(ref, ours, x, h0, dtype)


@pytest.mark.parametrize("form", ["seq", "packed_unsorted"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_module_parity_without_bias(form, bidirectional):
    ref, ours = make_pair(torch.float64, bias=False, num_layers=2, bidirectional=bidirectional)
    assert_same(ref, ours, *inputs(form, torch.float64, 2 * (2 if bidirectional else 1), True),
                torch.float64)


def test_dropout_matches_torch_masks():
    """In training mode dropout is applied between layers; with the same seed torch's CPU
    GRU and ours draw the same masks (outputs and gradients agree)."""
    ref, ours = make_pair(torch.float64, num_layers=2, dropout=0.5, bidirectional=True)
    x, h0 = inputs("seq", torch.float64, 4, True)
    torch.manual_seed(11)
    y_ref, _ = ref(x)
    torch.manual_seed(11)
    y_ours, _ = ours(x)
    torch.testing.assert_close(y_ours, y_ref, atol=1e-10, rtol=1e-10)
    torch.manual_seed(12)
    assert not torch.allclose(ours(x)[0], y_ours)  # a fresh mask
    torch.manual_seed(5)
    ref_grads = torch.autograd.grad(ref(x, h0)[0].sum(), list(ref.parameters()))
    torch.manual_seed(5)
    our_grads = torch.autograd.grad(ours(x, h0)[0].sum(), list(ours.parameters()))
    for a, b in zip(ref_grads, our_grads):
        torch.testing.assert_close(b, a, atol=1e-10, rtol=1e-10)
    ref.eval(), ours.eval()
    assert_same(ref, ours, x, h0, torch.float64)


def test_backward_does_not_overwrite_saved_tensors():
    """Two backward passes through one graph (retain_graph) give the same gradients."""
    ours = fused_rnn.GRU(I, H, num_layers=2).double()
    x = torch.randn(6, 2, I, dtype=torch.float64, requires_grad=True)
    y, h = ours(x)
    g1 = torch.autograd.grad(y.sum() + h.sum(), x, retain_graph=True)[0]
    g2 = torch.autograd.grad(y.sum() + h.sum(), x)[0]
    assert torch.equal(g1, g2)


def test_long_sequence_and_wide_hidden_float32():
    # Several full vectors per row and a long recurrence: errors must not accumulate.
    torch.manual_seed(0)
    ref, ours = twin(torch.nn.GRU, fused_rnn.GRU, dtype=torch.float32, input_size=8,
                     hidden_size=70, batch_first=True)
    assert_same(ref, ours, torch.randn(3, 40, 8), None, torch.float32)


def test_rows_split_across_threads_with_lengths():
    # B * (H / 256-lane pieces) above parallel_rows' grain: the pointwise passes run in
    # parallel pieces (when torch has more than one thread), finished rows included.
    torch.manual_seed(0)
    ref, ours = twin(torch.nn.GRU, fused_rnn.GRU, dtype=torch.float64, input_size=8,
                     hidden_size=300, bidirectional=True)
    lengths = torch.tensor([4, 1, 3, 4, 2])  # 5 rows x 2 pieces of 300 lanes
    x = pack_padded_sequence(torch.randn(4, 5, 8, dtype=torch.float64), lengths,
                             enforce_sorted=False)
    assert_same(ref, ours, x, None, torch.float64)


def test_state_dict_both_ways_and_init():
    torch.manual_seed(0)
    ref = torch.nn.GRU(I, H, num_layers=2, bidirectional=True)
    torch.manual_seed(0)
    ours = fused_rnn.GRU(I, H, num_layers=2, bidirectional=True)
    r_sd, o_sd = ref.state_dict(), ours.state_dict()
    assert list(r_sd) == list(o_sd)
    for k in r_sd:  # same init from the same seed
        torch.testing.assert_close(o_sd[k], r_sd[k], atol=0, rtol=0)
    back = torch.nn.GRU(I, H, num_layers=2, bidirectional=True)
    back.load_state_dict(fused_rnn.GRU(I, H, num_layers=2, bidirectional=True).state_dict())
    assert repr(ours).replace("fused_rnn.", "") == repr(ref)


def test_proj_size_rejected_like_torch():
    with pytest.raises(ValueError, match="proj_size"):
        fused_rnn.GRU(I, H, proj_size=2)


def test_empty_sequence_keeps_h0():
    # T = 0 does not reach the ops through the module (torch rejects it), but the op keeps h0.
    x = torch.randn(0, B, I, dtype=torch.float64)
    w_ih = torch.randn(3 * H, I, dtype=torch.float64)
    w_hh = torch.randn(3 * H, H, dtype=torch.float64)
    h0 = torch.randn(B, H, dtype=torch.float64)
    y, h_n = fused_rnn.ops.gru_layer(x, w_ih, w_hh, None, None, h0)
    assert y.shape == (0, B, H)
    torch.testing.assert_close(h_n, h0, atol=0, rtol=0)


def test_bfloat16_close_to_float32():
    ref, ours = make_pair(torch.float32)
    x = torch.randn(T, B, I)
    y32, h32 = ours(x)
    ours16 = ours.to(torch.bfloat16)
    y16, h16 = ours16(x.to(torch.bfloat16))
    assert y16.dtype == torch.bfloat16 and h16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), y32, atol=3e-2, rtol=3e-2)
    y16.float().sum().backward()
    assert ours16.weight_hh_l0.grad.dtype == torch.bfloat16


# ----------------------------------------------------------------------------- raw ops

def op_args(dtype=torch.float64, bias=True, lengths=None, reverse=False, requires_grad=False):
    gen = torch.Generator().manual_seed(2)
    h = 5

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype).requires_grad_(requires_grad)
    b = (rnd(3 * h), rnd(3 * h)) if bias else (None, None)
    return [rnd(4, 3, 2), rnd(3 * h, 2), rnd(3 * h, h), *b, rnd(3, h), lengths, reverse]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [None, [4, 1, 3], [0, 4, 2]])
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck(reverse, lengths, bias):
    lengths = torch.tensor(lengths) if lengths is not None else None
    args = op_args(bias=bias, lengths=lengths, reverse=reverse, requires_grad=True)

    def f(x, w_ih, w_hh, b_ih, b_hh, h0):
        return fused_rnn.ops.gru_layer(x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse)
    assert torch.autograd.gradcheck(f, args[:6])


@pytest.mark.parametrize("dtype,lengths,reverse", [
    (torch.float64, None, False), (torch.float64, [4, 1, 3], True),
    (torch.float32, [4, 1, 3], False), (torch.float32, None, True)])
def test_opcheck(reverse, lengths, dtype):
    lengths = torch.tensor(lengths) if lengths is not None else None
    args = op_args(dtype=dtype, lengths=lengths, reverse=reverse, requires_grad=True)
    torch.library.opcheck(ops.gru_forward.default, args)
    with torch.no_grad():
        y, h_n, gates, hs, hn = ops.gru_forward(*args)
    x, w_ih, w_hh = (a.detach() for a in args[:3])
    torch.library.opcheck(ops.gru_backward.default,
                          [torch.randn_like(y), torch.randn_like(h_n), x, w_ih, w_hh, lengths,
                           reverse, True, gates, hs, hn])


def test_opcheck_noncontiguous_inputs():
    # A batch_first module hands the op a transposed x: the fakes must describe the kernels'
    # (contiguous) outputs, not copy the input's strides.
    args = op_args(requires_grad=True)
    x = args[0].detach().transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()
    w_ih = args[1].detach().t().contiguous().t().requires_grad_()
    assert not x.is_contiguous() and not w_ih.is_contiguous()
    args[0], args[1] = x, w_ih
    torch.library.opcheck(ops.gru_forward.default, args)
    with torch.no_grad():
        y, h_n, gates, hs, hn = ops.gru_forward(*args)
    torch.library.opcheck(ops.gru_backward.default,
                          [torch.randn_like(y), torch.randn_like(h_n), x.detach(), w_ih.detach(),
                           args[2].detach(), None, False, True, gates, hs, hn])


def test_finished_rows_keep_state_and_output_zeros():
    lengths = torch.tensor([4, 1, 0])
    for reverse in (False, True):
        args = op_args(lengths=lengths, reverse=reverse)
        y, h_n = fused_rnn.ops.gru_layer(*args)
        assert torch.all(y[1:, 1] == 0) and torch.all(y[:, 2] == 0)
        torch.testing.assert_close(h_n[2], args[5][2], atol=0, rtol=0)  # never ran: h0
        one, _ = fused_rnn.ops.gru_layer(args[0][:1, 1:2], *args[1:5], args[5][1:2], None,
                                         reverse)
        torch.testing.assert_close(h_n[1], one[0, 0])  # ran exactly one step


def test_compile_fullgraph():
    # aot_eager traces forward and backward through the fake kernels like inductor does,
    # without inductor's minute of C++ compilation on this machine.
    ref, ours = make_pair(torch.float32, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(B, T, I)
    h0 = torch.randn(4, B, H)
    compiled = torch.compile(ours, fullgraph=True, backend="aot_eager")
    assert_same(ref, compiled, x, h0, torch.float32)


# ----------------------------------------------------------------------------- bad inputs

def test_op_bad_inputs_name_argument():
    good = op_args()
    cases = [
        (1, torch.randn(14, 2, dtype=torch.float64), "w_ih must be 2-D \\[3\\*hidden_size"),
        (2, torch.randn(15, 4, dtype=torch.float64), "w_hh must have shape \\[15, 5\\]"),
        (2, torch.randn(15, 5, dtype=torch.float32), "w_hh must have the dtype of x"),
        (4, None, "b_ih and b_hh must both be given"),
        (3, torch.randn(12, dtype=torch.float64), "b_ih must have shape \\[15\\]"),
        (5, torch.randn(2, 5, dtype=torch.float64), "h0 must have shape \\[3, 5\\]"),
        (6, torch.tensor([1, 5, 2]), "lengths\\[1\\] = 5 is outside"),
        (6, torch.tensor([1, 2, 2], dtype=torch.int32), "lengths must be an int64"),
        (0, torch.randn(4, 3, dtype=torch.float64), "x must be 3-D"),
        (0, torch.ones(4, 3, 2, dtype=torch.int32), "x must be float32, float64, float16 or bfloat16"),
    ]
    for k, bad, msg in cases:
        args = list(good)
        args[k] = bad
        with pytest.raises(RuntimeError, match="fused_rnn::gru_forward: " + msg):
            ops.gru_forward(*args)


def test_op_backward_checks_saved_shapes():
    args = op_args()
    y, h_n, gates, hs, hn = ops.gru_forward(*args)
    with pytest.raises(RuntimeError, match="gru_backward: hn must have shape"):
        ops.gru_backward(y, h_n, args[0], args[1], args[2], None, False, True, gates, hs,
                         hn[:-1])
    with pytest.raises(RuntimeError, match="gru_backward: dh_n must have shape"):
        ops.gru_backward(y, h_n[:1], args[0], args[1], args[2], None, False, True, gates, hs, hn)


def test_module_bad_inputs():
    gru = fused_rnn.GRU(I, H, num_layers=2)
    with pytest.raises(RuntimeError, match="input.size\\(-1\\) must be equal to input_size"):
        gru(torch.randn(T, B, I + 1))
    with pytest.raises(ValueError, match="Expected input to be 2D or 3D"):
        gru(torch.randn(1, T, B, I))
    with pytest.raises(RuntimeError, match="Expected h_0 size \\(2, 3, 19\\)"):
        gru(torch.randn(T, B, I), torch.randn(1, B, H))
    with pytest.raises(RuntimeError, match="h_0 must be 3-D"):
        gru(torch.randn(T, B, I), torch.randn(2, H))
    with pytest.raises(ValueError, match="input dtype"):
        gru(torch.randn(T, B, I, dtype=torch.float64))
