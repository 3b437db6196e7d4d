r"""Seeing inside: how gradients flow back over long lags.

For a loss that depends on a recurrent layer's outputs, :func:`state_gradients` returns the *total*
gradient at every state, :math:`\partial L / \partial h_t` and (LSTM) :math:`\partial L /
\partial C_t`: everything that reaches the state through all later steps, not just the direct path
from the output at ``t``. Over a long lag the plain RNN's gradient shrinks geometrically
(:math:`\partial h_t / \partial h_{t-1} = \mathrm{diag}(1 - h_t^2) W_{hh}`), while the LSTM's cell
state passes it through the forget gate alone (:math:`\partial C_t / \partial C_{t-1} =
\mathrm{diag}(f_t)`).

Two independent ways to compute it, which the tests hold equal:

- ``method="bptt"``: the hand-written backward of :mod:`lstm.bptt`, which records the gradient it
  carries at each step (the code that trains the layers);
- ``method="autograd"``: the cell equations run with a zero "probe" added to every state, and
  autograd's gradient with respect to each probe.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lstm import bptt, cells
from lstm.kernels import reference

__all__ = ["StateGradients", "gradient_flow", "state_gradients"]


@dataclass
class StateGradients:
    """``hidden``: :math:`\\partial L/\\partial h_t`, ``(T, B, P)``; ``cell``:
    :math:`\\partial L/\\partial C_t`, ``(T, B, H)`` for the LSTM, else ``None``. Time-major."""

    hidden: Tensor
    cell: Tensor | None

    def norms(self) -> dict[str, Tensor]:
        """Per step, the L2 norm over units averaged over the batch: ``{"hidden": (T,), ...}``."""
        out = {"hidden": self.hidden.norm(dim=-1).mean(dim=1)}
        if self.cell is not None:
            out["cell"] = self.cell.norm(dim=-1).mean(dim=1)
        return out


def _weights(layer: nn.RNNBase) -> dict[str, Tensor | None]:
    if layer.num_layers != 1 or layer.bidirectional:
        raise ValueError(
            "state_gradients needs a single-layer, one-direction recurrent layer, got "
            f"num_layers={layer.num_layers}, bidirectional={layer.bidirectional}"
        )
    get = lambda name: getattr(layer, name, None)  # noqa: E731
    return dict(w_ih=get("weight_ih_l0"), w_hh=get("weight_hh_l0"), b_ih=get("bias_ih_l0"),
                b_hh=get("bias_hh_l0"), w_hr=get("weight_hr_l0"))  # fmt: skip


def state_gradients(
    layer: nn.RNNBase,
    x: Tensor,
    grad_output: Tensor,
    hx: Tensor | tuple[Tensor, Tensor] | None = None,
    method: str = "bptt",
    grad_cell_last: Tensor | None = None,
) -> StateGradients:
    """Total gradients at every state of ``layer`` (an ``lstm``/``torch.nn`` LSTM, GRU or RNN with
    one layer and one direction) for input ``x`` and ``grad_output`` = :math:`\\partial L/\\partial
    y`, the gradient at the layer's output (same layout as the output, batched).

    Args:
        layer: the recurrent layer; its ``mode`` selects the equations.
        x: ``(T, B, I)``, or ``(B, T, I)`` when ``layer.batch_first``.
        grad_output: ``(T, B, P)`` (or batch-first), e.g. from ``torch.autograd.grad(loss, y)``.
        hx: initial state as the layer takes it (``(1, B, ·)``), or ``None`` for zeros.
        method: ``"bptt"`` (the hand-written backward) or ``"autograd"`` (probes).
        grad_cell_last: :math:`\\partial L/\\partial C_T` ``(B, H)`` when the loss also reads
            the final cell state (LSTM), else ``None``.
    """
    if method not in ("bptt", "autograd"):
        raise ValueError(f"method should be 'bptt' or 'autograd', got {method!r}")
    w = _weights(layer)
    if layer.batch_first:
        x, grad_output = x.transpose(0, 1), grad_output.transpose(0, 1)
    x, grad_output = x.detach(), grad_output.detach()
    T, B = x.shape[:2]
    P = layer.proj_size or layer.hidden_size
    mode = layer.mode
    zeros = lambda n: torch.zeros(B, n, dtype=x.dtype, device=x.device)  # noqa: E731
    if hx is None:
        h0, c0 = zeros(P), zeros(layer.hidden_size)
    elif mode == "LSTM":
        h0, c0 = hx[0][0].detach(), hx[1][0].detach()
    else:
        h0, c0 = hx[0].detach(), None
    summed = None if w["b_ih"] is None else w["b_ih"] + w["b_hh"]
    with torch.no_grad():
        ws = {k: (v.detach() if v is not None else None) for k, v in w.items()}
        summed = None if summed is None else summed.detach()
        grad_c_all = None
        if grad_cell_last is not None:
            grad_c_all = torch.zeros(T, B, layer.hidden_size, dtype=x.dtype, device=x.device)
            grad_c_all[-1] = grad_cell_last.detach()
        if method == "autograd":
            return _by_probes(mode, x, h0, c0, ws, summed, grad_output, grad_c_all)
        trace: list = []
        if mode == "LSTM":
            h_all, c_all, gates = reference.lstm_loop(
                x, h0, c0, ws["w_ih"], ws["w_hh"], summed, ws["w_hr"], None
            )
            saved = (x, h0, c0, ws["w_ih"], ws["w_hh"], ws["w_hr"], None, h_all, c_all, gates)
            bptt.lstm_backward(saved, (grad_output, grad_c_all, None), [False] * 8, trace)
        elif mode == "GRU":
            h_all, gates = reference.gru_loop(
                x, h0, ws["w_ih"], ws["w_hh"], ws["b_ih"], ws["b_hh"], None
            )
            saved = (x, h0, ws["w_ih"], ws["w_hh"], ws["b_hh"], None, h_all, gates)
            bptt.gru_backward(saved, (grad_output, None), [False] * 7, trace)
        else:
            nl = "tanh" if mode == "RNN_TANH" else "relu"
            h_all = reference.rnn_loop(x, h0, ws["w_ih"], ws["w_hh"], summed, None, nl)
            saved = (x, h0, ws["w_ih"], ws["w_hh"], None, h_all)
            bptt.rnn_backward(saved, grad_output, [False] * 7, nl, trace)
    trace.sort(key=lambda item: item[0])
    hidden = torch.stack([dh for _, dh, _ in trace])
    cell = torch.stack([dc for _, _, dc in trace]) if mode == "LSTM" else None
    return StateGradients(hidden, cell)


def _by_probes(mode, x, h0, c0, w, summed, grad_output, grad_c_all) -> StateGradients:
    """Autograd's view: add a zero probe to every state; dL/dprobe_t = dL/dstate_t."""
    T = x.shape[0]
    with torch.enable_grad():
        probe_h = torch.zeros(T, *h0.shape, dtype=x.dtype, requires_grad=True)
        probe_c = (
            torch.zeros(T, *c0.shape, dtype=x.dtype, requires_grad=True) if c0 is not None else None
        )
        h, c, outs, cs = h0, c0, [], []
        for t in range(T):
            if mode == "LSTM":
                preact = x[t] @ w["w_ih"].T + h @ w["w_hh"].T
                preact = preact if summed is None else preact + summed
                _, c, gates = cells.lstm_pointwise(preact, c)
                c = c + probe_c[t]  # probed before h_t = o_t ⊙ tanh(C_t) reads it
                cs.append(c)
                h = gates.chunk(4, dim=-1)[3] * torch.tanh(c)
                h = h @ w["w_hr"].T if w["w_hr"] is not None else h
            elif mode == "GRU":
                h = cells.gru_cell(x[t], h, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"])
            else:
                nl = "tanh" if mode == "RNN_TANH" else "relu"
                h = cells.rnn_cell(x[t], h, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"], nl)
            h = h + probe_h[t]
            outs.append(h)
        y = torch.stack(outs)
        objective = (y * grad_output).sum()
        if grad_c_all is not None:
            objective = objective + (torch.stack(cs) * grad_c_all).sum()
        probes = [probe_h] + ([probe_c] if probe_c is not None else [])
        grads = torch.autograd.grad(objective, probes, allow_unused=True)
    cell = grads[1] if probe_c is not None else None
    return StateGradients(grads[0], cell)


def gradient_flow(
    model: nn.Module,
    layer: nn.RNNBase,
    inputs: Tensor,
    loss_fn,
    method: str = "bptt",
) -> StateGradients:
    """Total state gradients of ``layer`` inside ``model`` for ``loss_fn(model(inputs))``.

    A forward hook records the layer's input and output; autograd gives
    :math:`\\partial L/\\partial y` at its output; :func:`state_gradients` carries it back through
    time. Example: ``gradient_flow(net, net.rnn, x, lambda out: F.mse_loss(out, target))``.
    """
    seen = {}

    def hook(module, args, output):
        seen["x"], seen["hx"] = args[0], (args[1] if len(args) > 1 else None)
        seen["y"], seen["final"] = output[0], output[1]

    handle = layer.register_forward_hook(hook)
    try:
        loss = loss_fn(model(inputs))
    finally:
        handle.remove()
    if "y" not in seen or not torch.is_tensor(seen["x"]):
        raise ValueError("the layer was not called with a plain tensor during model(inputs)")
    # The loss may read the output sequence, the final state h_T (= the last output here), or the
    # final cell state C_T: gather all three.
    final = seen["final"] if isinstance(seen["final"], tuple) else (seen["final"],)
    grads = torch.autograd.grad(loss, [seen["y"], *final], allow_unused=True)
    grad_y = torch.zeros_like(seen["y"]) if grads[0] is None else grads[0].clone()
    last = (slice(None), -1) if layer.batch_first else (-1,)
    if grads[1] is not None:
        grad_y[last] += grads[1][0]
    grad_c = grads[2][0] if len(grads) > 2 and grads[2] is not None else None
    return state_gradients(layer, seen["x"], grad_y, seen["hx"], method, grad_c)
