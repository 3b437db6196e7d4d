"""LSTM, GRU and RNN layers that are drop-in for their ``torch.nn`` namesakes.

Same constructor arguments, parameter names and shapes (``weight_ih_l0``, ``bias_hh_l1_reverse``,
``weight_hr_l0`` ...), inputs (batched, unbatched, ``batch_first``, :class:`PackedSequence` with
ragged lengths, optional initial state) and outputs. The parameter bookkeeping, initialisation and
argument checks are torch's own (these classes derive from :class:`torch.nn.RNNBase`, so a
``state_dict`` moves both ways unchanged and every constructor error is torch's); the forward pass is
ours: stacking, directions, lengths and dropout here, the time loop in a backend of
:mod:`lstm.kernels`, the equations in :mod:`lstm.cells`.

Example:
    >>> import torch, lstm
    >>> rnn = lstm.LSTM(input_size=10, hidden_size=20, num_layers=2)
    >>> output, (h_n, c_n) = rnn(torch.randn(5, 3, 10))  # (T, B, I)
    >>> tuple(output.shape), tuple(h_n.shape)
    ((5, 3, 20), (2, 3, 20))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from lstm import cells
from lstm.kernels import Backend, get_backend

__all__ = ["GRU", "LSTM", "RNN", "GRUCell", "LSTMCell", "LayerTrace", "RNNCell", "keras_init_"]


# --------------------------------------------------------------------------------------------
# Helpers on padded, time-major sequences
# --------------------------------------------------------------------------------------------


def lengths_from_batch_sizes(batch_sizes: Tensor) -> Tensor:
    """A PackedSequence's ``batch_sizes (T,)`` -> each sequence's length ``(B,)``, sorted order."""
    batch = torch.arange(int(batch_sizes[0]))
    return (batch_sizes.unsqueeze(0) > batch.unsqueeze(1)).sum(1)


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverses each sequence of ``x (T, B, ...)`` within its own length; padding stays put."""
    if lengths is None:
        return x.flip(0)
    T = x.shape[0]
    t = torch.arange(T, device=x.device).unsqueeze(1)  # (T, 1)
    lengths = lengths.to(x.device).unsqueeze(0)  # (1, B)
    index = torch.where(t < lengths, lengths - 1 - t, t)  # (T, B)
    index = index.view(T, -1, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(0, index)


def _dropout_like_torch(x: Tensor, p: float, lengths: Tensor | None) -> Tensor:
    """Dropout between layers, drawn over the same elements as torch draws it (the padded
    ``(T, B, ·)`` tensor, or the packed rows when lengths are ragged), so that a seeded run
    matches torch.nn bit for bit."""
    if lengths is None:
        return F.dropout(x, p, training=True)
    packed = pack_padded_sequence(x, lengths)
    dropped = F.dropout(packed.data, p, training=True)
    return pad_packed_sequence(
        PackedSequence(dropped, packed.batch_sizes), total_length=x.shape[0]
    )[0]


def _check_state_dtype(input: Tensor, states: tuple[Tensor, ...]) -> None:
    # torch reports this from deep inside its kernels ("get_mkldnn_dtype: unsupported data type",
    # "mat1 and mat2 must have the same dtype"); same exception type, a message that says what.
    for name, state in zip(("hx", "cx"), states):
        if state.dtype != input.dtype:
            raise RuntimeError(
                f"{name} dtype ({state.dtype}) does not match input dtype ({input.dtype})"
            )
        if state.device != input.device:
            raise RuntimeError(
                f"{name} is on {state.device} but input is on {input.device}: "
                "input and hidden tensors must be on the same device"
            )


@dataclass
class LayerTrace:
    """What one layer and direction computed at every step, for looking inside.

    Each tensor is ``(T, B, ·)`` in the time order of the input (also for the reverse direction),
    or ``(B, T, ·)`` when the module is ``batch_first``; padding steps of ragged input hold the
    carried state. ``gates`` maps a gate's name to its activations: ``input``, ``forget``,
    ``candidate`` and ``output`` for the LSTM (:math:`i, f, \\tilde C, o`); ``reset``, ``update``
    and ``candidate`` for the GRU; nothing for the plain RNN. ``cell`` is :math:`C_t` (LSTM only),
    ``hidden`` is :math:`h_t`.
    """

    layer: int
    direction: int
    hidden: Tensor
    cell: Tensor | None = None
    gates: dict[str, Tensor] = field(default_factory=dict)


_GATE_NAMES = {"LSTM": ("input", "forget", "candidate", "output"),
               "GRU": ("reset", "update", "candidate")}  # fmt: skip


# --------------------------------------------------------------------------------------------
# The multi-layer, bidirectional, ragged-length recurrence, shared by LSTM, GRU and RNN
# --------------------------------------------------------------------------------------------


class _Recurrent(nn.RNNBase):
    """Shared forward machinery. Subclasses set ``mode`` like torch (LSTM, GRU, RNN_TANH, ...)."""

    def __init__(self, mode: str, *args: Any, backend: str = "auto", **kwargs: Any) -> None:
        super().__init__(mode, *args, **kwargs)
        self.backend = backend
        # Parameter names per (layer, direction), built once: the forward pass reads them per call.
        self._param_names = [
            tuple(f"{kind}_l{layer}{'_reverse' if d else ''}"
                  for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"))
            for layer in range(self.num_layers) for d in range(2 if self.bidirectional else 1)
        ]  # fmt: skip

    # -- conversion to and from torch.nn -----------------------------------------------------

    def _config(self) -> dict[str, Any]:
        config = dict(
            input_size=self.input_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            bias=self.bias,
            batch_first=self.batch_first,
            dropout=self.dropout,
            bidirectional=self.bidirectional,
        )
        if self.mode == "LSTM":
            config["proj_size"] = self.proj_size
        if self.mode.startswith("RNN_"):
            config["nonlinearity"] = self.nonlinearity
        return config

    _torch_class: type[nn.RNNBase]

    @classmethod
    def from_torch(cls, module: nn.RNNBase, backend: str = "auto") -> _Recurrent:
        """A copy of a ``torch.nn`` module of the same kind, with the same weights."""
        if not isinstance(module, cls._torch_class):
            raise TypeError(
                f"from_torch expects a torch.nn.{cls._torch_class.__name__}, "
                f"got {type(module).__name__}"
            )
        first = next(module.parameters())
        ours = cls(**cls._config(module), backend=backend, device=first.device, dtype=first.dtype)
        ours.load_state_dict(module.state_dict())
        return ours.train(module.training)

    def to_torch(self) -> nn.RNNBase:
        """A ``torch.nn`` module of the same kind, with the same weights."""
        first = next(self.parameters())
        theirs = self._torch_class(**self._config(), device=first.device, dtype=first.dtype)
        theirs.load_state_dict(self.state_dict())
        return theirs.train(self.training)

    def extra_repr(self) -> str:
        first = self._flat_weights[0]
        try:
            name = get_backend(self.backend, first.device, first.dtype).name
        except (RuntimeError, ValueError):
            name = f"{self.backend} (unavailable)"
        return super().extra_repr() + f", backend={name}"

    # -- the forward pass ---------------------------------------------------------------------

    def _layer_weights(self, k: int) -> dict[str, Tensor | None]:
        """The parameters of layer-and-direction ``k``. A plain parameter is read from
        ``_parameters`` (five ``Module.__getattr__`` calls cost about 4 us per layer and call:
        99.9 against 96.2 us for a T=1, H=64 inference call); one that is not there (a
        parametrization such as weight norm, or a parameter replaced by a plain tensor) through
        ``getattr``, so that it applies."""
        params = self._parameters
        w_ih, w_hh, b_ih, b_hh, w_hr = (
            p if (p := params.get(n)) is not None else getattr(self, n, None)
            for n in self._param_names[k]
        )
        return dict(w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh, w_hr=w_hr)

    def _run(
        self,
        backend: Backend,
        x: Tensor,
        h0: Tensor,
        c0: Tensor | None,
        lengths: Tensor | None,
        traces: list[LayerTrace] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """The stack over time-major padded ``x (T, B, I)``; states ``(L*D, B, ·)``.

        Returns ``(output (T, B, D*P), h_n (L*D, B, P), c_n (L*D, B, H) or None)``; appends a
        :class:`LayerTrace` per layer and direction to ``traces`` when given.
        """
        T = x.shape[0]
        if T == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        D = 2 if self.bidirectional else 1
        mask = None
        if lengths is not None:
            steps = torch.arange(T, device=x.device).unsqueeze(1)  # (T, 1)
            mask = (steps < lengths.to(x.device).unsqueeze(0)).unsqueeze(-1)  # (T, B, 1)
        h_n, c_n = [], []
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(D):
                k = layer * D + direction
                w = self._layer_weights(k)
                seq = layer_input if direction == 0 else reverse_padded(layer_input, lengths)
                c_all = gates = None
                if self.mode == "LSTM":
                    bias = None if w["b_ih"] is None else w["b_ih"] + w["b_hh"]
                    args = (seq, h0[k], c0[k], w["w_ih"], w["w_hh"], bias, w["w_hr"], mask)
                    if traces is None and backend.lstm_last is not None:
                        h_all, c_last = backend.lstm_last(*args)  # no per-step c and gates
                    else:
                        h_all, c_all, gates = backend.lstm(*args)
                        c_last = c_all[-1]
                    c_n.append(c_last)
                elif self.mode == "GRU":
                    args = (seq, h0[k], w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"], mask)
                    if traces is None and backend.gru_last is not None:
                        h_all = backend.gru_last(*args)  # no per-step gates
                    else:
                        h_all, gates = backend.gru(*args)
                else:
                    bias = None if w["b_ih"] is None else w["b_ih"] + w["b_hh"]
                    h_all = backend.rnn(
                        seq, h0[k], w["w_ih"], w["w_hh"], bias, mask, self.nonlinearity
                    )
                h_n.append(h_all[-1])  # states carry through padding: the last is the final one
                out = h_all if mask is None else h_all.masked_fill(~mask, 0.0)
                outputs.append(out if direction == 0 else reverse_padded(out, lengths))
                if traces is not None:
                    traces.append(self._trace(layer, direction, h_all, c_all, gates, lengths))
            layer_input = torch.cat(outputs, dim=-1) if D == 2 else outputs[0]
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_input = _dropout_like_torch(layer_input, self.dropout, lengths)
        stack = lambda states: states[0].unsqueeze(0) if len(states) == 1 else torch.stack(states)  # noqa: E731
        return layer_input, stack(h_n), stack(c_n) if c_n else None

    def _trace(self, layer, direction, h_all, c_all, gates, lengths) -> LayerTrace:
        """A :class:`LayerTrace` in the input's time order and the module's batch layout."""

        def arrange(t: Tensor) -> Tensor:
            t = t if direction == 0 else reverse_padded(t, lengths)
            return t.transpose(0, 1) if self.batch_first else t

        named = {}
        if gates is not None:
            chunks = gates.chunk(len(_GATE_NAMES[self.mode]), dim=-1)
            named = {n: arrange(g) for n, g in zip(_GATE_NAMES[self.mode], chunks)}
        cell = None if c_all is None else arrange(c_all)
        return LayerTrace(layer, direction, arrange(h_all), cell, named)

    def _forward(
        self, input: Tensor | PackedSequence, hx: Any, return_gates: bool = False
    ) -> tuple[Any, ...]:
        """torch.nn's input handling (shapes, batching, packing, state checks), then :meth:`_run`."""
        # (torch calls _update_flat_weights() here to keep its flat cuDNN buffer in step; the
        # kernels here read the parameters themselves, so that 30 us per call is not spent.)
        is_lstm = self.mode == "LSTM"
        D = 2 if self.bidirectional else 1
        out_size = self.proj_size if self.proj_size > 0 else self.hidden_size
        packed = isinstance(input, PackedSequence)
        batch_sizes = sorted_indices = unsorted_indices = None
        is_batched = True
        batch_dim = 0 if self.batch_first else 1
        if packed:
            data, batch_sizes, sorted_indices, unsorted_indices = input
        else:
            data = input
            if data.dim() not in (2, 3):
                name = {"LSTM": "LSTM", "GRU": "GRU"}.get(self.mode, "RNN")
                tail = " tensor instead" if name == "RNN" else " instead"
                raise ValueError(f"{name}: Expected input to be 2D or 3D, got {data.dim()}D{tail}")
            is_batched = data.dim() == 3
            if not is_batched:
                data = data.unsqueeze(batch_dim)
            if hx is not None:
                want = 3 if is_batched else 2
                kind = "batched 3-D" if is_batched else "unbatched 2-D"
                if is_lstm and (hx[0].dim() != want or hx[1].dim() != want):
                    raise RuntimeError(
                        f"For {kind} input, hx and cx should also be {want}-D but got "
                        f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
                    )
                if not is_lstm and hx.dim() != want:
                    raise RuntimeError(
                        f"For {kind} input, hx should also be {want}-D but got {hx.dim()}-D tensor"
                    )
                if not is_batched:
                    hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1)) if is_lstm else hx.unsqueeze(1)
        batch = int(batch_sizes[0]) if packed else data.size(batch_dim)
        if hx is None:
            zeros = lambda size: torch.zeros(  # noqa: E731
                self.num_layers * D, batch, size, dtype=data.dtype, device=data.device
            )
            hx = (zeros(out_size), zeros(self.hidden_size)) if is_lstm else zeros(out_size)
            self.check_forward_args(data, hx, batch_sizes)
        else:
            self.check_forward_args(data, hx, batch_sizes)
            _check_state_dtype(data, hx if is_lstm else (hx,))
            hx = self.permute_hidden(hx, sorted_indices)

        if packed:
            x, lengths = pad_packed_sequence(PackedSequence(data, batch_sizes))  # (T, B, I)
        else:
            x, lengths = (data.transpose(0, 1) if self.batch_first else data), None
        backend = get_backend(self.backend, x.device, x.dtype)
        h0, c0 = hx if is_lstm else (hx, None)
        traces: list[LayerTrace] | None = [] if return_gates else None
        out, h_n, c_n = self._run(backend, x, h0, c0, lengths, traces)

        if packed:
            out = pack_padded_sequence(out, lengths).data
            out = PackedSequence(out, batch_sizes, sorted_indices, unsorted_indices)
        elif self.batch_first:
            out = out.transpose(0, 1)
        hidden = (h_n, c_n) if is_lstm else h_n
        if not packed and not is_batched:
            out = out.squeeze(batch_dim)
            hidden = (h_n.squeeze(1), c_n.squeeze(1)) if is_lstm else h_n.squeeze(1)
        if return_gates:
            if unsorted_indices is not None:  # back to the caller's batch order
                dim = 0 if self.batch_first else 1
                for tr in traces:
                    tr.hidden = tr.hidden.index_select(dim, unsorted_indices)
                    tr.cell = (
                        None if tr.cell is None else tr.cell.index_select(dim, unsorted_indices)
                    )
                    tr.gates = {
                        n: g.index_select(dim, unsorted_indices) for n, g in tr.gates.items()
                    }
            elif not is_batched:
                for tr in traces:
                    tr.hidden = tr.hidden.squeeze(batch_dim)
                    tr.cell = None if tr.cell is None else tr.cell.squeeze(batch_dim)
                    tr.gates = {n: g.squeeze(batch_dim) for n, g in tr.gates.items()}
            return out, self.permute_hidden(hidden, unsorted_indices), traces
        return out, self.permute_hidden(hidden, unsorted_indices)


@torch.no_grad()
def keras_init_(module: nn.RNNBase, forget_bias: float = 1.0) -> nn.RNNBase:
    """Keras's initialisation, in place, for an LSTM, GRU or RNN layer (ours or torch.nn's).

    Keras's defaults: the input kernel Glorot-uniform over the whole ``(I, G*H)`` matrix, the
    recurrent kernel orthogonal over ``(H, G*H)``, biases zero, and for the LSTM
    ``unit_forget_bias``: ``b_f = forget_bias`` (1 by default; Gers, Schmidhuber and Cummins 2000,
    Jozefowicz et al. 2015). Torch's own default draws every weight and bias from
    ``U(-1/sqrt(H), 1/sqrt(H))``. Torch has two biases per gate where Keras has one: ``b_ih``
    carries the value and ``b_hh`` is zero. Returns the module.
    """
    if not isinstance(module, nn.RNNBase):
        raise TypeError(
            f"keras_init_ expects an LSTM, GRU or RNN layer, got {type(module).__name__}"
        )
    H = module.hidden_size
    for name, p in module.named_parameters():
        if name.startswith(("weight_ih", "weight_hr")):
            nn.init.xavier_uniform_(p)  # fan_in + fan_out of the whole matrix, e.g. (G*H, I)
        elif name.startswith("weight_hh"):
            nn.init.orthogonal_(p)
        elif name.startswith("bias"):
            p.zero_()
            if module.mode == "LSTM" and name.startswith("bias_ih"):
                p[H : 2 * H] = forget_bias  # gate blocks (i, f, g, o): the forget gate
    return module


class LSTM(_Recurrent):
    r"""Multi-layer LSTM, drop-in for :class:`torch.nn.LSTM` (same arguments, parameters, inputs,
    outputs and errors), computed by this package's kernels.

    Per layer and direction, at each step (see :func:`lstm.cells.lstm_pointwise`):

    .. math::

        f_t &= σ(W_f·[h_{t-1}, x_t] + b_f), \quad i_t = σ(W_i·[h_{t-1}, x_t] + b_i)\\
        \tilde C_t &= \tanh(W_C·[h_{t-1}, x_t] + b_C), \quad C_t = f_t ⊙ C_{t-1} + i_t ⊙ \tilde C_t\\
        o_t &= σ(W_o·[h_{t-1}, x_t] + b_o), \quad h_t = o_t ⊙ \tanh(C_t)

    Args: as :class:`torch.nn.LSTM` (``input_size, hidden_size, num_layers=1, bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None``),
    plus ``backend`` (keyword only): ``"auto"`` (the fastest available), or a name from
    :func:`lstm.kernels.available_backends`.
    """

    _torch_class = nn.LSTM
    # torch's own checks, so the messages are the same.
    get_expected_cell_size = nn.LSTM.get_expected_cell_size
    check_forward_args = nn.LSTM.check_forward_args
    permute_hidden = nn.LSTM.permute_hidden

    def __init__(self, *args: Any, backend: str = "auto", **kwargs: Any) -> None:
        super().__init__("LSTM", *args, backend=backend, **kwargs)

    def forward(
        self,
        input: Tensor | PackedSequence,
        hx: tuple[Tensor, Tensor] | None = None,
        *,
        return_gates: bool = False,
    ) -> tuple[Any, ...]:
        """``input (T, B, I)`` (or batch-first, unbatched, packed), ``hx = (h_0, c_0)`` each
        ``(L*D, B, ·)`` -> ``output (T, B, D*P)``, ``(h_n, c_n)``.

        With ``return_gates=True`` a third item lists a :class:`LayerTrace` per layer and direction:
        the gate activations :math:`i, f, \\tilde C, o`, the cell states and the hidden states at
        every step. They are what the kernel computes anyway: the default path is not slowed.
        """
        return self._forward(input, hx, return_gates)


class GRU(_Recurrent):
    r"""Multi-layer GRU, drop-in for :class:`torch.nn.GRU` (see :func:`lstm.cells.gru_pointwise`).

    .. math::

        r_t = σ(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}), \quad
        z_t = σ(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz})\\
        n_t = \tanh(W_{in} x_t + b_{in} + r_t ⊙ (W_{hn} h_{t-1} + b_{hn})), \quad
        h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}
    """

    _torch_class = nn.GRU

    def __init__(self, *args: Any, backend: str = "auto", **kwargs: Any) -> None:
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, backend=backend, **kwargs)

    def forward(
        self,
        input: Tensor | PackedSequence,
        hx: Tensor | None = None,
        *,
        return_gates: bool = False,
    ) -> tuple[Any, ...]:
        """As :class:`torch.nn.GRU`; ``return_gates=True`` adds a list of :class:`LayerTrace`."""
        return self._forward(input, hx, return_gates)


class RNN(_Recurrent):
    r"""Multi-layer Elman RNN, drop-in for :class:`torch.nn.RNN`:
    :math:`h_t = \tanh(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})` (or ``relu``)."""

    _torch_class = nn.RNN

    def __init__(self, *args: Any, backend: str = "auto", **kwargs: Any) -> None:
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        # torch.nn.RNN takes nonlinearity as its fourth positional argument.
        if len(args) > 3:
            self.nonlinearity = args[3]
            args = args[:3] + args[4:]
        else:
            self.nonlinearity = kwargs.pop("nonlinearity", "tanh")
        if self.nonlinearity not in ("tanh", "relu"):
            raise ValueError(
                f"Unknown nonlinearity '{self.nonlinearity}'. Select from 'tanh' or 'relu'."
            )
        mode = "RNN_TANH" if self.nonlinearity == "tanh" else "RNN_RELU"
        super().__init__(mode, *args, backend=backend, **kwargs)

    def forward(
        self,
        input: Tensor | PackedSequence,
        hx: Tensor | None = None,
        *,
        return_gates: bool = False,
    ) -> tuple[Any, ...]:
        """As :class:`torch.nn.RNN`; ``return_gates=True`` adds a list of :class:`LayerTrace`."""
        return self._forward(input, hx, return_gates)


# --------------------------------------------------------------------------------------------
# Single-step cells
# --------------------------------------------------------------------------------------------


def _check_cell(name: str, input: Tensor, states: tuple[Tensor, ...], cell: nn.RNNCellBase):
    """torch.nn's cell checks, with the messages of torch's own kernels."""
    if input.dim() not in (1, 2):
        raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
    for k, state in enumerate(states):
        if state is not None and state.dim() not in (1, 2):
            what = "hidden" if name != "LSTMCell" else f"hx[{k}]"
            raise ValueError(f"{name}: Expected {what} to be 1D or 2D, got {state.dim()}D instead")
    if input.size(-1) != cell.input_size:
        raise RuntimeError(
            f"input has inconsistent input_size: got {input.size(-1)} expected {cell.input_size}"
        )
    for k, state in enumerate(states):
        if state is None:
            continue
        if input.dim() == 2 and state.dim() == 2 and input.size(0) != state.size(0):
            raise RuntimeError(
                f"Input batch size {input.size(0)} doesn't match hidden{k} batch size "
                f"{state.size(0)}"
            )
        if state.size(-1) != cell.hidden_size:
            raise RuntimeError(
                f"hidden{k} has inconsistent hidden_size: got {state.size(-1)}, "
                f"expected {cell.hidden_size}"
            )
        if state.dtype != input.dtype:
            raise RuntimeError(
                f"hx dtype ({state.dtype}) does not match input dtype ({input.dtype})"
            )
    if input.dtype != cell.weight_ih.dtype:
        raise RuntimeError(
            f"input dtype ({input.dtype}) does not match weight dtype ({cell.weight_ih.dtype})"
        )


def _batched(input: Tensor, hx: Tensor | None, size: int) -> tuple[Tensor, Tensor, bool]:
    is_batched = input.dim() == 2
    if not is_batched:
        input = input.unsqueeze(0)
    if hx is None:
        hx = torch.zeros(input.size(0), size, dtype=input.dtype, device=input.device)
    elif not is_batched:
        hx = hx.unsqueeze(0)
    return input, hx, is_batched


class _CellConversion:
    _torch_class: type[nn.RNNCellBase]

    @classmethod
    def from_torch(cls, module: nn.RNNCellBase) -> nn.RNNCellBase:
        """A copy of a ``torch.nn`` cell of the same kind, with the same weights."""
        if not isinstance(module, cls._torch_class):
            raise TypeError(
                f"from_torch expects a torch.nn.{cls._torch_class.__name__}, "
                f"got {type(module).__name__}"
            )
        kwargs = dict(
            bias=module.bias, device=module.weight_ih.device, dtype=module.weight_ih.dtype
        )
        if hasattr(module, "nonlinearity"):
            kwargs["nonlinearity"] = module.nonlinearity
        ours = cls(module.input_size, module.hidden_size, **kwargs)
        ours.load_state_dict(module.state_dict())
        return ours

    def to_torch(self) -> nn.RNNCellBase:
        """A ``torch.nn`` cell of the same kind, with the same weights."""
        kwargs = dict(bias=self.bias, device=self.weight_ih.device, dtype=self.weight_ih.dtype)
        if hasattr(self, "nonlinearity"):
            kwargs["nonlinearity"] = self.nonlinearity
        theirs = self._torch_class(self.input_size, self.hidden_size, **kwargs)
        theirs.load_state_dict(self.state_dict())
        return theirs


class LSTMCell(_CellConversion, nn.RNNCellBase):
    """One LSTM step, drop-in for :class:`torch.nn.LSTMCell`; computes :func:`lstm.cells.lstm_cell`."""

    _torch_class = nn.LSTMCell

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None
    ) -> None:
        super().__init__(input_size, hidden_size, bias, num_chunks=4, device=device, dtype=dtype)

    def forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        _check_cell("LSTMCell", input, tuple(hx) if hx is not None else (), self)
        h, is_batched = None, input.dim() == 2
        if hx is not None:
            h, c = hx
            input, h, _ = _batched(input, h, self.hidden_size)
            c = c if is_batched else c.unsqueeze(0)
        else:
            input, h, _ = _batched(input, None, self.hidden_size)
            c = torch.zeros_like(h)
        h, c = cells.lstm_cell(
            input, (h, c), self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh
        )
        return (h, c) if is_batched else (h.squeeze(0), c.squeeze(0))


class GRUCell(_CellConversion, nn.RNNCellBase):
    """One GRU step, drop-in for :class:`torch.nn.GRUCell`; computes :func:`lstm.cells.gru_cell`."""

    _torch_class = nn.GRUCell

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None
    ) -> None:
        super().__init__(input_size, hidden_size, bias, num_chunks=3, device=device, dtype=dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        _check_cell("GRUCell", input, (hx,) if hx is not None else (), self)
        input, hx, is_batched = _batched(input, hx, self.hidden_size)
        h = cells.gru_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        return h if is_batched else h.squeeze(0)


class RNNCell(_CellConversion, nn.RNNCellBase):
    """One plain RNN step, drop-in for :class:`torch.nn.RNNCell`; computes
    :func:`lstm.cells.rnn_cell`."""

    _torch_class = nn.RNNCell

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, num_chunks=1, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        _check_cell("RNNCell", input, (hx,) if hx is not None else (), self)
        if self.nonlinearity not in ("tanh", "relu"):
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
        input, hx, is_batched = _batched(input, hx, self.hidden_size)
        h = cells.rnn_cell(
            input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.nonlinearity
        )
        return h if is_batched else h.squeeze(0)
