"""The layer ops as ordinary, differentiable torch operations, for what the fused kernels
cannot do: a differentiable backward (create_graph=True: double backward, gradient
penalties, Hessian-vector products; the op's backward calls grads()), forward-mode AD
and torch.func's grad transforms (ops.py's layer wrappers call lstm/gru/rnn directly).

The re-run uses the same equations, gate order, lengths and reverse semantics as the
kernels, so its first derivatives equal theirs, and autograd takes every further
derivative. It is slow (a Python loop over time steps) and used only on those paths;
torch.nn's cuDNN RNNs refuse double backward altogether.
"""
import torch


def _step_mask(lengths, T, like):
    """mask[t] [B, 1]: True where row b is still running at step t (t < lengths[b])."""
    if lengths is None:
        return None
    steps = torch.arange(T, device=lengths.device).unsqueeze(1)
    return (steps < lengths.unsqueeze(0)).to(like.device).unsqueeze(2)


def _compute_dtype(x):
    # As in the kernels: 16-bit inputs are computed in float32.
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def _as(dtype, *tensors):
    # Tensors (or None) in `dtype`: the compute dtype going in, the input's coming out.
    return tuple(t.to(dtype) if t is not None else None for t in tensors)


def _run(x, h0, c0, lengths, reverse, step):
    """Runs step(t, h, c) -> (h', c') over t in the op's order, applying lengths; the
    output of a step is its h'."""
    T = x.shape[0]
    mask = _step_mask(lengths, T, x)
    h, c = h0, c0
    ys = [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        h_new, c_new = step(t, h, c)
        y_t = h_new
        if mask is not None:  # a finished row keeps its state and outputs zeros
            m = mask[t]
            y_t = torch.where(m, h_new, torch.zeros_like(h_new))
            h_new = torch.where(m, h_new, h)
            c_new = torch.where(m, c_new, c) if c is not None else None
        ys[t] = y_t
        h, c = h_new, c_new
    y = torch.stack(ys) if T > 0 else x.new_zeros((0,) + tuple(h0.shape))
    return y, h, c


def lstm(x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, lengths, reverse):
    """y [T, B, P], h_n, c_n of fused_rnn::lstm_forward; gates i, f, g, o."""
    out_dt = x.dtype
    x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0 = _as(_compute_dtype(x), x, w_ih, w_hh, b_ih, b_hh,
                                                  w_hr, h0, c0)
    xw = x @ w_ih.t()
    if b_ih is not None:
        xw = xw + (b_ih + b_hh)

    def step(t, h, c):
        i, f, g, o = (xw[t] + h @ w_hh.t()).chunk(4, 1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        return (h_new @ w_hr.t() if w_hr is not None else h_new), c_new

    return _as(out_dt, *_run(x, h0, c0, lengths, reverse, step))


def gru(x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse):
    """y, h_n of fused_rnn::gru_forward; gates r, z, n with
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) * n + z * h."""
    out_dt = x.dtype
    x, w_ih, w_hh, b_ih, b_hh, h0 = _as(_compute_dtype(x), x, w_ih, w_hh, b_ih, b_hh, h0)
    xw = x @ w_ih.t()
    if b_ih is not None:
        xw = xw + b_ih

    def step(t, h, _c):
        hw = h @ w_hh.t()
        if b_hh is not None:
            hw = hw + b_hh
        x_r, x_z, x_n = xw[t].chunk(3, 1)
        h_r, h_z, h_n = hw.chunk(3, 1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        return (1 - z) * n + z * h, None

    y, h, _ = _run(x, h0, None, lengths, reverse, step)
    return _as(out_dt, y, h)


def rnn(x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse, relu):
    """y, h_n of fused_rnn::rnn_forward: h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)."""
    out_dt = x.dtype
    x, w_ih, w_hh, b_ih, b_hh, h0 = _as(_compute_dtype(x), x, w_ih, w_hh, b_ih, b_hh, h0)
    xw = x @ w_ih.t()
    if b_ih is not None:
        xw = xw + (b_ih + b_hh)
    act = torch.relu if relu else torch.tanh

    def step(t, h, _c):
        return act(xw[t] + h @ w_hh.t()), None

    y, h, _ = _run(x, h0, None, lengths, reverse, step)
    return _as(out_dt, y, h)


def grads(layer, inputs, needs_input_grad, outputs_grads):
    """The op's backward as a differentiable graph: re-runs `layer(*inputs)` and returns
    d(outputs)/d(input) applied to outputs_grads for each input autograd asked for (None
    for the others), with create_graph=True so that it can be differentiated again."""
    with torch.enable_grad():
        outputs = layer(*inputs)
    wanted = [k for k, (t, need) in enumerate(zip(inputs, needs_input_grad))
              if need and isinstance(t, torch.Tensor)]
    pairs = [(o, g) for o, g in zip(outputs, outputs_grads)
             if g is not None and o is not None and o.requires_grad]
    result = [None] * len(inputs)
    if not wanted or not pairs:
        return result
    got = torch.autograd.grad([o for o, _ in pairs], [inputs[k] for k in wanted],
                              [g.to(o.dtype) for o, g in pairs], create_graph=True,
                              allow_unused=True)
    for k, g in zip(wanted, got):
        inp = inputs[k]
        result[k] = torch.zeros_like(inp) if g is None else g.to(inp.dtype)
    return result
