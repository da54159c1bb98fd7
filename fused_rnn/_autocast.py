"""torch.autocast("cpu") for the modules and cells: the dtypes torch.nn's return there.

torch.nn's recurrent modules have no autocast rule of their own on the CPU; what they return
follows from how ATen runs each (measured with torch 2.13 and 2.14, tests/test_cpu_autocast.py).
A is the autocast dtype (bfloat16 by default), and S the dtype of the state a module carries
from step to step and adds in unlowered (c for the LSTM, h for the GRU; the input's dtype when
no hx is given):
- LSTM on padded input without projection runs oneDNN's LSTM, which autocast casts: output,
  h_n and c_n in A (while oneDNN is enabled: torch.backends.mkldnn);
- LSTM with a projection: output and h_n in A (the projection is a linear), c_n in
  promote(A, S);
- LSTM on a PackedSequence without projection, GRU, LSTMCell, GRUCell: everything in
  promote(A, S) (their products run in A, then the state is added in);
- RNN and RNNCell: A.
Where the CPU multiplies bfloat16 natively (AVX512-BF16) and A is bfloat16, ours cast input,
weights and states to bfloat16 and run the layers' products in bfloat16, as torch.nn's
products run in A (csrc/cpu/bf16_gemm.h: twice float32's rate), in calls long enough to pay
for packing the weights, then return torch.nn's dtypes; the state itself is kept in float32
inside a layer either way. Elsewhere (A float16, other CPUs, a projected LSTM, a cell's one
step, short calls) ours compute in float32 and round the results to those dtypes: the CPU
kernels compute half precision in float32 anyway, so casting the weights down would only
cost time (2x at B = 1, H = 256, T = 100) and round away precision. The Python route calls
these; the C++ module route (csrc/module_forward.cpp) applies the same table to float32 input
and sends other input dtypes here (tests/test_module_route.py: both routes agree bit for bit
under autocast).
"""
import torch

# What autocast casts: floating point, but not float64.
AUTOCAST_ELIGIBLE = (torch.float32, torch.float16, torch.bfloat16)


def _bf16_dot(x):
    """Whether the layers multiply x [T, B, I] in bfloat16 here (csrc/cpu/bf16_gemm.h:
    the CPU, FUSED_RNN_BF16_DOT, and whether the call is long enough to pay for packing).
    Not in compiled code, which cannot call an op that returns a bool: it works in float32."""
    if torch.compiler.is_compiling():
        return False
    return torch.ops.fused_rnn.cpu_bf16_dot(x.shape[0], x.shape[1])


def cpu_autocast_dtypes(x, lowers, state=None, bf16_products=False):
    """(compute dtype, result dtype, state dtype) of a module with input x under
    torch.autocast("cpu"), or None when not under it (or x is not on the CPU).
    - lowers: whether torch.nn's module returns the autocast dtype A for this input;
    - state: the carried state passed in (c_0 or h_0; None: zeros of x's dtype);
    - bf16_products: whether the module's layers can multiply bfloat16 in bfloat16 (not a
      projected LSTM), which they then do where A is bfloat16 and this CPU can (_bf16_dot;
      x time-major), as torch.nn's products run in A;
    The state dtype, promote(A, state's dtype), is the result dtype where the module does
    not lower and a projected LSTM's c_n. float64 input is left as it is, as autocast
    leaves it."""
    if not x.is_cpu or not torch.is_autocast_enabled("cpu"):
        return None
    if x.dtype not in AUTOCAST_ELIGIBLE:
        return x.dtype, x.dtype, x.dtype
    low = torch.get_autocast_dtype("cpu")
    carried = state.dtype if isinstance(state, torch.Tensor) else x.dtype
    kept = torch.promote_types(low, carried)
    work = (torch.bfloat16 if bf16_products and low == torch.bfloat16 and _bf16_dot(x)
            else torch.float32)
    return work, low if lowers else kept, kept


def cuda_cell_autocast_dtype(x):
    """The dtype torch.nn's cells compute and return in under torch.autocast("cuda") for
    input x: lstm_cell, gru_cell and the rnn cells are on CUDA autocast's lower-precision
    list, so every argument goes to the autocast dtype (float16, or bfloat16 where chosen).
    None when not under it, x is not on CUDA, or x is float64 (which autocast leaves).
    torch.nn's modules instead cast to float16 whatever the autocast dtype (cuDNN's rule;
    csrc/cuda/autocast.cpp does the same for the layer ops)."""
    if (not x.is_cuda or not torch.is_autocast_enabled("cuda")
            or x.dtype not in AUTOCAST_ELIGIBLE):
        return None
    return torch.get_autocast_dtype("cuda")


def autocast_cast(t, dtype):
    """t in dtype where autocast would cast it (both floating, neither float64), else t
    (None stays None; a float64 mismatch is left for the dtype checks to report). A
    differentiable cast: gradients return in t's dtype, as under torch.nn."""
    if (t is None or t.dtype == dtype or dtype not in AUTOCAST_ELIGIBLE
            or t.dtype not in AUTOCAST_ELIGIBLE):
        return t
    return t.to(dtype)
