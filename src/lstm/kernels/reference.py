"""The reference time loops: one input product for all steps, then a Python loop over time.

Each loop calls the pointwise equations of :mod:`lstm.cells` at every step, so these loops compute
exactly the functions documented there. They are plain torch code: differentiated by autograd they
are the ``"autograd"`` backend (the ground truth for gradients); run under ``no_grad`` they are the
forward half of the hand-written BPTT in :mod:`lstm.bptt`.

Shapes (time-major, one layer, one direction):

- ``x``: ``(T, B, I)``; ``h0``: ``(B, P)``; ``c0``: ``(B, H)``;
- ``mask``: ``(T, B, 1)`` bool or ``None``. Where ``mask[t, b]`` is False the step is padding: the
  state is carried through unchanged (ragged lengths, see :mod:`lstm.layers`).

Every loop returns the *state* after every step (not the masked output): ``h_all[t]`` is the state
after step ``t``, so the final state is ``h_all[-1]`` whatever the lengths.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstm.cells import gru_pointwise, lstm_pointwise, rnn_activation


def input_projection(x: Tensor, weight_ih: Tensor, bias: Tensor | None) -> Tensor:
    """``x @ W_ih^T + b`` for all ``T*B`` rows as one GEMM: ``(T, B, I) -> (T, B, G)``."""
    T, B, I = x.shape
    x2 = x.reshape(T * B, I)
    out = x2 @ weight_ih.T if bias is None else torch.addmm(bias, x2, weight_ih.T)
    return out.reshape(T, B, weight_ih.shape[0])  # explicit sizes: B may be 0


def _carry(mask: Tensor | None, t: int, new: Tensor, old: Tensor) -> Tensor:
    """The new state where step ``t`` is real, the old one where it is padding."""
    return new if mask is None else torch.where(mask[t], new, old)


def lstm_loop(
    x: Tensor,  # (T, B, I)
    h0: Tensor,  # (B, P)
    c0: Tensor,  # (B, H)
    weight_ih: Tensor,  # (4H, I)
    weight_hh: Tensor,  # (4H, P)
    bias: Tensor | None,  # (4H,)  b_ih + b_hh, pre-summed
    weight_hr: Tensor | None,  # (P, H) or None
    mask: Tensor | None,  # (T, B, 1) bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Returns ``(h_all (T, B, P), c_all (T, B, H), gates (T, B, 4H))`` with gates ``(i, f, g, o)``."""
    xp = input_projection(x, weight_ih, bias)  # (T, B, 4H)
    h, c = h0, c0
    hs, cs, gs = [], [], []
    for t in range(x.shape[0]):
        preact = torch.addmm(xp[t], h, weight_hh.T)  # (B, 4H)
        h_new, c_new, gates = lstm_pointwise(preact, c)
        if weight_hr is not None:
            h_new = h_new @ weight_hr.T  # (B, P)
        h = _carry(mask, t, h_new, h)
        c = _carry(mask, t, c_new, c)
        hs.append(h)
        cs.append(c)
        gs.append(gates)
    return torch.stack(hs), torch.stack(cs), torch.stack(gs)


def gru_loop(
    x: Tensor,  # (T, B, I)
    h0: Tensor,  # (B, H)
    weight_ih: Tensor,  # (3H, I)
    weight_hh: Tensor,  # (3H, H)
    bias_ih: Tensor | None,  # (3H,)
    bias_hh: Tensor | None,  # (3H,)  kept apart: b_hn sits inside r ⊙ (...)
    mask: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """Returns ``(h_all (T, B, H), gates (T, B, 3H))`` with gates ``(r, z, n)``."""
    gx_all = input_projection(x, weight_ih, bias_ih)  # (T, B, 3H)
    h = h0
    hs, gs = [], []
    for t in range(x.shape[0]):
        gh = h @ weight_hh.T if bias_hh is None else torch.addmm(bias_hh, h, weight_hh.T)
        h_new, gates = gru_pointwise(gx_all[t], gh, h)
        h = _carry(mask, t, h_new, h)
        hs.append(h)
        gs.append(gates)
    return torch.stack(hs), torch.stack(gs)


def rnn_loop(
    x: Tensor,  # (T, B, I)
    h0: Tensor,  # (B, H)
    weight_ih: Tensor,  # (H, I)
    weight_hh: Tensor,  # (H, H)
    bias: Tensor | None,  # (H,)  b_ih + b_hh
    mask: Tensor | None,
    nonlinearity: str = "tanh",
) -> Tensor:
    """Returns ``h_all (T, B, H)``."""
    xp = input_projection(x, weight_ih, bias)  # (T, B, H)
    h = h0
    hs = []
    for t in range(x.shape[0]):
        h = _carry(mask, t, rnn_activation(torch.addmm(xp[t], h, weight_hh.T), nonlinearity), h)
        hs.append(h)
    return torch.stack(hs)
