"""FLOP counts of a case: the GEMMs only (2 flops per multiply-add), as is usual for RNN
benchmarks (DeepBench, cuDNN). The pointwise gate math is a few percent of it at H >= 128
and is left out, so GFLOP/s compares directly with the device's GEMM peak.

Per real time step of one row, one direction of one layer with input width I:
  gates G = {lstm: 4, gru: 3, rnn: 1} · H,  forward = 2 · G · (I + P)  (+ 2 · H · P for the
  LSTM projection, P = proj_size or H). Training adds the backward: dX and dW of every GEMM,
  twice the forward's GEMMs, so training = 3 × forward.
"""

_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def forward_flops_per_token(case):
    H = case.hidden_size
    P = case.proj_size if case.proj_size else H
    D = 2 if case.bidirectional else 1
    G = _GATES[case.cell] * H
    total = 0
    in_width = case.input_size
    for _ in range(case.layers):
        per_dir = 2 * G * (in_width + P)
        if case.proj_size:
            per_dir += 2 * H * P
        total += D * per_dir
        in_width = D * P
    return total


def case_flops(case, tokens):
    """Total GEMM flops of one timed iteration over `tokens` real (row, step) pairs."""
    f = forward_flops_per_token(case) * tokens
    return 3 * f if case.mode == "training" else f
