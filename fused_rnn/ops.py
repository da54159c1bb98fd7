"""Python side of the fused_rnn ops: fake (meta) kernels, autograd, and functional wrappers.

The ops themselves are defined and implemented in C++ (csrc/ops.cpp, csrc/cpu, csrc/cuda).
Each layer op runs one layer in one direction over the whole sequence; see
csrc/lstm_args.h, csrc/gru_args.h and csrc/rnn_args.h for every argument's shape.
Use the wrappers below (lstm_layer, gru_layer, rnn_layer), not torch.ops.fused_rnn.*
directly: they also take the paths the raw ops cannot (forward-mode AD, torch.func's grad
transforms; see _call).
"""
import torch
import torch.autograd.forward_ad as _forward_ad
from torch._C._functorch import TransformType as _TransformType
from torch._C._functorch import peek_interpreter_stack as _peek_interpreter
from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters as _interpreters

from . import _extension  # noqa: F401  (loads the library that defines the ops)
from . import _rerun

_ops = torch.ops.fused_rnn


def _work_dtype(x):
    # On the CPU bfloat16 and float16 run in float32, so what is saved for backward is float32.
    half = x.dtype in (torch.float16, torch.bfloat16)
    return torch.float32 if half and x.device.type == "cpu" else x.dtype


def _cell_dtype(x):
    # The saved cell states stay float32 for half-precision inputs on every device.
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def _zeros_if_none(grad, x, shape):
    # Outputs without a gradient arrive as None (set_materialize_grads(False)): autograd
    # would otherwise fill zeros for every unused output, the saved gates and states too
    # (~40 MB, 6 ms of a 210 ms backward at T=25 B=128 H=512), which the kernels never read.
    return x.new_zeros(shape) if grad is None else grad.contiguous()


def _dense_like(t):
    # The kernels return contiguous tensors whatever the strides of their inputs; so must
    # the fakes (empty_like would copy a transposed x's strides, and compiled graphs then
    # view the real, contiguous gradient with the wrong strides).
    return t.new_empty(t.shape)


def _grad_like(t, wanted):
    # The backward ops skip the gradients nobody needs (dx of a layer fed with data, the
    # weights' of a frozen layer, the initial states' when none requires one, or when the
    # caller asked autograd for others only) and return them empty.
    return _dense_like(t) if wanted else t.new_empty((0,))


def _check_args(check, *args):
    """The fused op's argument checks, for the re-run path (same errors as the op). Run
    outside torch.func's layers, which would wrap lengths, whose values the checks read."""
    with torch._C._DisableFuncTorch():
        check(*args)


def _call(op, *args):
    """op(*args) through the cheapest route that keeps its autograd, or None where the layer
    must run as differentiable torch ops instead (_rerun.py):
    - under torch.compile, the op itself (Dynamo cannot trace the checks below);
    - None under forward-mode AD (dual tensors, torch.func.jvp/jacfwd), which the fused
      kernels have no formula for, and under torch.func's grad transforms (grad, vjp,
      jacrev, hessian), which cannot run the op's autograd; vmap alone keeps the fused op;
    - under torch.jit.trace, a torch.func transform (vmap) or CUDA autocast, the op itself,
      whose autograd layer register_autograd installs (a graph then records the op,
      functorch knows that layer, and the layer saves the arguments as autocast cast them:
      csrc/cuda/autocast.cpp sits above it);
    - otherwise the op's *_layer_autograd twin (csrc/layer_autograd.cpp): a C++ autograd
      Function with the same saved tensors and backward when a gradient is wanted, without
      that layer's Python (Function.apply, setup_context, the engine's call back into
      Python): a third less time for a one-step GRU's forward + backward at B = 1,
      H = 128; and the kernel below the autograd layer when none is (benchmarks/NOTES.md,
      session 16). One check of each kind per call: a one-step call's Python costs as much
      as its arithmetic."""
    if torch.compiler.is_compiling():
        return op(*args)
    interpreters = _interpreters()
    if any(i.key() not in (_TransformType.Vmap, _TransformType.Functionalize)
           for i in interpreters):
        return None
    if _forward_ad._current_level >= 0 and any(
            isinstance(t, torch.Tensor) and _forward_ad.unpack_dual(t).tangent is not None
            for t in args):
        return None
    if interpreters or torch.jit.is_tracing() or torch.is_autocast_enabled("cuda"):
        return op(*args)
    return _EAGER_TWINS[op](*args)


def eager_states(input, hx):
    """hx as the tuple of tensors fused_rnn::module_forward and cell_forward take (() for
    None), or None where the module or cell must take its Python route: input not a plain
    tensor, hx not a tensor or two, or a call that must reach the layer ops through _call
    (torch.compile, forward-mode AD, a torch.func transform, torch.jit.trace; the ops
    themselves decline under CUDA autocast). One function for all of it: each Python call
    costs 1-3 us on a one-step call made after torch.nn's (3-9% of the call, measured)."""
    if type(input) is not torch.Tensor or (
            torch.compiler.is_compiling() or _forward_ad._current_level >= 0
            or _peek_interpreter() is not None or torch._C._get_tracing_state() is not None):
        return None
    if hx is None:
        return ()
    if type(hx) is torch.Tensor:
        return (hx,)
    if (type(hx) is tuple and len(hx) == 2 and type(hx[0]) is torch.Tensor
            and type(hx[1]) is torch.Tensor):
        return hx
    return None


module_forward = _ops.module_forward.default
cell_forward = _ops.cell_forward.default


# forward op -> its eager twin (.default: one overload lookup less per call)
_EAGER_TWINS = {getattr(_ops, f"{cell}_forward"): getattr(_ops, f"{cell}_layer_autograd").default
                for cell in ("lstm", "gru", "rnn")}


# ----------------------------------------------------------------------------- LSTM

@torch.library.register_fake("fused_rnn::lstm_forward")
def _lstm_forward_fake(x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, lengths, reverse):
    T, B, _ = x.shape
    H = w_ih.shape[0] // 4
    P = w_hr.shape[0] if w_hr is not None else H
    work = _work_dtype(x)
    return (
        x.new_empty((T, B, P)),
        x.new_empty((B, P)),
        x.new_empty((B, H)),
        x.new_empty((T, B, 4 * H), dtype=work),
        x.new_empty((T + 1, B, P), dtype=work),
        x.new_empty((T + 1, B, H), dtype=_cell_dtype(x)),
        x.new_empty((T, B, H) if w_hr is not None else (0,), dtype=work),
    )


@torch.library.register_fake("fused_rnn::lstm_backward")
def _lstm_backward_fake(dy, dh_n, dc_n, x, w_ih, w_hh, w_hr, lengths, reverse, has_bias,
                        gates, hs, cs, h_raw, need_dx=True, need_dw=True, need_dh0=True):
    H = w_ih.shape[0] // 4
    return (
        _grad_like(x, need_dx),
        _grad_like(w_ih, need_dw),
        _grad_like(w_hh, need_dw),
        x.new_empty((4 * H,) if has_bias and need_dw else (0,)),
        _grad_like(w_hr, need_dw) if w_hr is not None else x.new_empty((0,)),
        _grad_like(dh_n, need_dh0),
        _grad_like(dc_n, need_dh0),
    )


def _lstm_setup_context(ctx, inputs, output):
    x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, lengths, reverse = inputs
    gates, hs, cs, h_raw = output[3:]
    # The biases and initial state only for a differentiable backward (_rerun.py).
    ctx.save_for_backward(x, w_ih, w_hh, w_hr, lengths, gates, hs, cs, h_raw, b_ih, b_hh, h0, c0)
    ctx.set_materialize_grads(False)  # see _zeros_if_none
    ctx.reverse = reverse
    ctx.has_bias = b_ih is not None


def _lstm_backward(ctx, dy, dh_n, dc_n, *_unused_grads_of_saved):
    x, w_ih, w_hh, w_hr, lengths, gates, hs, cs, h_raw, b_ih, b_hh, h0, c0 = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True: the backward must be differentiable
        return tuple(_rerun.grads(_rerun.lstm, (x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, lengths,
                                                ctx.reverse), ctx.needs_input_grad,
                                  (dy, dh_n, dc_n)))
    T, B, _ = x.shape
    H, P = cs.shape[2], hs.shape[2]
    # Inputs: x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, lengths, reverse.
    need_dx, need_dw = ctx.needs_input_grad[0], any(ctx.needs_input_grad[1:6])
    need_dh0 = any(ctx.needs_input_grad[6:8])
    dx, dw_ih, dw_hh, db, dw_hr, dh0, dc0 = _ops.lstm_backward(
        _zeros_if_none(dy, x, (T, B, P)), _zeros_if_none(dh_n, x, (B, P)),
        _zeros_if_none(dc_n, x, (B, H)), x, w_ih, w_hh, w_hr, lengths, ctx.reverse,
        ctx.has_bias, gates, hs, cs, h_raw, need_dx, need_dw, need_dh0)
    dx = dx if need_dx else None
    dw_ih, dw_hh = (dw_ih, dw_hh) if need_dw else (None, None)
    db = db if ctx.has_bias and need_dw else None
    dw_hr = dw_hr if w_hr is not None and need_dw else None
    dh0, dc0 = (dh0, dc0) if need_dh0 else (None, None)
    return dx, dw_ih, dw_hh, db, db, dw_hr, dh0, dc0, None, None


torch.library.register_autograd("fused_rnn::lstm_forward", _lstm_backward,
                               setup_context=_lstm_setup_context)


def lstm_layer(x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, lengths=None, reverse=False):
    """One LSTM layer in one direction over a whole time-major sequence.

    x [T, B, I]; w_ih [4H, I]; w_hh [4H, P]; b_ih, b_hh [4H] or None; w_hr [P, H] or None;
    h0 [B, P]; c0 [B, H]; lengths: int64 CPU [B] or None (row b stops after lengths[b]
    steps, keeps its state, and outputs zeros after); reverse runs t = T-1 .. 0.
    Returns y [T, B, P], h_n [B, P], c_n [B, H]. Differentiable in every tensor.
    """
    out = _call(_ops.lstm_forward, x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, lengths, reverse)
    if out is None:
        _check_args(_ops.lstm_check, x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, lengths)
        return _rerun.lstm(x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, lengths, reverse)
    return out[0], out[1], out[2]


# ----------------------------------------------------------------------------- GRU

@torch.library.register_fake("fused_rnn::gru_forward")
def _gru_forward_fake(x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse):
    T, B, _ = x.shape
    H = w_ih.shape[0] // 3
    work = _work_dtype(x)
    return (
        x.new_empty((T, B, H)),
        x.new_empty((B, H)),
        x.new_empty((T, B, 3 * H), dtype=work),
        x.new_empty((T + 1, B, H), dtype=work),
        x.new_empty((T, B, H), dtype=work),
    )


@torch.library.register_fake("fused_rnn::gru_backward")
def _gru_backward_fake(dy, dh_n, x, w_ih, w_hh, lengths, reverse, has_bias, gates, hs, hn,
                       need_dx=True, need_dw=True, need_dh0=True):
    H = w_ih.shape[0] // 3
    bias_shape = (3 * H,) if has_bias and need_dw else (0,)
    return (
        _grad_like(x, need_dx),
        _grad_like(w_ih, need_dw),
        _grad_like(w_hh, need_dw),
        x.new_empty(bias_shape),
        x.new_empty(bias_shape),
        _grad_like(dh_n, need_dh0),
    )


def _gru_setup_context(ctx, inputs, output):
    x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse = inputs
    gates, hs, hn = output[2:]
    # The biases and initial state only for a differentiable backward (_rerun.py).
    ctx.save_for_backward(x, w_ih, w_hh, lengths, gates, hs, hn, b_ih, b_hh, h0)
    ctx.set_materialize_grads(False)  # see _zeros_if_none
    ctx.reverse = reverse
    ctx.has_bias = b_ih is not None


def _gru_backward(ctx, dy, dh_n, *_unused_grads_of_saved):
    x, w_ih, w_hh, lengths, gates, hs, hn, b_ih, b_hh, h0 = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True: the backward must be differentiable
        return tuple(_rerun.grads(_rerun.gru, (x, w_ih, w_hh, b_ih, b_hh, h0, lengths, ctx.reverse),
                                  ctx.needs_input_grad, (dy, dh_n)))
    T, B, _ = x.shape
    H = hs.shape[2]
    # Inputs: x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse.
    need_dx, need_dw = ctx.needs_input_grad[0], any(ctx.needs_input_grad[1:5])
    need_dh0 = ctx.needs_input_grad[5]
    dx, dw_ih, dw_hh, db_ih, db_hh, dh0 = _ops.gru_backward(
        _zeros_if_none(dy, x, (T, B, H)), _zeros_if_none(dh_n, x, (B, H)), x, w_ih, w_hh,
        lengths, ctx.reverse, ctx.has_bias, gates, hs, hn, need_dx, need_dw, need_dh0)
    dx = dx if need_dx else None
    dw_ih, dw_hh = (dw_ih, dw_hh) if need_dw else (None, None)
    db_ih, db_hh = (db_ih, db_hh) if ctx.has_bias and need_dw else (None, None)
    return dx, dw_ih, dw_hh, db_ih, db_hh, dh0 if need_dh0 else None, None, None


torch.library.register_autograd("fused_rnn::gru_forward", _gru_backward,
                               setup_context=_gru_setup_context)


def gru_layer(x, w_ih, w_hh, b_ih, b_hh, h0, lengths=None, reverse=False):
    """One GRU layer in one direction over a whole time-major sequence.

    x [T, B, I]; w_ih [3H, I]; w_hh [3H, H]; b_ih, b_hh [3H] or None; h0 [B, H];
    lengths: int64 CPU [B] or None (row b stops after lengths[b] steps, keeps its state,
    and outputs zeros after); reverse runs t = T-1 .. 0.
    Returns y [T, B, H], h_n [B, H]. Differentiable in every tensor.
    """
    out = _call(_ops.gru_forward, x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse)
    if out is None:
        _check_args(_ops.gru_check, x, w_ih, w_hh, b_ih, b_hh, h0, lengths)
        return _rerun.gru(x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse)
    return out[0], out[1]


# ----------------------------------------------------------------------------- RNN

@torch.library.register_fake("fused_rnn::rnn_forward")
def _rnn_forward_fake(x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse, relu):
    T, B, _ = x.shape
    H = w_ih.shape[0]
    return (
        x.new_empty((T, B, H)),
        x.new_empty((B, H)),
        x.new_empty((T + 1, B, H), dtype=_work_dtype(x)),
    )


@torch.library.register_fake("fused_rnn::rnn_backward")
def _rnn_backward_fake(dy, dh_n, x, w_ih, w_hh, lengths, reverse, relu, has_bias, hs,
                       need_dx=True, need_dw=True, need_dh0=True):
    H = w_ih.shape[0]
    return (
        _grad_like(x, need_dx),
        _grad_like(w_ih, need_dw),
        _grad_like(w_hh, need_dw),
        x.new_empty((H,) if has_bias and need_dw else (0,)),
        _grad_like(dh_n, need_dh0),
    )


def _rnn_setup_context(ctx, inputs, output):
    x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse, relu = inputs
    # The biases and initial state only for a differentiable backward (_rerun.py).
    ctx.save_for_backward(x, w_ih, w_hh, lengths, output[2], b_ih, b_hh, h0)
    ctx.set_materialize_grads(False)  # see _zeros_if_none
    ctx.reverse = reverse
    ctx.relu = relu
    ctx.has_bias = b_ih is not None


def _rnn_backward(ctx, dy, dh_n, _unused_grad_of_hs):
    x, w_ih, w_hh, lengths, hs, b_ih, b_hh, h0 = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True: the backward must be differentiable
        return tuple(_rerun.grads(_rerun.rnn, (x, w_ih, w_hh, b_ih, b_hh, h0, lengths, ctx.reverse,
                                               ctx.relu), ctx.needs_input_grad, (dy, dh_n)))
    T, B, _ = x.shape
    H = hs.shape[2]
    # Inputs: x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse, relu.
    need_dx, need_dw = ctx.needs_input_grad[0], any(ctx.needs_input_grad[1:5])
    need_dh0 = ctx.needs_input_grad[5]
    dx, dw_ih, dw_hh, db, dh0 = _ops.rnn_backward(
        _zeros_if_none(dy, x, (T, B, H)), _zeros_if_none(dh_n, x, (B, H)), x, w_ih, w_hh,
        lengths, ctx.reverse, ctx.relu, ctx.has_bias, hs, need_dx, need_dw, need_dh0)
    dx = dx if need_dx else None
    dw_ih, dw_hh = (dw_ih, dw_hh) if need_dw else (None, None)
    db = db if ctx.has_bias and need_dw else None
    return dx, dw_ih, dw_hh, db, db, dh0 if need_dh0 else None, None, None, None


torch.library.register_autograd("fused_rnn::rnn_forward", _rnn_backward,
                               setup_context=_rnn_setup_context)

_NONLINEARITIES = {"tanh": False, "relu": True}


def rnn_layer(x, w_ih, w_hh, b_ih, b_hh, h0, lengths=None, reverse=False, nonlinearity="tanh"):
    """One Elman RNN layer in one direction over a whole time-major sequence:
    h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), act = tanh or relu.

    x [T, B, I]; w_ih [H, I]; w_hh [H, H]; b_ih, b_hh [H] or None; h0 [B, H];
    lengths: int64 CPU [B] or None (row b stops after lengths[b] steps, keeps its state,
    and outputs zeros after); reverse runs t = T-1 .. 0; nonlinearity "tanh" or "relu".
    Returns y [T, B, H], h_n [B, H]. Differentiable in every tensor.
    """
    if nonlinearity not in _NONLINEARITIES:
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
    relu = _NONLINEARITIES[nonlinearity]
    out = _call(_ops.rnn_forward, x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse, relu)
    if out is None:
        _check_args(_ops.rnn_check, x, w_ih, w_hh, b_ih, b_hh, h0, lengths)
        return _rerun.rnn(x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse, relu)
    return out[0], out[1]
