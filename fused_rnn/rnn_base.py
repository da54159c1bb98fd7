"""What fused_rnn's recurrent modules share: torch.nn.RNNBase's parameters, plus a
forward that walks layers and directions and hands each (layer, direction) to one
fused op call. Subclasses say how many state tensors a cell has and run one layer.

We derive from torch.nn.RNNBase, not from torch.nn.LSTM/GRU/RNN, so that constructor
arguments, parameter names and shapes, init, state_dict and repr are torch's own, while
torch.compile still traces the module (Dynamo refuses instances of torch.nn.LSTM/GRU/RNN).
"""
import torch

from ._autocast import AUTOCAST_ELIGIBLE, autocast_cast, cpu_autocast_dtypes
from ._extension import check_device
from ._no_script import NotScriptable
from ._onnx_export import exporting_to_onnx
from ._sequence import to_sequence
from .ops import eager_states, module_forward

_ROLES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")


def current_weights(module, names):
    """The module's tensors of these names, in order (None where a name is None)."""
    # From _parameters where a parameter is (getattr's way there, Module.__getattr__,
    # cost ~1 us each); from getattr where it is not: a reparametrized weight, or a
    # DataParallel replica's, lives on the class or in __dict__, which getattr would
    # have found first.
    params = module._parameters
    weights = []
    for name in names:
        if name is None:
            weights.append(None)
        elif name in params:  # a parameter, or None for an absent bias
            weights.append(params[name])
        else:
            weights.append(getattr(module, name))
    return weights


class FusedRNNBase(NotScriptable, torch.nn.RNNBase):
    #: names of the state tensors in error messages, e.g. ("h_0", "c_0")
    state_names = ("h_0",)

    def flatten_parameters(self):
        """A no-op: torch.nn packs weights into one buffer for cuDNN; our kernels read the
        parameters where they are."""

    def state_sizes(self):
        """Feature size of each state tensor, in order."""
        raise NotImplementedError

    def cpu_autocast_lowers(self, x, packed):
        """Whether torch.nn's module returns the autocast dtype under torch.autocast("cpu")
        for input x (time-major; packed: it came as a PackedSequence); _autocast.py."""
        raise NotImplementedError

    def carried_state(self, hx):
        """The state of hx that the cell adds in from step to step (h_0; the LSTM's c_0),
        or None (not given, or not in a form the checks will accept)."""
        return hx if isinstance(hx, torch.Tensor) else None

    def run_layer(self, x, weights, state, lengths, reverse):
        """One layer, one direction: x [T, B, I], weights (5 of flat_layer_weights), state
        sequence of [B, F] → (y [T, B, F_out], final state tuple)."""
        raise NotImplementedError

    def flat_layer_weights(self):
        """Every (layer, direction)'s (weight_ih, weight_hh, bias_ih, bias_hh, weight_hr), as
        in _ROLES, in one flat list: k = layer * D + direction's at [5k, 5k + 5), each a
        tensor (a parameter, or what a parametrization or replica puts there) or None."""
        # Which parameter name plays each role, worked out once (a streaming call of one
        # step spent ~5 us here); the parameters themselves are looked up on every call,
        # as torch.nn does, so that reassigned or reparametrized weights are seen.
        names = self.__dict__.get("_weight_names")
        if names is None:
            names = []
            for layer_names in self._all_weights:
                found = {name.split("_l")[0]: name for name in layer_names}
                names.extend(found.get(role) for role in _ROLES)
            self.__dict__["_weight_names"] = names
        return current_weights(self, names)

    # --------------------------------------------------------------- states

    def _initial_states(self, seq, hx, run_dtype=None):
        """Per state, what indexing by k = layer * D + direction gives that layer's [B, F]
        initial state: the checked user tensor [L*D, B, F], or a list holding one tensor
        of zeros L*D times. run_dtype: under CPU autocast, the dtype hx is cast to."""
        L = self.num_layers * (2 if self.bidirectional else 1)
        ref = seq.x
        B = ref.shape[1]
        if hx is None:
            # One [B, F] of zeros that every layer reads (the ops never write their
            # arguments), not [L*D, B, F] and a view of it per layer (~3 us).
            return tuple([ref.new_zeros(B, f)] * L for f in self.state_sizes())
        name = type(self).__name__
        shapes = [(L, B, f) for f in self.state_sizes()]
        # torch.nn raises RuntimeError for a wrong number of LSTM states; a GRU or RNN
        # given a tuple fails there on the tuple (AttributeError): a TypeError here.
        if len(shapes) == 1 and not isinstance(hx, torch.Tensor):
            raise TypeError(f"{name}: hx must be a Tensor h_0, got {type(hx).__name__}")
        states = hx if isinstance(hx, (tuple, list)) else (hx,)
        if len(states) != len(shapes):
            raise RuntimeError(f"{name}: hx must be a tuple (h_0, c_0) of two Tensors, got "
                               f"{'a Tensor' if isinstance(hx, torch.Tensor) else len(states)}")
        want_dim = 2 if seq.unbatched else 3
        for s_name, s in zip(self.state_names, states):
            if not isinstance(s, torch.Tensor):
                raise TypeError(f"{name}: {s_name} must be a Tensor, got {type(s).__name__}")
            if s.dim() != want_dim:
                kind = "unbatched 2-D" if seq.unbatched else "batched 3-D"
                raise RuntimeError(f"{name}: for {kind} input, {s_name} must be {want_dim}-D, "
                                   f"got {s.dim()}-D with shape {list(s.shape)}")
        # Under CUDA autocast the ops cast the states as they cast the input (float16, as
        # cuDNN's autocast rule casts torch.nn's hx): a state returned by an earlier call
        # in float16 comes back with float32 input.
        cast_by_op = ref.is_cuda and torch.is_autocast_enabled("cuda")
        out = []
        for s_name, s, shape in zip(self.state_names, states, shapes):
            # Checked in the caller's form, before a packed input's permutation of the batch
            # rows would pick rows out of a wrong-sized state or index past it.
            want = shape if not seq.unbatched else (shape[0], shape[2])
            if tuple(s.shape) != want:
                raise RuntimeError(f"{name}: Expected {s_name} size {want}, got {list(s.shape)}")
            s = seq.state_in(s if run_dtype is None else autocast_cast(s, run_dtype))
            same_dtype = s.dtype == ref.dtype or (
                cast_by_op and s.dtype in AUTOCAST_ELIGIBLE and ref.dtype in AUTOCAST_ELIGIBLE)
            if not same_dtype or s.device != ref.device:
                raise RuntimeError(f"{name}: {s_name} must have the input's dtype and device "
                                   f"({ref.dtype}, {ref.device}), got ({s.dtype}, {s.device})")
            out.append(s)
        return tuple(out)

    def _check_weights(self, x, w):
        """x: the time-major input; w: the first layer's weight_ih."""
        # Under CUDA autocast the ops cast their arguments themselves (as torch.nn's do).
        if x.dtype != w.dtype and not (x.is_cuda and torch.is_autocast_enabled("cuda")):
            raise ValueError(f"{type(self).__name__}: input dtype ({x.dtype}) does not match weight "
                             f"dtype ({w.dtype}). Convert input: input.to({w.dtype}), or convert "
                             f"model: model.to({x.dtype})")
        if x.is_cpu and w.is_cpu:  # the common case, without making device objects
            return
        device = x.device
        if device != w.device:
            raise RuntimeError(f"{type(self).__name__}: input is on {device} but the weights are "
                               f"on {w.device}; move one of them")
        check_device(type(self).__name__, device)

    # --------------------------------------------------------------- forward

    def forward(self, input, hx=None):
        # Plain tensors in eager mode: the whole forward in one C++ call, which declines
        # (returns []) wherever the Python route below must run or raise an error.
        states = eager_states(input, hx)
        if states is not None:
            weights = self.flat_layer_weights()
            out = module_forward(self.mode, input, states, weights, self.num_layers,
                                 self.bidirectional, self.batch_first, self.dropout,
                                 self.training, self.input_size, self.hidden_size,
                                 self.proj_size)
            if out:
                return out[0], out[1] if len(out) == 2 else (out[1], out[2])
            # Declined: the same weights (a parametrization runs once per call).
            return self._forward_python(input, hx, weights)
        if exporting_to_onnx():
            return self.torch_class.forward(self, input, hx)
        return self._forward_python(input, hx)

    def _forward_python(self, input, hx, weights=None):
        """forward for every input and mode: layer by layer through the layer ops.
        weights: flat_layer_weights() where the caller has them already."""
        name = type(self).__name__
        seq = to_sequence(name, input, self.batch_first, self.input_size)
        if weights is None:
            weights = self.flat_layer_weights()
        lowers = self.cpu_autocast_lowers(seq.x, seq.lengths is not None)
        amp = cpu_autocast_dtypes(seq.x, lowers, self.carried_state(hx), self.proj_size == 0)
        run_dtype = None
        if amp is not None:
            run_dtype, result_dtype, state_dtype = amp
            seq.x = autocast_cast(seq.x, run_dtype)
            weights = [autocast_cast(w, run_dtype) for w in weights]
        x = seq.x
        self._check_weights(x, weights[0])
        if x.shape[0] == 0:  # as torch.nn does
            raise RuntimeError(f"{name}: Expected sequence length to be larger than 0 in RNN")
        states = self._initial_states(seq, hx, run_dtype)
        D = 2 if self.bidirectional else 1
        finals = []  # per (layer, direction), its tuple of final states
        layer_in = x
        for layer in range(self.num_layers):
            outs = []
            for direction in range(D):
                k = layer * D + direction
                y, final = self.run_layer(layer_in, weights[5 * k:5 * k + 5],
                                          [s[k] for s in states],
                                          seq.lengths, reverse=direction == 1)
                outs.append(y)
                finals.append(final)
            layer_in = outs[0] if D == 1 else torch.cat(outs, dim=2)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_in = seq.dropout(layer_in, self.dropout)
        if amp is not None:
            layer_in = layer_in.to(result_dtype)
        output = seq.output(layer_in)
        # A stack even of one (layer, direction): a copy, not a view, as torch.nn's h_n
        # (h_n.detach_() must work); module_forward does the same without the copy.
        final_states = [seq.state_out(torch.stack(fs, dim=0)) for fs in zip(*finals)]
        if amp is not None:
            # torch.nn's projected LSTM keeps c unlowered under CPU autocast (_autocast.py).
            dtypes = [result_dtype] * len(final_states)
            if self.proj_size > 0:
                dtypes[1] = state_dtype
            final_states = [s.to(d) for s, d in zip(final_states, dtypes)]
        return output, tuple(final_states) if len(final_states) > 1 else final_states[0]
