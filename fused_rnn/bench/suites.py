"""Named suites: lists of cases, sized for the device (CPU suites are scaled down so that
they finish in minutes on a laptop-class CPU; the scaling is stated per suite)."""
from .cases import Case

SUITES = ("quick", "latency", "streaming", "cells", "training", "varlen", "fastrnns")
DESCRIPTIONS = {
    "quick": "a few mid-size and small shapes, both modes (about a minute on a 2-core CPU)",
    "latency": "batch 1-16 at T=100, inference",
    "streaming": "one time step per call with the state carried in (a streaming server, a "
                 "decoder loop), both modes",
    "cells": "the streaming suite's shapes through the cell modules (LSTMCell, GRUCell, "
             "RNNCell), both modes",
    "training": "DeepBench RNN training shapes, training mode: the LSTM's 22 (T=25-150), the "
                "GRU's 3 at B=32, H=1536-2560, T=187-750 (of its 16), the LSTM's for the Elman "
                "RNN (CPU: H/4, GRU T/4)",
    "varlen": "PackedSequence batches of random lengths in [T/4, T], both modes",
    "fastrnns": "PyTorch's fastrnns default: T=100, B=64, I=H=512, both modes",
}
# Modes a suite runs unless --mode says otherwise.
DEFAULT_MODES = {"latency": ("inference",), "training": ("training",)}


def _shapes(name, cell, gpu):
    """(T, B, H) triples of a suite for one cell; I = H throughout."""
    if name == "quick":
        if gpu:
            return [(100, 64, 512), (100, 16, 1024), (100, 1, 512), (50, 256, 1024)]
        return [(100, 16, 256), (200, 4, 128), (100, 1, 256), (50, 64, 512)]
    if name == "latency":
        H = 512 if gpu else 256
        return [(100, b, H) for b in (1, 2, 4, 8, 16)]
    if name in ("streaming", "cells"):
        if gpu:
            return [(1, 1, 512), (1, 16, 512), (1, 1, 1024), (1, 64, 1024)]
        return [(1, 1, 128), (1, 4, 128), (1, 1, 512), (1, 4, 512), (1, 16, 256)]
    if name == "fastrnns":
        return [(100, 64, 512)]
    if name == "varlen":
        if gpu:
            return [(100, 64, 512), (200, 256, 1024)]
        return [(100, 16, 256), (100, 64, 256)]
    if name == "training":
        # DeepBench (baidu-research/DeepBench) RNN training shapes.
        if cell == "gru":
            full = [(750, 32, 1536), (375, 32, 2048), (187, 32, 2560)]
        else:
            full = [(25, b, h) for h in (512, 1024, 2048, 4096) for b in (16, 32, 64, 128)]
            full += [(50, b, 1536) for b in (8, 16, 32)]
            full += [(150, b, 256) for b in (16, 32, 64)]
        if gpu:
            return full
        return [(t // 4 if cell == "gru" else t, b, h // 4) for t, b, h in full]
    raise ValueError(f"unknown suite {name!r}; choose from {', '.join(SUITES)}")


def suite_cases(name, cells, modes, gpu):
    """Cases of suite `name` for each cell and mode (modes None: the suite's defaults)."""
    modes = modes or DEFAULT_MODES.get(name, ("inference", "training"))
    cases = []
    for cell in cells:
        for t, b, h in _shapes(name, cell, gpu):
            for mode in modes:
                cases.append(Case(cell=cell, mode=mode, seq_len=t, batch=b, input_size=h,
                                  hidden_size=h, varlen=name == "varlen",
                                  state=name in ("streaming", "cells"),
                                  step_cell=name == "cells", suite=name))
    return cases
