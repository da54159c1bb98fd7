"""A clear error from torch.jit.script, instead of TorchScript's failure deep inside our
Python forward (which it cannot compile: it calls custom ops through Python helpers)."""


class NotScriptable:
    """Mixin for the fused modules. torch.jit.script calls __prepare_scriptable__ on every
    module before compiling it (torch.jit.trace, torch.compile and torch.export do not)."""

    def __prepare_scriptable__(self):
        name = type(self).__name__
        raise RuntimeError(
            f"fused_rnn.{name} cannot be compiled by torch.jit.script (deprecated in torch). "
            "torch.compile, torch.export and torch.jit.trace work and run the fused kernels; "
            f"to script a model anyway, swap its fused modules back to torch.nn.{name} first "
            "with fused_rnn.to_torch(model).")
