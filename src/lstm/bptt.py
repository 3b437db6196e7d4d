r"""Backpropagation through time, written out by hand.

Each function here is a :class:`torch.autograd.Function` over a whole sequence (one layer, one
direction). The forward runs the reference loop of :mod:`lstm.kernels.reference` and saves what the
backward needs: the gate activations and the states of every step. The backward runs the time loop
in reverse, carrying :math:`\partial L/\partial h` and :math:`\partial L/\partial C` through each
gate, and only then computes the weight gradients as a few large matrix products over all ``T·B``
rows (never one small product per step)::

    dW_ih = dZ^T · X        dW_hh = dZ^T · H_prev        db = Σ dZ        dX = dZ · W_ih

The backward is made of torch operations on tensors that are inputs or outputs of the Function, so
it is itself differentiable: double backward (``gradgradcheck``, Hessian-vector products) works.
The gates and cell states are *outputs* of the Function (the layers can return them for
inspection), so the backward also accepts gradients with respect to them.

LSTM backward for one step, with :math:`\delta h` and :math:`\delta C` the gradients arriving at
:math:`h_t` and :math:`C_t` (from the output at ``t`` and from step ``t+1``):

.. math::

    \delta o &= \delta h ⊙ \tanh(C_t)\\
    \delta C &\mathrel{+}= \delta h ⊙ o_t ⊙ (1 - \tanh^2 C_t)\\
    \delta i &= \delta C ⊙ \tilde C_t, \quad \delta \tilde C = \delta C ⊙ i_t,
        \quad \delta f = \delta C ⊙ C_{t-1}\\
    \delta z &= [\delta i ⊙ i(1-i),\; \delta f ⊙ f(1-f),\; \delta\tilde C ⊙ (1-\tilde C^2),\;
        \delta o ⊙ o(1-o)]\\
    \delta C_{t-1} &= \delta C ⊙ f_t, \qquad \delta h_{t-1} = \delta z · W_{hh}

(with a projection, :math:`\delta h` is first multiplied by :math:`W_{hr}`). The forget gate is the
only factor on the path :math:`C_t \to C_{t-1}`: that is why an LSTM can carry a gradient over
long lags.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstm.kernels.reference import gru_loop, lstm_loop, rnn_loop

__all__ = ["gru_sequence", "lstm_sequence", "rnn_sequence"]


def _shift_in(first: Tensor, seq: Tensor) -> Tensor:
    """``[first, seq[0], ..., seq[T-2]]``: the state *entering* each step, ``(T, B, ·)``."""
    return torch.cat([first.unsqueeze(0), seq[:-1]], dim=0)


def _split_by_mask(mask: Tensor | None, t: int, grad: Tensor) -> tuple[Tensor, Tensor | None]:
    """Split the gradient at a state into the part for a real step and the part carried past
    a padding step (where the forward copied the state unchanged)."""
    if mask is None:
        return grad, None
    zero = torch.zeros((), dtype=grad.dtype, device=grad.device)
    return torch.where(mask[t], grad, zero), torch.where(mask[t], zero, grad)


def _gemm_grads(
    d_pre: Tensor,  # (T, B, G) gradient at the pre-activations
    x: Tensor,  # (T, B, I)
    h_prev: Tensor,  # (T, B, P) state entering each step
    weight_ih: Tensor,  # (G, I)
    want: tuple[bool, bool, bool, bool],
) -> tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
    """The big GEMMs after the loop: ``(dX, dW_ih, dW_hh, db)``, each only if ``want`` says so."""
    T, B, G = d_pre.shape
    d2 = d_pre.reshape(T * B, G)
    dx = (d2 @ weight_ih).reshape(x.shape) if want[0] else None
    dw_ih = d2.T @ x.reshape(T * B, x.shape[-1]) if want[1] else None
    dw_hh = d2.T @ h_prev.reshape(T * B, h_prev.shape[-1]) if want[2] else None
    db = d2.sum(0) if want[3] else None
    return dx, dw_ih, dw_hh, db


# --------------------------------------------------------------------------------------------
# LSTM
# --------------------------------------------------------------------------------------------


class LSTMSequence(torch.autograd.Function):
    """Whole-sequence LSTM (one layer, one direction) with the hand-written backward above."""

    @staticmethod
    def forward(ctx, x, h0, c0, weight_ih, weight_hh, bias, weight_hr, mask):
        h_all, c_all, gates = lstm_loop(x, h0, c0, weight_ih, weight_hh, bias, weight_hr, mask)
        ctx.save_for_backward(x, h0, c0, weight_ih, weight_hh, weight_hr, mask, h_all, c_all, gates)
        ctx.set_materialize_grads(False)
        return h_all, c_all, gates

    @staticmethod
    def backward(ctx, grad_h_all, grad_c_all, grad_gates):
        grads = (grad_h_all, grad_c_all, grad_gates)
        return lstm_backward(ctx.saved_tensors, grads, ctx.needs_input_grad)


def lstm_backward(saved, grads, need, trace: list | None = None):
    """The LSTM's backward pass over the whole sequence (see the module docstring).

    ``saved`` is what :class:`LSTMSequence` saves, ``grads`` the gradients at its outputs
    ``(h_all, c_all, gates)`` (each may be ``None``), ``need`` which inputs want a gradient. With a
    ``trace`` list, appends ``(t, dL/dh_t, dL/dC_t)`` per step: the *total* gradients at the states,
    through every later step, which is what vanishes (or not) over long lags (on padding steps of
    a ragged batch the recorded values are the real-step parts only).
    """
    x, h0, c0, weight_ih, weight_hh, weight_hr, mask, h_all, c_all, gates = saved
    grad_h_all, grad_c_all, grad_gates = grads
    T = x.shape[0]
    i_all, f_all, g_all, o_all = gates.chunk(4, dim=-1)  # each (T, B, H)
    tanh_c_all = torch.tanh(c_all)  # (T, B, H)
    c_prev_all = _shift_in(c0, c_all)  # (T, B, H)

    dh = torch.zeros_like(h0)  # gradient arriving at h_t from step t+1
    dc = torch.zeros_like(c0)  # gradient arriving at C_t from step t+1
    d_pre = [None] * T  # gradient at the gate pre-activations z_t, (B, 4H) each
    dh_step = [None] * T  # gradient at the (projected) output of each real step
    for t in range(T - 1, -1, -1):
        if grad_h_all is not None:
            dh = dh + grad_h_all[t]
        if grad_c_all is not None:
            dc = dc + grad_c_all[t]
        dh, dh_skip = _split_by_mask(mask, t, dh)
        dc, dc_skip = _split_by_mask(mask, t, dc)
        i_t, f_t, g_t, o_t, tanh_c = i_all[t], f_all[t], g_all[t], o_all[t], tanh_c_all[t]

        dh_step[t] = dh
        dh_raw = dh @ weight_hr if weight_hr is not None else dh  # (B, H)
        d_o = dh_raw * tanh_c
        dc = dc + dh_raw * o_t * (1 - tanh_c * tanh_c)
        if trace is not None:  # totals at h_t and C_t (C_t's includes its path through h_t)
            trace.append((t, dh, dc))
        d_i = dc * g_t
        d_g = dc * i_t
        d_f = dc * c_prev_all[t]
        if grad_gates is not None:
            gi, gf, gg, go = grad_gates[t].chunk(4, dim=-1)
            d_i, d_f, d_g, d_o = d_i + gi, d_f + gf, d_g + gg, d_o + go
        dz = torch.cat(
            [
                d_i * i_t * (1 - i_t),
                d_f * f_t * (1 - f_t),
                d_g * (1 - g_t * g_t),
                d_o * o_t * (1 - o_t),
            ],
            dim=-1,
        )  # (B, 4H)
        d_pre[t] = dz
        dc = dc * f_t  # to C_{t-1}: the forget gate is the whole Jacobian
        dh = dz @ weight_hh  # to h_{t-1}
        if dh_skip is not None:
            dh = dh + dh_skip
            dc = dc + dc_skip

    d_pre = torch.stack(d_pre)  # (T, B, 4H)
    h_prev_all = _shift_in(h0, h_all)
    # need: (x, h0, c0, W_ih, W_hh, b, W_hr, mask)
    dx, dw_ih, dw_hh, db = _gemm_grads(
        d_pre, x, h_prev_all, weight_ih, (need[0], need[3], need[4], need[5])
    )
    dw_hr = None
    if weight_hr is not None and need[6]:
        dh_step = torch.stack(dh_step)  # (T, B, P)
        h_raw_all = o_all * tanh_c_all  # (T, B, H); wrong on padding rows, whose dh is 0
        rows = T * x.shape[1]
        dw_hr = dh_step.reshape(rows, dh_step.shape[-1]).T @ h_raw_all.reshape(
            rows, h_raw_all.shape[-1]
        )
    return dx, dh, dc, dw_ih, dw_hh, db, dw_hr, None


def lstm_sequence(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias: Tensor | None,
    weight_hr: Tensor | None = None,
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """LSTM over a sequence with hand-written BPTT. Shapes as :func:`lstm.kernels.reference.lstm_loop`."""
    return LSTMSequence.apply(x, h0, c0, weight_ih, weight_hh, bias, weight_hr, mask)


# --------------------------------------------------------------------------------------------
# GRU
# --------------------------------------------------------------------------------------------


class GRUSequence(torch.autograd.Function):
    r"""Whole-sequence GRU with a hand-written backward. Per step, with :math:`\delta h` the
    gradient at :math:`h_t` and ``gh_n = W_hn h_{t-1} + b_hn``:

    .. math::

        \delta n &= \delta h ⊙ (1 - z), \quad \delta z = \delta h ⊙ (h_{t-1} - n)\\
        \delta n_{pre} &= \delta n ⊙ (1 - n^2), \quad \delta r = \delta n_{pre} ⊙ gh_n\\
        \delta h_{t-1} &= [\delta r_{pre}, \delta z_{pre}, \delta n_{pre} ⊙ r] · W_{hh}
            + \delta h ⊙ z
    """

    @staticmethod
    def forward(ctx, x, h0, weight_ih, weight_hh, bias_ih, bias_hh, mask):
        h_all, gates = gru_loop(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, mask)
        ctx.save_for_backward(x, h0, weight_ih, weight_hh, bias_hh, mask, h_all, gates)
        ctx.set_materialize_grads(False)
        return h_all, gates

    @staticmethod
    def backward(ctx, grad_h_all, grad_gates):
        return gru_backward(ctx.saved_tensors, (grad_h_all, grad_gates), ctx.needs_input_grad)


def gru_backward(saved, grads, need, trace: list | None = None):
    """The GRU's backward pass; arguments as :func:`lstm_backward` (``trace`` gets
    ``(t, dL/dh_t, None)``)."""
    x, h0, weight_ih, weight_hh, bias_hh, mask, h_all, gates = saved
    grad_h_all, grad_gates = grads
    T, _, H = h_all.shape
    r_all, z_all, n_all = gates.chunk(3, dim=-1)
    h_prev_all = _shift_in(h0, h_all)  # (T, B, H)
    # W_hn h_{t-1} + b_hn for every step: one GEMM, recomputed rather than saved.
    gh_n_all = h_prev_all @ weight_hh[2 * H :].T  # (T, B, H)
    if bias_hh is not None:
        gh_n_all = gh_n_all + bias_hh[2 * H :]

    dh = torch.zeros_like(h0)
    d_gx, d_gh = [None] * T, [None] * T  # gradients at W_ih x + b_ih and W_hh h + b_hh
    for t in range(T - 1, -1, -1):
        if grad_h_all is not None:
            dh = dh + grad_h_all[t]
        if trace is not None:
            trace.append((t, dh, None))
        dh, dh_skip = _split_by_mask(mask, t, dh)
        r_t, z_t, n_t = r_all[t], z_all[t], n_all[t]
        d_n = dh * (1 - z_t)
        d_z = dh * (h_prev_all[t] - n_t)
        if grad_gates is not None:
            gr, gz, gn = grad_gates[t].chunk(3, dim=-1)
            d_n, d_z = d_n + gn, d_z + gz
        d_n_pre = d_n * (1 - n_t * n_t)
        d_r = d_n_pre * gh_n_all[t]
        if grad_gates is not None:
            d_r = d_r + gr
        d_r_pre = d_r * r_t * (1 - r_t)
        d_z_pre = d_z * z_t * (1 - z_t)
        d_gx[t] = torch.cat([d_r_pre, d_z_pre, d_n_pre], dim=-1)  # (B, 3H)
        d_gh[t] = torch.cat([d_r_pre, d_z_pre, d_n_pre * r_t], dim=-1)  # (B, 3H)
        dh = d_gh[t] @ weight_hh + dh * z_t
        if dh_skip is not None:
            dh = dh + dh_skip

    d_gx, d_gh = torch.stack(d_gx), torch.stack(d_gh)  # (T, B, 3H)
    # need: (x, h0, W_ih, W_hh, b_ih, b_hh, mask)
    dx, dw_ih, _, db_ih = _gemm_grads(
        d_gx, x, h_prev_all, weight_ih, (need[0], need[2], False, need[4])
    )
    _, _, dw_hh, db_hh = _gemm_grads(
        d_gh, x, h_prev_all, weight_ih, (False, False, need[3], need[5])
    )
    return dx, dh, dw_ih, dw_hh, db_ih, db_hh, None


def gru_sequence(
    x: Tensor,
    h0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """GRU over a sequence with hand-written BPTT. Shapes as :func:`lstm.kernels.reference.gru_loop`."""
    return GRUSequence.apply(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, mask)


# --------------------------------------------------------------------------------------------
# Plain RNN
# --------------------------------------------------------------------------------------------


class RNNSequence(torch.autograd.Function):
    r"""Whole-sequence tanh/relu RNN with a hand-written backward:
    :math:`\delta z_t = \delta h ⊙ (1 - h_t^2)` (tanh) or :math:`\delta h ⊙ [h_t > 0]` (relu),
    :math:`\delta h_{t-1} = \delta z_t · W_{hh}`. Over a long lag the gradient is a product of
    such factors, which is why it vanishes."""

    @staticmethod
    def forward(ctx, x, h0, weight_ih, weight_hh, bias, mask, nonlinearity):
        h_all = rnn_loop(x, h0, weight_ih, weight_hh, bias, mask, nonlinearity)
        ctx.save_for_backward(x, h0, weight_ih, weight_hh, mask, h_all)
        ctx.nonlinearity = nonlinearity
        return h_all

    @staticmethod
    def backward(ctx, grad_h_all):
        return rnn_backward(ctx.saved_tensors, grad_h_all, ctx.needs_input_grad, ctx.nonlinearity)


def rnn_backward(saved, grad_h_all, need, nonlinearity: str, trace: list | None = None):
    """The plain RNN's backward pass; arguments as :func:`lstm_backward`."""
    x, h0, weight_ih, weight_hh, mask, h_all = saved
    T = x.shape[0]
    if nonlinearity == "tanh":
        d_act_all = 1 - h_all * h_all  # tanh'(z) = 1 - tanh(z)^2 = 1 - h^2
    else:
        d_act_all = (h_all > 0).to(h_all.dtype)
    dh = torch.zeros_like(h0)
    d_pre = [None] * T
    for t in range(T - 1, -1, -1):
        dh = dh + grad_h_all[t]
        if trace is not None:
            trace.append((t, dh, None))
        dh, dh_skip = _split_by_mask(mask, t, dh)
        d_pre[t] = dh * d_act_all[t]
        dh = d_pre[t] @ weight_hh
        if dh_skip is not None:
            dh = dh + dh_skip
    d_pre = torch.stack(d_pre)
    # need: (x, h0, W_ih, W_hh, b, mask, nonlinearity)
    dx, dw_ih, dw_hh, db = _gemm_grads(
        d_pre, x, _shift_in(h0, h_all), weight_ih, (need[0], need[2], need[3], need[4])
    )
    return dx, dh, dw_ih, dw_hh, db, None, None


def rnn_sequence(
    x: Tensor,
    h0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias: Tensor | None,
    mask: Tensor | None = None,
    nonlinearity: str = "tanh",
) -> Tensor:
    """Plain RNN over a sequence with hand-written BPTT. Shapes as
    :func:`lstm.kernels.reference.rnn_loop`."""
    return RNNSequence.apply(x, h0, weight_ih, weight_hh, bias, mask, nonlinearity)
