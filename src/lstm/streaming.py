"""Inference one time step at a time, with the state carried between calls.

For keyword spotting, online forecasting and any loop that gets one frame at a time: batch 1 is the
common case, and the cost that matters is the overhead of each call, not throughput.

Example:
    >>> import torch, lstm
    >>> model = lstm.LSTM(input_size=8, hidden_size=16, num_layers=2)
    >>> stream = lstm.Streamer(model)            # batch 1; weights are copied once, here
    >>> for frame in torch.randn(5, 8):          # one step per call
    ...     y = stream.step(frame)               # (16,): the last layer's h_t
    >>> h, c = stream.state                       # (2, 1, 16) each, like model's (h_n, c_n)
    >>> stream.reset()                            # zeros again

The steps run in the fused CPU kernels (one C++ call per step: a few small matrix products and one
pass over the gates per layer, no Python per layer); without them (no compiler) the same steps run
the equations of :mod:`lstm.cells` under :func:`torch.inference_mode`. The outputs equal running the
module over the whole sequence at once.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lstm import cells

__all__ = ["Streamer"]


class Streamer:
    """Steps a unidirectional LSTM, GRU or RNN (ours or ``torch.nn``'s) through time, one input at
    a time, carrying the state.

    Args:
        module: an :class:`lstm.LSTM`/``GRU``/``RNN`` or :class:`torch.nn.LSTM`/``GRU``/``RNN``,
            unidirectional, on the CPU, float32 or float64. Its weights are copied when the
            streamer is made: make a new one after training further. Dropout is not applied.
        batch_size: how many independent streams run side by side (default 1).
        state: an initial state, as the module takes it (``(h_0, c_0)`` for LSTM, ``h_0``
            otherwise, each ``(num_layers, batch_size, ·)``); zeros if ``None``.

    ``step(x)`` takes ``x`` of shape ``(batch_size, input_size)`` (or ``(input_size,)`` when
    ``batch_size`` is 1) and returns the last layer's new hidden state, shaped alike.
    """

    def __init__(self, module: nn.RNNBase, batch_size: int = 1, state=None) -> None:
        if not isinstance(module, nn.RNNBase):
            raise TypeError(
                f"module should be an LSTM, GRU or RNN (lstm or torch.nn), got {type(module).__name__}"
            )
        if module.bidirectional:
            raise ValueError("module is bidirectional: a stream cannot see the future")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size should be a positive int, got {batch_size!r}")
        first = module.weight_ih_l0
        if first.device.type != "cpu" or first.dtype not in (torch.float32, torch.float64):
            raise ValueError(
                f"Streamer runs CPU float32/float64 modules, got {first.device} {first.dtype}"
            )
        self.mode = module.mode  # "LSTM", "GRU", "RNN_TANH" or "RNN_RELU"
        self.num_layers = module.num_layers
        self.batch_size = batch_size
        self.input_size = module.input_size
        self.hidden_size = module.hidden_size
        self.proj_size = getattr(module, "proj_size", 0)
        out = self.proj_size or self.hidden_size
        layer = lambda name: [  # noqa: E731
            getattr(module, f"{name}_l{k}").detach().clone() for k in range(self.num_layers)
        ]
        self._w_ih, self._w_hh = layer("weight_ih"), layer("weight_hh")
        self._b_ih = layer("bias_ih") if module.bias else []
        self._b_hh = layer("bias_hh") if module.bias else []
        self._w_hr = layer("weight_hr") if self.proj_size else []
        opts = dict(dtype=first.dtype, device=first.device)
        self._h = torch.zeros(self.num_layers, batch_size, out, **opts)
        self._c = (
            torch.zeros(self.num_layers, batch_size, self.hidden_size, **opts)
            if self.mode == "LSTM"
            else None
        )
        if state is not None:
            self.reset(state)

        from lstm.kernels import cpu

        ext = cpu.load_extension()
        if ext is not None:
            self._stepper = ext.Stepper(
                self.mode, self._w_ih, self._w_hh, self._b_ih, self._b_hh, self._w_hr,
                self._h, self._c,
            )  # fmt: skip
            # The bound C++ method itself: no Python frame between the caller and the kernels.
            self.step = self._stepper.step
            self.backend = "cpu"
        else:
            self.backend = "reference"

    @property
    def state(self) -> tuple[Tensor, Tensor] | Tensor:
        """The current state, ``(h, c)`` for LSTM or ``h``, each ``(num_layers, batch, ·)``: the
        streamer's own tensors, updated in place by each step (clone them to keep a copy)."""
        return (self._h, self._c) if self.mode == "LSTM" else self._h

    def reset(self, state=None) -> None:
        """Sets the state to zeros, or to ``state`` (as the module takes it), in place."""
        with torch.no_grad():
            if state is None:
                self._h.zero_()
                if self._c is not None:
                    self._c.zero_()
                return
            h, c = state if self.mode == "LSTM" else (state, None)
            if tuple(h.shape) != tuple(self._h.shape):
                raise ValueError(
                    f"state h should have shape {tuple(self._h.shape)}, got {tuple(h.shape)}"
                )
            self._h.copy_(h)
            if self._c is not None:
                if c is None or tuple(c.shape) != tuple(self._c.shape):
                    got = None if c is None else tuple(c.shape)
                    raise ValueError(f"state c should have shape {tuple(self._c.shape)}, got {got}")
                self._c.copy_(c)

    def step(self, x: Tensor) -> Tensor:
        """One time step: ``x (batch, input_size)`` -> the last layer's new ``h (batch, out)``."""
        # Replaced by the C++ stepper's own method in __init__ where the kernels are built.
        unbatched = x.dim() == 1 and self.batch_size == 1
        shape = (self.batch_size, self.input_size)
        if tuple(x.shape) != shape and not (unbatched and tuple(x.shape) == shape[1:]):
            raise ValueError(f"step: x should have shape {shape}, got {tuple(x.shape)}")
        with torch.inference_mode():
            inp = x.reshape(shape).to(self._h.dtype)
            for k in range(self.num_layers):
                b_ih = self._b_ih[k] if self._b_ih else None
                b_hh = self._b_hh[k] if self._b_hh else None
                if self.mode == "LSTM":
                    w_hr = self._w_hr[k] if self._w_hr else None
                    h, c = cells.lstm_cell(
                        inp, (self._h[k], self._c[k]), self._w_ih[k], self._w_hh[k],
                        b_ih, b_hh, w_hr,
                    )  # fmt: skip
                    self._c[k].copy_(c)
                elif self.mode == "GRU":
                    h = cells.gru_cell(inp, self._h[k], self._w_ih[k], self._w_hh[k], b_ih, b_hh)
                else:
                    nonlinearity = "tanh" if self.mode == "RNN_TANH" else "relu"
                    h = cells.rnn_cell(
                        inp, self._h[k], self._w_ih[k], self._w_hh[k], b_ih, b_hh, nonlinearity
                    )
                self._h[k].copy_(h)
                inp = h
            out = self._h[-1].clone()
        return out.reshape(-1) if unbatched else out
