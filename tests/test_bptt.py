"""The hand-written BPTT: gradcheck, gradgradcheck, and agreement with autograd through the
reference loop on random configurations."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lstm import bptt
from lstm.kernels import reference

F64 = torch.float64


def _mask(T: int, lengths: list[int] | None):
    if lengths is None:
        return None
    return (torch.arange(T).unsqueeze(1) < torch.tensor(lengths).unsqueeze(0)).unsqueeze(-1)


def _lstm_args(T, B, I, H, P, bias, proj, seed):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64).requires_grad_()  # noqa: E731
    P = P if proj else H
    return [
        r(T, B, I), r(B, P), r(B, H), r(4 * H, I), r(4 * H, P),
        r(4 * H) if bias else None, r(P, H) if proj else None,
    ]  # fmt: skip


def _gru_args(T, B, I, H, bias, seed):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64).requires_grad_()  # noqa: E731
    return [r(T, B, I), r(B, H), r(3 * H, I), r(3 * H, H)] + (
        [r(3 * H), r(3 * H)] if bias else [None, None]
    )


def _rnn_args(T, B, I, H, bias, seed):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64).requires_grad_()  # noqa: E731
    return [r(T, B, I), r(B, H), r(H, I), r(H, H), r(H) if bias else None]


CONFIGS = [  # (lengths or None, bias, projection)
    (None, True, False),
    ([4, 2, 3], True, False),
    ([4, 1, 4], False, True),
    (None, True, True),
]


@pytest.mark.parametrize("lengths,bias,proj", CONFIGS)
def test_lstm_gradcheck_and_gradgradcheck(lengths, bias, proj):
    args = _lstm_args(4, 3, 2, 3, 2, bias, proj, seed=0)
    mask = _mask(4, lengths)
    f = lambda *a: bptt.lstm_sequence(*a, mask)  # noqa: E731
    assert torch.autograd.gradcheck(f, args)
    assert torch.autograd.gradgradcheck(f, args)


@pytest.mark.parametrize("lengths,bias,_", CONFIGS)
def test_gru_gradcheck_and_gradgradcheck(lengths, bias, _):
    args = _gru_args(4, 3, 2, 3, bias, seed=1)
    mask = _mask(4, lengths)
    f = lambda *a: bptt.gru_sequence(*a, mask)  # noqa: E731
    assert torch.autograd.gradcheck(f, args)
    assert torch.autograd.gradgradcheck(f, args)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("lengths,bias,_", CONFIGS)
def test_rnn_gradcheck_and_gradgradcheck(lengths, bias, _, nonlinearity):
    args = _rnn_args(4, 3, 2, 3, bias, seed=2)
    mask = _mask(4, lengths)
    f = lambda *a: bptt.rnn_sequence(*a, mask, nonlinearity)  # noqa: E731
    assert torch.autograd.gradcheck(f, args)
    assert torch.autograd.gradgradcheck(f, args)


def _compare_with_autograd(hand, auto, args, seed):
    """Same outputs, and the same gradients for a random weighting of *every* output (states,
    cell states and gates), as autograd through the reference loop."""
    out_hand = hand(*args)
    out_auto = auto(*args)
    out_hand = out_hand if isinstance(out_hand, tuple) else (out_hand,)
    out_auto = out_auto if isinstance(out_auto, tuple) else (out_auto,)
    g = torch.Generator().manual_seed(seed)
    weights = [torch.randn(o.shape, generator=g, dtype=F64) for o in out_auto]
    inputs = [a for a in args if a is not None and a.requires_grad]
    loss_h = sum((w * o).sum() for w, o in zip(weights, out_hand))
    loss_a = sum((w * o).sum() for w, o in zip(weights, out_auto))
    grads_h = torch.autograd.grad(loss_h, inputs)
    grads_a = torch.autograd.grad(loss_a, inputs)
    for a, b in zip(out_hand, out_auto):
        assert (a - b).abs().max() < 1e-12
    for a, b in zip(grads_h, grads_a):
        assert (a - b).abs().max() < 1e-10


@settings(max_examples=25, deadline=None)
@given(
    T=st.integers(1, 7),
    B=st.integers(1, 4),
    I=st.integers(1, 5),
    H=st.integers(1, 5),
    bias=st.booleans(),
    proj=st.booleans(),
    ragged=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_lstm_backward_matches_autograd(T, B, I, H, bias, proj, ragged, seed):
    proj = proj and H > 1
    args = _lstm_args(T, B, I, H, max(1, H - 1), bias, proj, seed)
    lengths = torch.randint(1, T + 1, (B,), generator=torch.Generator().manual_seed(seed))
    mask = _mask(T, lengths.tolist() if ragged else None)
    _compare_with_autograd(
        lambda *a: bptt.lstm_sequence(*a, mask),
        lambda *a: reference.lstm_loop(*a, mask),
        args,
        seed,
    )


@settings(max_examples=20, deadline=None)
@given(
    T=st.integers(1, 7),
    B=st.integers(1, 4),
    I=st.integers(1, 5),
    H=st.integers(1, 5),
    bias=st.booleans(),
    ragged=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_gru_and_rnn_backward_match_autograd(T, B, I, H, bias, ragged, seed):
    lengths = torch.randint(1, T + 1, (B,), generator=torch.Generator().manual_seed(seed))
    mask = _mask(T, lengths.tolist() if ragged else None)
    _compare_with_autograd(
        lambda *a: bptt.gru_sequence(*a, mask),
        lambda *a: reference.gru_loop(*a, mask),
        _gru_args(T, B, I, H, bias, seed),
        seed,
    )
    for nl in ("tanh", "relu"):
        _compare_with_autograd(
            lambda *a, nl=nl: bptt.rnn_sequence(*a, mask, nl),
            lambda *a, nl=nl: reference.rnn_loop(*a, mask, nl),
            _rnn_args(T, B, I, H, bias, seed),
            seed,
        )


def test_weight_gradients_are_not_computed_when_not_needed():
    """needs_input_grad is honoured: frozen weights get no gradient, inputs still do."""
    args = _lstm_args(3, 2, 2, 3, 2, True, False, seed=5)
    for a in args[3:]:
        if a is not None:
            a.requires_grad_(False)
    h_all, _, _ = bptt.lstm_sequence(*args)
    h_all.sum().backward()
    assert args[0].grad is not None and args[1].grad is not None
    assert all(a.grad is None for a in args[3:] if a is not None)
