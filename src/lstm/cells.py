"""The equations, once.

One pure function per cell. These are the readable reference: every other path in the package (the
hand-written BPTT in :mod:`lstm.bptt`, the fused CPU and GPU kernels in :mod:`lstm.kernels`) is
tested against them.

The papers write each gate on the concatenation ``[h_{t-1}, x_t]``::

    f_t = σ(W_f · [h_{t-1}, x_t] + b_f)

torch (and so this package) stores ``W_f`` split in two, the block acting on ``x_t`` (a row block of
``weight_ih``) and the block acting on ``h_{t-1}`` (a row block of ``weight_hh``), and keeps two
biases. The two forms are the same function::

    W_f · [h_{t-1}, x_t] + b_f  =  W_hf · h_{t-1} + W_if · x_t + (b_hf + b_if)

so ``W_f = [W_hf | W_if]`` and ``b_f = b_if + b_hf``. docs/math.md spells out every block.

Each cell is split in two: a *pointwise* function that takes the gate pre-activations (the matrix
products already done) and applies the nonlinearities and the state update, and the *cell*, which
does the two matrix products and calls it. The time-loop kernels do one big input product for all
steps and call the pointwise part per step, so the equations below are the ones they run.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "gru_cell",
    "gru_pointwise",
    "lstm_cell",
    "lstm_pointwise",
    "rnn_activation",
    "rnn_cell",
]


# --------------------------------------------------------------------------------------------
# LSTM
# --------------------------------------------------------------------------------------------


def lstm_pointwise(preact: Tensor, c_prev: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""The LSTM's gates and state update, given the gate pre-activations.

    .. math::

        i_t &= σ(z_i)                    && \text{input gate: how much of the candidate to write}\\
        f_t &= σ(z_f)                    && \text{forget gate: how much of } C_{t-1} \text{ to keep}\\
        \tilde C_t &= \tanh(z_g)          && \text{candidate values}\\
        o_t &= σ(z_o)                    && \text{output gate: how much of the cell to show}\\
        C_t &= f_t ⊙ C_{t-1} + i_t ⊙ \tilde C_t  && \text{the conveyor belt}\\
        h_t &= o_t ⊙ \tanh(C_t)

    where ``z = W·[h_{t-1}, x_t] + b`` is split into four row blocks in torch's order
    ``(i, f, g, o)``; ``g`` is the candidate :math:`\tilde C_t`.

    Args:
        preact: gate pre-activations ``z``, shape ``(B, 4H)``.
        c_prev: previous cell state :math:`C_{t-1}`, shape ``(B, H)``.

    Returns:
        ``(h, c, gates)``: the (unprojected) hidden state ``(B, H)``, the cell state ``(B, H)``,
        and the gate activations ``cat(i, f, g, o)``, shape ``(B, 4H)``.
    """
    z_i, z_f, z_g, z_o = preact.chunk(4, dim=-1)
    i_t = torch.sigmoid(z_i)
    f_t = torch.sigmoid(z_f)
    c_tilde = torch.tanh(z_g)
    o_t = torch.sigmoid(z_o)
    c_t = f_t * c_prev + i_t * c_tilde
    h_t = o_t * torch.tanh(c_t)
    return h_t, c_t, torch.cat([i_t, f_t, c_tilde, o_t], dim=-1)


def lstm_cell(
    x: Tensor,
    state: tuple[Tensor, Tensor],
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    weight_hr: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""One LSTM step: ``(h_{t-1}, C_{t-1}), x_t -> (h_t, C_t)``.

    .. math::

        z &= W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}   \quad (= W·[h_{t-1}, x_t] + b)\\
        h_t, C_t &= \text{lstm\_pointwise}(z, C_{t-1})\\
        h_t &\leftarrow W_{hr} h_t  \quad \text{(only with a projection, LSTMP)}

    Args:
        x: input :math:`x_t`, shape ``(B, I)``.
        state: ``(h, c)`` with shapes ``(B, P)`` and ``(B, H)``; ``P = H`` without projection.
        weight_ih: ``(4H, I)``, row blocks ``W_ii, W_if, W_ig, W_io``.
        weight_hh: ``(4H, P)``.
        bias_ih, bias_hh: ``(4H,)`` or ``None``.
        weight_hr: projection ``(P, H)`` or ``None``.

    Example:
        >>> import torch
        >>> from lstm.cells import lstm_cell
        >>> H, I = 3, 2
        >>> h, c = lstm_cell(torch.randn(1, I), (torch.zeros(1, H), torch.zeros(1, H)),
        ...                  torch.randn(4 * H, I), torch.randn(4 * H, H))
        >>> tuple(h.shape), tuple(c.shape)
        ((1, 3), (1, 3))
    """
    h_prev, c_prev = state
    preact = x @ weight_ih.T + h_prev @ weight_hh.T  # (B, 4H)
    if bias_ih is not None:
        preact = preact + bias_ih
    if bias_hh is not None:
        preact = preact + bias_hh
    h_t, c_t, _ = lstm_pointwise(preact, c_prev)
    if weight_hr is not None:
        h_t = h_t @ weight_hr.T  # (B, P)
    return h_t, c_t


# --------------------------------------------------------------------------------------------
# GRU
# --------------------------------------------------------------------------------------------


def gru_pointwise(gx: Tensor, gh: Tensor, h_prev: Tensor) -> tuple[Tensor, Tensor]:
    r"""The GRU's gates and state update, given the input and hidden projections.

    torch's convention (Cho et al. 2014, with the reset gate applied after the hidden product):

    .. math::

        r_t &= σ(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr})   && \text{reset gate}\\
        z_t &= σ(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz})   && \text{update gate}\\
        n_t &= \tanh(W_{in} x_t + b_{in} + r_t ⊙ (W_{hn} h_{t-1} + b_{hn}))  && \text{candidate}\\
        h_t &= (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}

    Args:
        gx: ``W_ih x_t + b_ih``, shape ``(B, 3H)``, row blocks ``(r, z, n)``.
        gh: ``W_hh h_{t-1} + b_hh``, shape ``(B, 3H)``.
        h_prev: :math:`h_{t-1}`, shape ``(B, H)``.

    Returns:
        ``(h, gates)``: the new state ``(B, H)`` and ``cat(r, z, n)``, shape ``(B, 3H)``.
    """
    gx_r, gx_z, gx_n = gx.chunk(3, dim=-1)
    gh_r, gh_z, gh_n = gh.chunk(3, dim=-1)
    r_t = torch.sigmoid(gx_r + gh_r)
    z_t = torch.sigmoid(gx_z + gh_z)
    n_t = torch.tanh(gx_n + r_t * gh_n)
    h_t = (1 - z_t) * n_t + z_t * h_prev
    return h_t, torch.cat([r_t, z_t, n_t], dim=-1)


def gru_cell(
    x: Tensor,
    h_prev: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> Tensor:
    r"""One GRU step: ``h_{t-1}, x_t -> h_t`` (see :func:`gru_pointwise` for the equations).

    Args:
        x: ``(B, I)``; h_prev: ``(B, H)``; weight_ih: ``(3H, I)``; weight_hh: ``(3H, H)``;
        bias_ih, bias_hh: ``(3H,)`` or ``None``. Row blocks are ``(r, z, n)``.
    """
    gx = x @ weight_ih.T  # (B, 3H)
    gh = h_prev @ weight_hh.T  # (B, 3H)
    if bias_ih is not None:
        gx = gx + bias_ih
    if bias_hh is not None:
        gh = gh + bias_hh
    h_t, _ = gru_pointwise(gx, gh, h_prev)
    return h_t


# --------------------------------------------------------------------------------------------
# Plain RNN
# --------------------------------------------------------------------------------------------


def rnn_activation(preact: Tensor, nonlinearity: str = "tanh") -> Tensor:
    r"""The plain RNN's update, given its pre-activation:
    :math:`h_t = \tanh(W·[h_{t-1}, x_t] + b)` (or ``relu``).

    The baseline whose gradients vanish: :math:`\partial h_t / \partial h_{t-1} =
    \mathrm{diag}(1 - h_t^2)\, W_{hh}`, a product of such factors over a long lag shrinks (or
    explodes) geometrically. The LSTM's cell state avoids it: :math:`\partial C_t / \partial
    C_{t-1} = \mathrm{diag}(f_t)`, which the forget gate can hold near 1.
    """
    if nonlinearity == "tanh":
        return torch.tanh(preact)
    if nonlinearity == "relu":
        return torch.relu(preact)
    raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")


def rnn_cell(
    x: Tensor,
    h_prev: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    nonlinearity: str = "tanh",
) -> Tensor:
    r"""One plain RNN step: :math:`h_t = \tanh(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})`.

    Args:
        x: ``(B, I)``; h_prev: ``(B, H)``; weight_ih: ``(H, I)``; weight_hh: ``(H, H)``;
        bias_ih, bias_hh: ``(H,)`` or ``None``; nonlinearity: ``"tanh"`` or ``"relu"``.
    """
    preact = x @ weight_ih.T + h_prev @ weight_hh.T  # (B, H)
    if bias_ih is not None:
        preact = preact + bias_ih
    if bias_hh is not None:
        preact = preact + bias_hh
    return rnn_activation(preact, nonlinearity)
