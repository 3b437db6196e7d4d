"""Recurrent forecasters: multi-step forecasts with known future covariates and quantiles.

Two strategies (``ForecasterConfig.strategy``):

- ``"direct"`` (multi-output, sequence to sequence): an encoder reads the past window, a decoder
  started from its state reads the known future features (covariates, calendar, seasonal lags,
  position) and emits every step of the horizon at once; no forecast is fed back::

      past (B, C, 1+F) ─> encoder ─> state ─> decoder over future (B, H, F+L+1) ─> head ─> (B, H, Q)

- ``"recursive"`` (one step at a time): one recurrent stack reads ``[y(t-1), features(t),
  lags(t)]`` and predicts ``y(t)``; it is trained with the true ``y(t-1)`` (teacher forcing) and
  forecasts by feeding its own previous forecast (the median) back in.

With ``skip`` (as in LSTNet, Lai et al. 2018) a linear map of each step's known inputs is added
to the recurrent head's output, ``ŷ_t = W_h h_t + W_x x_t + b``: the linear part carries what is
linear in the covariates and seasonal lags, and extrapolates it (a December hotter than any
training day), while the recurrent part models the rest; without it a tanh state saturates
outside the range it was trained on.

With ``level`` (the mean scaling of DeepAR, Salinas et al. 2020, and the reversible instance
normalization of Kim et al. 2022) the model works relative to each window's own level: the mean
``m`` of the target over the past window is subtracted from the past target and from the future
seasonal lags, and added back to the output, ``ŷ_t = m + f(past - m, future - m)``. The recurrent
part then learns shapes, not levels, and a shift in level that the training part never showed (a
holiday week's low demand) reaches the forecast through the last days it reads. (On the
electricity data it did not help: docs/results.md.)

The head emits one value per step (trained on mean squared error) or ``Q`` quantiles (trained on
the pinball loss; the median is the point forecast and the outer quantiles give an interval). The
recurrent stacks are :class:`lstm.LSTM`, :class:`lstm.GRU` or :class:`lstm.RNN`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import lstm
from lstm.checkpoint import JsonConfig

__all__ = [
    "Forecaster",
    "ForecasterConfig",
    "forecast_loss",
    "pinball_loss",
    "predict_windows",
]

CELLS = {"lstm": lstm.LSTM, "gru": lstm.GRU, "rnn": lstm.RNN}
STRATEGIES = ("direct", "recursive")


@dataclass
class ForecasterConfig(JsonConfig):
    """Hyperparameters of a :class:`Forecaster` (stored as JSON in checkpoints)."""

    past_size: int  # features per past step (target first)
    future_size: int  # features per future step (direct)
    horizon: int
    recursive_size: int = 0  # features per step (recursive)
    cell: str = "lstm"
    hidden_size: int = 64
    num_layers: int = 1
    dropout: float = 0.0
    strategy: str = "direct"
    quantiles: tuple[float, ...] = ()  # empty: a point forecast trained on MSE
    backend: str = "auto"
    skip: bool = False  # add a linear map of each step's inputs to the output (LSTNet's highway)
    level: bool = False  # forecast relative to the past window's mean target (direct only)

    def __post_init__(self) -> None:
        self.check_one_of("cell", CELLS)
        self.check_one_of("strategy", STRATEGIES)
        self.check_at_least_one("past_size", "future_size", "horizon", "hidden_size", "num_layers")
        if self.strategy == "recursive" and self.recursive_size < 1:
            raise ValueError("the recursive strategy needs recursive_size >= 1")
        if self.level and self.strategy != "direct":
            raise ValueError("level normalization works with the direct strategy only")
        self.check_rate("dropout")
        q = tuple(float(v) for v in self.quantiles)
        if any(not 0 < v < 1 for v in q) or list(q) != sorted(set(q)):
            raise ValueError(f"quantiles should be increasing values in (0, 1), got {list(q)}")
        if q and 0.5 not in q:
            raise ValueError(f"quantiles should include 0.5 (the point forecast), got {list(q)}")
        self.quantiles = q

    @property
    def outputs(self) -> int:
        return max(1, len(self.quantiles))

    def to_json(self) -> dict:
        return {**super().to_json(), "quantiles": list(self.quantiles)}


class Forecaster(nn.Module):
    """See the module docstring."""

    def __init__(self, config: ForecasterConfig) -> None:
        super().__init__()
        self.config = config
        H, L = config.hidden_size, config.num_layers
        inner = config.dropout if L > 1 else 0.0
        cell = CELLS[config.cell]
        if config.strategy == "direct":
            self.encoder = cell(config.past_size, H, L, batch_first=True, dropout=inner,
                                backend=config.backend)  # fmt: skip
            self.decoder = cell(config.future_size, H, L, batch_first=True, dropout=inner,
                                backend=config.backend)  # fmt: skip
        else:
            self.rnn = cell(config.recursive_size, H, L, batch_first=True, dropout=inner,
                            backend=config.backend)  # fmt: skip
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(H, config.outputs)
        if config.skip:
            step_inputs = (
                config.future_size if config.strategy == "direct" else config.recursive_size
            )
            self.skip = nn.Linear(step_inputs, config.outputs, bias=False)  # the head has the bias
        else:
            self.skip = None

    def _read_out(self, out: Tensor, inputs: Tensor) -> Tensor:
        """``ŷ_t = W_h h_t + b (+ W_x x_t with skip)``: ``out (B, T, hidden)``, ``inputs (B, T, D)``
        -> ``(B, T, Q)``."""
        y = self.head(self.drop(out))
        return y if self.skip is None else y + self.skip(inputs)

    def forward(self, past: Tensor, future: Tensor) -> Tensor:
        """Direct: ``past (B, C, 1+F)``, ``future (B, H, F+L+1)`` -> ``(B, H, Q)``."""
        if self.config.level:
            # m: the past window's mean target; the target columns are the past's first and the
            # future's seasonal lags (after the F features, before the position).
            m = past[:, :, :1].mean(1, keepdim=True)  # (B, 1, 1)
            n = past.shape[-1] - 1  # F
            past = torch.cat([past[..., :1] - m, past[..., 1:]], -1)
            future = torch.cat([future[..., :n], future[..., n:-1] - m, future[..., -1:]], -1)
        _, state = self.encoder(past)
        out, _ = self.decoder(future, state)  # (B, H, hidden)
        y = self._read_out(out, future)
        return y + m if self.config.level else y

    def step(self, inputs: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """Recursive: ``inputs (B, T, 1+F+L)`` -> ``(B, T, Q)`` one-step forecasts, state."""
        out, state = self.rnn(inputs, state)
        return self._read_out(out, inputs), state

    @property
    def median_index(self) -> int:
        q = self.config.quantiles
        return q.index(0.5) if q else 0


def pinball_loss(pred: Tensor, target: Tensor, quantiles: tuple[float, ...]) -> Tensor:
    """Mean pinball loss of ``pred (..., Q)`` against ``target (...)`` over the quantile levels:
    ``max(q (y - ŷ_q), (q - 1)(y - ŷ_q))``."""
    q = torch.tensor(quantiles, dtype=pred.dtype, device=pred.device)  # (Q,)
    diff = target.unsqueeze(-1) - pred  # (..., Q)
    return torch.maximum(q * diff, (q - 1) * diff).mean()


def forecast_loss(model: nn.Module, batch: tuple, state: Any) -> tuple[Tensor, None, int]:
    """The loss for :func:`lstm.training.fit`: pinball with quantiles, else MSE, on scaled
    targets. Direct batches are ``(past, future, target)``; recursive ``(inputs, targets)``."""
    config = model.module.config if hasattr(model, "module") else model.config
    if config.strategy == "direct":
        past, future, target = batch
        pred = model(past, future)  # (B, H, Q)
    else:
        inputs, target = batch
        pred, _ = (model.module if hasattr(model, "module") else model).step(inputs)
    if config.quantiles:
        loss = pinball_loss(pred, target, config.quantiles)
    else:
        loss = F.mse_loss(pred.squeeze(-1), target)
    return loss, None, target.numel()


@torch.no_grad()
def predict_windows(
    model: Forecaster, data, origins: np.ndarray, batch_size: int = 256
) -> np.ndarray:
    """Forecasts from each origin in the data's units: ``(S, horizon, Q)`` (``Q = 1`` without
    quantiles). ``data`` is a :class:`lstm.data.series.WindowData`."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outs = []
    for start in range(0, len(origins), batch_size):
        chosen = np.asarray(origins[start : start + batch_size])
        if model.config.strategy == "direct":
            past, future, _ = data.windows(chosen)
            pred = model(past.to(device), future.to(device))  # (B, H, Q)
        else:
            pred = _recursive(model, data, chosen, device)
        outs.append(pred.cpu().double().numpy())
    model.train(was_training)
    z = np.concatenate(outs, 0)
    return data.target_scaler.inverse(z)


def _recursive(model: Forecaster, data, origins: np.ndarray, device) -> Tensor:
    inputs, _ = data.recursive_windows(origins)  # (B, C+H, D): true inputs
    inputs = inputs.to(device)
    C, H = data.context, data.horizon
    # Known part: up to and including the origin step (its input holds y(o-1), which is known).
    pred, state = model.step(inputs[:, : C + 1], None)
    steps = [pred[:, -1:]]  # (B, 1, Q)
    m = model.median_index
    for h in range(1, H):
        x = inputs[:, C + h : C + h + 1].clone()
        x[:, :, 0] = steps[-1][:, :, m]  # feed the median forecast back as y(t-1)
        pred, state = model.step(x, state)
        steps.append(pred)
    return torch.cat(steps, 1)  # (B, H, Q)
