"""lstm.LSTM/GRU/RNN and the cells against torch.nn with the same weights: outputs, final states
and every gradient, over the argument combinations torch accepts."""

from __future__ import annotations

import io
import itertools

import pytest
import torch
from conftest import TOL, flat_tensors, grad_error, max_abs_diff
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load, save
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import lstm

KINDS = {
    "lstm": (lstm.LSTM, nn.LSTM),
    "gru": (lstm.GRU, nn.GRU),
    "rnn_tanh": (lstm.RNN, nn.RNN),
    "rnn_relu": (lstm.RNN, nn.RNN),
}


def _pair(kind: str, dtype=torch.float64, seed: int = 0, **kwargs):
    ours_cls, torch_cls = KINDS[kind]
    if kind == "rnn_relu":
        kwargs["nonlinearity"] = "relu"
    torch.manual_seed(seed)
    theirs = torch_cls(dtype=dtype, **kwargs)
    ours = ours_cls.from_torch(theirs)
    return ours, theirs


def _make_input(kind_of_input, T, B, I, batch_first, dtype, seed):
    """A fresh input each call (packing keeps a graph) and the same values every time."""
    g = torch.Generator().manual_seed(seed)
    if kind_of_input == "unbatched":
        return torch.randn(T, I, generator=g, dtype=dtype).requires_grad_()
    shape = (B, T, I) if batch_first else (T, B, I)
    x = torch.randn(*shape, generator=g, dtype=dtype).requires_grad_()
    if kind_of_input == "packed":
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        lengths[0] = T
        return x, pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
    return x


def _state(kind, num_states, B, ours, dtype, seed, unbatched=False):
    g = torch.Generator().manual_seed(seed + 1)
    out = ours.proj_size if ours.proj_size else ours.hidden_size
    shape = lambda size: (num_states, size) if unbatched else (num_states, B, size)  # noqa: E731
    h = torch.randn(*shape(out), generator=g, dtype=dtype).requires_grad_()
    if kind == "lstm":
        c = torch.randn(*shape(ours.hidden_size), generator=g, dtype=dtype).requires_grad_()
        return (h, c)
    return h


def _check_parity(kind, dtype, input_kind, with_state, seed=0, T=5, B=3, I=4, **kwargs):
    ours, theirs = _pair(kind, dtype, seed, input_size=I, **kwargs)
    D = 2 if ours.bidirectional else 1
    results = []
    for module in (ours, theirs):
        made = _make_input(input_kind, T, B, I, ours.batch_first, dtype, seed)
        leaf, inp = made if input_kind == "packed" else (made, made)
        hx = None
        if with_state:
            hx = _state(kind, ours.num_layers * D, B, ours, dtype, seed, input_kind == "unbatched")
        out = module(inp, hx)
        tensors = flat_tensors(out)
        g = torch.Generator().manual_seed(seed + 2)
        loss = sum((torch.randn(t.shape, generator=g, dtype=dtype) * t).sum() for t in tensors)
        wrt = [leaf, *module.parameters()] + (
            list(hx) if isinstance(hx, tuple) else [hx] * bool(hx is not None)
        )
        grads = torch.autograd.grad(loss, wrt)
        results.append((out, grads))
    (out_a, grads_a), (out_b, grads_b) = results
    tol = TOL[dtype]
    assert type(out_a[0]) is type(out_b[0])
    assert max_abs_diff(out_a[0], out_b[0]) <= tol
    assert max_abs_diff(out_a[1], out_b[1]) <= tol
    assert grad_error(list(grads_a), list(grads_b)) <= tol


GRID = [
    dict(num_layers=L, bidirectional=bi, bias=bias, batch_first=bf)
    for L, bi, bias, bf in itertools.product([1, 2], [False, True], [True, False], [False, True])
]


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize(
    "config", GRID, ids=lambda c: "-".join(f"{k}={int(v)}" for k, v in c.items())
)
@pytest.mark.parametrize("input_kind", ["batched", "packed", "unbatched"])
def test_parity_float64(kind, config, input_kind):
    _check_parity(kind, torch.float64, input_kind, with_state=True, hidden_size=3, **config)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("input_kind", ["batched", "packed", "unbatched"])
@pytest.mark.parametrize("with_state", [False, True])
def test_parity_float32(kind, input_kind, with_state):
    _check_parity(
        kind, torch.float32, input_kind, with_state, hidden_size=16, num_layers=2,
        bidirectional=True, T=20, B=4, I=8,
    )  # fmt: skip


@pytest.mark.parametrize("input_kind", ["batched", "packed", "unbatched"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_projection_parity(input_kind, dtype, bidirectional):
    _check_parity(
        "lstm", dtype, input_kind, with_state=True, hidden_size=6, proj_size=3, num_layers=2,
        bidirectional=bidirectional,
    )  # fmt: skip


@settings(max_examples=30, deadline=None)
@given(
    kind=st.sampled_from(list(KINDS)),
    T=st.integers(1, 8),
    B=st.integers(1, 5),
    I=st.integers(1, 6),
    H=st.integers(2, 6),
    num_layers=st.integers(1, 3),
    bidirectional=st.booleans(),
    proj=st.booleans(),
    input_kind=st.sampled_from(["batched", "packed", "unbatched"]),
    with_state=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_parity_hypothesis_shapes(
    kind, T, B, I, H, num_layers, bidirectional, proj, input_kind, with_state, seed
):
    extra = {"proj_size": H - 1} if (proj and kind == "lstm") else {}
    _check_parity(
        kind, torch.float64, input_kind, with_state, seed=seed, T=T, B=B, I=I, hidden_size=H,
        num_layers=num_layers, bidirectional=bidirectional, **extra,
    )  # fmt: skip


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("input_kind", ["batched", "packed"])
def test_dropout_matches_torch_under_the_same_seed(kind, input_kind):
    ours, theirs = _pair(kind, torch.float32, input_size=4, hidden_size=8, num_layers=3,
                         dropout=0.5, bidirectional=True)  # fmt: skip
    outs = []
    for module in (ours, theirs):
        made = _make_input(input_kind, 6, 3, 4, False, torch.float32, 0)
        inp = made[1] if input_kind == "packed" else made
        torch.manual_seed(123)
        outs.append(flat_tensors(module(inp)))
    assert max_abs_diff(outs[0], outs[1]) <= 1e-5
    # and dropout really acts: a different seed gives a different output, eval mode none
    made = _make_input(input_kind, 6, 3, 4, False, torch.float32, 0)
    inp = made[1] if input_kind == "packed" else made
    torch.manual_seed(124)
    assert max_abs_diff(flat_tensors(ours(inp)), outs[1]) > 1e-3
    ours.eval()
    theirs.eval()
    assert max_abs_diff(flat_tensors(ours(inp)), flat_tensors(theirs(inp))) <= 1e-5


@pytest.mark.parametrize("kind", list(KINDS))
def test_parameter_names_and_shapes_match_torch(kind):
    kw = dict(input_size=3, hidden_size=5, num_layers=2, bidirectional=True)
    if kind == "lstm":
        kw["proj_size"] = 2
    ours, theirs = _pair(kind, torch.float32, **kw)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [
        (n, p.shape) for n, p in theirs.named_parameters()
    ]


@pytest.mark.parametrize("kind", list(KINDS))
def test_state_dict_round_trips_both_ways(kind):
    ours_cls, torch_cls = KINDS[kind]
    kw = dict(input_size=3, hidden_size=5, num_layers=2, bidirectional=True)
    if kind == "rnn_relu":
        kw["nonlinearity"] = "relu"
    theirs = torch_cls(**kw)
    ours = ours_cls(**kw)
    ours.load_state_dict(theirs.state_dict())  # torch -> ours
    back = torch_cls(**kw)
    back.load_state_dict(ours.state_dict())  # ours -> torch
    for (n1, a), (n2, b) in zip(theirs.state_dict().items(), back.state_dict().items()):
        assert n1 == n2 and torch.equal(a, b)
    # through safetensors bytes, as a checkpoint would
    restored = ours_cls(**kw)
    restored.load_state_dict(load(save(ours.state_dict())))
    x = torch.randn(4, 2, 3)
    assert max_abs_diff(flat_tensors(restored(x)), flat_tensors(theirs(x))) <= 1e-5


@pytest.mark.parametrize("kind", list(KINDS))
def test_parametrized_weights_apply_as_in_torch(kind):
    # The layer reads plain parameters from _parameters for speed; a parametrized one (weight norm
    # here) must still be computed through its parametrization, forward and backward.
    from torch.nn.utils.parametrizations import weight_norm

    ours, theirs = _pair(kind, num_layers=2, input_size=3, hidden_size=5, bidirectional=True)
    for module in (ours, theirs):
        weight_norm(module, "weight_hh_l1_reverse")
        with torch.no_grad():
            module.parametrizations.weight_hh_l1_reverse.original0.mul_(2.0)  # g: not the norm
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    assert max_abs_diff(flat_tensors(ours(x)), flat_tensors(theirs(x))) <= 1e-12
    ours(x)[0].sum().backward()
    theirs(x)[0].sum().backward()
    g_ours = ours.parametrizations.weight_hh_l1_reverse.original1.grad
    g_theirs = theirs.parametrizations.weight_hh_l1_reverse.original1.grad
    assert g_ours is not None and torch.allclose(g_ours, g_theirs, atol=1e-12)


@pytest.mark.parametrize("kind", list(KINDS))
def test_to_torch_and_from_torch(kind):
    kw = dict(input_size=3, hidden_size=4, num_layers=2, batch_first=True, dropout=0.25)
    ours, theirs = _pair(kind, torch.float32, **kw)
    back = ours.to_torch()
    assert type(back) is type(theirs)
    assert (back.batch_first, back.dropout, back.num_layers) == (True, 0.25, 2)
    for a, b in zip(back.parameters(), theirs.parameters()):
        assert torch.equal(a, b)
    ours_cls = KINDS[kind][0]
    with pytest.raises(TypeError, match=r"from_torch expects a torch\.nn"):
        ours_cls.from_torch(nn.Linear(2, 2))


def test_lstm_to_torch_keeps_projection():
    ours = lstm.LSTM(3, 6, proj_size=2)
    assert ours.to_torch().proj_size == 2


def test_same_seed_gives_same_weights_as_torch_and_same_results_twice():
    """Initialisation consumes the RNG exactly as torch.nn does, and a run is deterministic."""
    torch.manual_seed(7)
    theirs = nn.LSTM(3, 4, num_layers=2)
    torch.manual_seed(7)
    ours = lstm.LSTM(3, 4, num_layers=2)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a, b)
    x = torch.randn(6, 2, 3)
    first = flat_tensors(ours(x))
    second = flat_tensors(ours(x))
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_zero_batch_gives_empty_outputs_like_torch():
    ours, theirs = _pair("lstm", torch.float32, input_size=4, hidden_size=3)
    x = torch.randn(5, 0, 4)
    a, b = ours(x), theirs(x)
    assert a[0].shape == b[0].shape and a[1][0].shape == b[1][0].shape


def test_module_repr_names_the_backend():
    assert "backend=" in repr(lstm.LSTM(3, 4))
    assert repr(lstm.LSTM(3, 4, backend="autograd")).endswith("backend=autograd)")


def test_autograd_backend_matches_bptt_backend():
    torch.manual_seed(0)
    a = lstm.LSTM(3, 4, num_layers=2, bidirectional=True, backend="autograd", dtype=torch.float64)
    b = lstm.LSTM(3, 4, num_layers=2, bidirectional=True, backend="bptt", dtype=torch.float64)
    b.load_state_dict(a.state_dict())
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    assert max_abs_diff(flat_tensors(a(x)), flat_tensors(b(x))) < 1e-12


# --------------------------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------------------------

CELLS = {"lstm": (lstm.LSTMCell, nn.LSTMCell), "gru": (lstm.GRUCell, nn.GRUCell),
         "rnn": (lstm.RNNCell, nn.RNNCell)}  # fmt: skip


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_state", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cell_parity(kind, batched, with_state, dtype):
    ours_cls, torch_cls = CELLS[kind]
    torch.manual_seed(0)
    theirs = torch_cls(5, 4, dtype=dtype)
    ours = ours_cls.from_torch(theirs)
    x = torch.randn(*((3, 5) if batched else (5,)), dtype=dtype, requires_grad=True)
    hshape = (3, 4) if batched else (4,)
    hx = None
    if with_state:
        hx = torch.randn(hshape, dtype=dtype, requires_grad=True)
        if kind == "lstm":
            hx = (hx, torch.randn(hshape, dtype=dtype, requires_grad=True))
    outs = [ours(x, hx), theirs(x, hx)]
    assert max_abs_diff(outs[0], outs[1]) <= TOL[dtype]
    grads = [
        torch.autograd.grad(sum(t.sum() for t in flat_tensors(o)), [x, *m.parameters()])
        for o, m in zip(outs, (ours, theirs))
    ]
    assert grad_error(list(grads[0]), list(grads[1])) <= TOL[dtype]
    back = ours.to_torch()
    assert all(torch.equal(a, b) for a, b in zip(back.parameters(), theirs.parameters()))


def test_cell_state_dict_loads_both_ways():
    theirs = nn.GRUCell(3, 2, bias=False)
    ours = lstm.GRUCell(3, 2, bias=False)
    ours.load_state_dict(theirs.state_dict())
    buf = io.BytesIO(save(ours.state_dict()))
    theirs.load_state_dict(load(buf.getvalue()))


@pytest.mark.parametrize("kind", list(KINDS))
def test_zero_batch_backward(kind):
    """Regression: an empty batch used to fail in reshape(-1) inside the kernels."""
    kw = {"proj_size": 2} if kind == "lstm" else {}
    ours, _ = _pair(kind, torch.float64, input_size=4, hidden_size=3, **kw)
    x = torch.randn(5, 0, 4, dtype=torch.float64, requires_grad=True)
    grads = torch.autograd.grad(flat_tensors(ours(x))[0].sum(), [x, *ours.parameters()])
    assert all(torch.all(g == 0) for g in grads)


def test_parametrized_weights_are_used_like_torch():
    """Weights computed by a parametrization (weight norm, a scale) reach the kernels; the
    per-call parameter lookup must go through getattr, not a cached tensor."""
    import torch.nn.utils.parametrize as P

    class Double(nn.Module):
        def forward(self, w):
            return 2 * w

    ours, theirs = _pair("lstm", torch.float64, input_size=3, hidden_size=4, num_layers=2)
    for m in (ours, theirs):
        P.register_parametrization(m, "weight_hh_l1", Double())
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    assert max_abs_diff(flat_tensors(ours(x)), flat_tensors(theirs(x))) <= 1e-10
    with torch.no_grad():
        ours.parametrizations.weight_hh_l1.original.mul_(0.5)
        theirs.parametrizations.weight_hh_l1.original.mul_(0.5)
    assert max_abs_diff(flat_tensors(ours(x)), flat_tensors(theirs(x))) <= 1e-10


@pytest.mark.parametrize("make", [lambda: lstm.LSTM(6, 5, 2, bidirectional=True),
                                  lambda: torch.nn.LSTM(6, 5, proj_size=3),
                                  lambda: lstm.GRU(6, 5), lambda: torch.nn.RNN(6, 5)])  # fmt: skip
def test_keras_init(make):
    torch.manual_seed(0)
    layer = lstm.keras_init_(make())
    H = layer.hidden_size
    for name, p in layer.named_parameters():
        if name.startswith("weight_hh"):  # orthogonal: (G*H, H) with orthonormal columns
            torch.testing.assert_close(p.T @ p, torch.eye(p.shape[1]), atol=1e-5, rtol=0)
        elif name.startswith("weight_ih"):  # Glorot-uniform bound over the whole matrix
            assert p.abs().max() <= (6 / sum(p.shape)) ** 0.5
        elif name.startswith("bias_ih") and layer.mode == "LSTM":
            expected = torch.zeros_like(p)
            expected[H : 2 * H] = 1.0  # the forget gate (i, f, g, o)
            torch.testing.assert_close(p, expected)
        elif name.startswith("bias"):
            assert not p.any()


def test_keras_init_rejects_other_modules():
    with pytest.raises(
        TypeError, match="keras_init_ expects an LSTM, GRU or RNN layer, got Linear"
    ):
        lstm.keras_init_(torch.nn.Linear(3, 4))
