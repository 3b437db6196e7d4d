"""The fused CPU backend against the reference equations: forward values, gradients (gradcheck in
float64, and against the hand-written BPTT), float32 drift over long sequences, the layers on top
of it against torch.nn, and the fallback where the kernels cannot be built."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstm
from lstm import bptt, kernels
from lstm.kernels import cpu, reference

pytestmark = pytest.mark.skipif(
    cpu.load_extension() is None, reason=f"CPU kernels could not be built: {cpu.build_error()}"
)

F64 = torch.float64


def _rand(*shape, dtype=F64, scale=1.0):
    return torch.randn(*shape, dtype=dtype) * scale


def _lstm_args(T, B, I, H, P=None, bias=True, ragged=False, dtype=F64, seed=0):
    torch.manual_seed(seed)
    P_ = P or H
    mask = None
    if ragged:
        lengths = torch.randint(1, T + 1, (B,))
        lengths[0] = T
        mask = (torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0)).unsqueeze(-1)
    return [
        _rand(T, B, I, dtype=dtype),
        _rand(B, P_, dtype=dtype, scale=0.5),
        _rand(B, H, dtype=dtype, scale=0.5),
        _rand(4 * H, I, dtype=dtype, scale=0.4),
        _rand(4 * H, P_, dtype=dtype, scale=0.4),
        _rand(4 * H, dtype=dtype, scale=0.3) if bias else None,
        _rand(P_, H, dtype=dtype, scale=0.4) if P else None,
        mask,
    ]


def _gru_args(T, B, I, H, bias=True, ragged=False, seed=0):
    torch.manual_seed(seed)
    x, h0, _, _, _, _, _, mask = _lstm_args(T, B, I, H, ragged=ragged, seed=seed)
    return [x, h0, _rand(3 * H, I, scale=0.4), _rand(3 * H, H, scale=0.4),
            _rand(3 * H, scale=0.3) if bias else None, _rand(3 * H, scale=0.3) if bias else None,
            mask]  # fmt: skip


def _rnn_args(T, B, I, H, bias=True, ragged=False, seed=0):
    torch.manual_seed(seed)
    x, h0, _, _, _, _, _, mask = _lstm_args(T, B, I, H, ragged=ragged, seed=seed)
    return [x, h0, _rand(H, I, scale=0.4), _rand(H, H, scale=0.4),
            _rand(H, scale=0.3) if bias else None, mask]  # fmt: skip


def _grad_inputs(args):
    return [
        a.clone().requires_grad_() if a is not None and a.is_floating_point() else a for a in args
    ]


# Random configurations: (T, B, I, H, P, bias, ragged). B = 1, 2, 3, 5, 8 and 40 run the panel
# tiles of every row count (1 to 3 rows with split sums, 4, 6, 8 = 4 + 4, 40 = 6 x 6 + 4); H = 3,
# 9 and 20 leave panels cut short by N. The last two have per-step products of over 32K
# multiply-adds: with two or more torch threads their panels are split among the threads. H=131
# packs its weights on the team too (K * N >= 65536), with the last panel cut short. B=40, H=48
# and B=2, H=40 (8192 multiply-adds a step or more, whole panels, no projection) split the hidden
# units over the threads for the whole loop; H=40 has 5 panels of 8 doubles, an odd count.
CONFIGS = [
    (5, 1, 3, 4, None, True, False),
    (7, 2, 5, 9, None, False, True),
    (6, 3, 4, 20, 7, True, True),
    (4, 5, 6, 8, 3, True, False),
    (4, 8, 5, 12, 6, True, True),
    (3, 40, 10, 48, None, True, True),
    (4, 1, 6, 100, None, True, False),
    (5, 3, 4, 72, 40, True, True),
    (3, 2, 7, 131, None, True, True),
    (5, 2, 6, 40, None, True, True),
]


@pytest.mark.parametrize("T,B,I,H,P,bias,ragged", CONFIGS)
def test_lstm_forward_matches_reference(T, B, I, H, P, bias, ragged):
    args = _lstm_args(T, B, I, H, P, bias, ragged)
    for ours, ref in zip(cpu.lstm(*args), reference.lstm_loop(*args)):
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("chunk", [0, 1, 3])
@pytest.mark.parametrize("T,B,I,H,P,bias,ragged", CONFIGS)
def test_lstm_inference_path_matches_reference(T, B, I, H, P, bias, ragged, chunk):
    """lstm_infer (the layers' inference path: h_all and the last c only, the input projection
    a chunk of steps at a time): the same outputs, whatever the chunk boundaries (0: default)."""
    args = _lstm_args(T, B, I, H, P, bias, ragged)
    h_ref, c_ref, _ = reference.lstm_loop(*args)
    h_all, c_last = cpu.load_extension().lstm_infer(*args, chunk)
    torch.testing.assert_close(h_all, h_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(c_last, c_ref[-1], rtol=0, atol=1e-12)
    if chunk == 0:  # and through the Python entry point, with and without a gradient
        for inputs in (args, _grad_inputs(args)):
            h_all, c_last = cpu.lstm_last(*inputs)
            assert h_all.requires_grad == (inputs is not args)
            torch.testing.assert_close(h_all.detach(), h_ref, rtol=0, atol=1e-12)
            torch.testing.assert_close(c_last.detach(), c_ref[-1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("chunk", [0, 1, 3])
@pytest.mark.parametrize("T,B,I,H,P,bias,ragged", CONFIGS)
def test_gru_inference_path_matches_reference(T, B, I, H, P, bias, ragged, chunk):
    """gru_infer (the GRU layers' inference path: h_all only, the input projection a chunk of
    steps at a time): the same outputs, whatever the chunk boundaries (0: default)."""
    args = _gru_args(T, B, I, H, bias, ragged)
    h_ref, _ = reference.gru_loop(*args)
    h_all = cpu.load_extension().gru_infer(*args, chunk)
    torch.testing.assert_close(h_all, h_ref, rtol=0, atol=1e-12)
    if chunk == 0:  # and through the Python entry point, with and without a gradient
        for inputs in (args, _grad_inputs(args)):
            h_all = cpu.gru_last(*inputs)
            assert h_all.requires_grad == (inputs is not args)
            torch.testing.assert_close(h_all.detach(), h_ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
@pytest.mark.parametrize("grad", [False, True])
def test_empty_batch_matches_torch_nn(cell, grad):
    """A batch of 0 sequences: empty outputs of the right shapes, as torch.nn's layers give (the
    inference path once divided by B to size its chunks: SIGFPE)."""
    torch.manual_seed(0)
    theirs = getattr(torch.nn, cell)(4, 5)
    ours = getattr(lstm, cell).from_torch(theirs, backend="cpu")
    x = torch.randn(3, 0, 4)
    with torch.set_grad_enabled(grad):
        out, state = ours(x)
        ref, state_ref = theirs(x)
    states = zip(*(s if cell == "LSTM" else (s,) for s in (state, state_ref)))
    assert out.shape == ref.shape and all(a.shape == b.shape for a, b in states)


@pytest.mark.parametrize("T,B,I,H,P,bias,ragged", CONFIGS)
def test_gru_and_rnn_forward_match_reference(T, B, I, H, P, bias, ragged):
    args = _gru_args(T, B, I, H, bias, ragged)
    for ours, ref in zip(cpu.gru(*args), reference.gru_loop(*args)):
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    args = _rnn_args(T, B, I, H, bias, ragged)
    for nonlinearity in ("tanh", "relu"):
        ours = cpu.rnn(*args, nonlinearity=nonlinearity)
        ref = reference.rnn_loop(*args, nonlinearity=nonlinearity)
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("P,ragged", [(None, False), (None, True), (3, True)])
def test_lstm_gradcheck(P, ragged):
    # All three outputs (h_all, c_all, gates) get a gradient: gradcheck uses every output.
    args = _grad_inputs(_lstm_args(4, 3, 3, 4, P, True, ragged, seed=1))
    assert torch.autograd.gradcheck(lambda *a: cpu.lstm(*a), args)


@pytest.mark.parametrize("ragged", [False, True])
def test_gru_and_rnn_gradcheck(ragged):
    args = _grad_inputs(_gru_args(4, 3, 3, 4, True, ragged, seed=2))
    assert torch.autograd.gradcheck(lambda *a: cpu.gru(*a), args)
    args = _grad_inputs(_rnn_args(4, 3, 3, 4, True, ragged, seed=3))
    for nonlinearity in ("tanh", "relu"):
        assert torch.autograd.gradcheck(
            lambda *a, nl=nonlinearity: cpu.rnn(*a, nonlinearity=nl), args
        )


@pytest.mark.parametrize("T,B,I,H,P,bias,ragged", CONFIGS)
def test_lstm_gradients_match_handwritten_bptt(T, B, I, H, P, bias, ragged):
    """Larger shapes than gradcheck can afford, against lstm.bptt, with a random weight on every
    output (so the gradients with respect to c_all and the gates are exercised too)."""
    args = _lstm_args(T, B, I, H, P, bias, ragged, seed=4)
    grads = []
    for fn in (cpu.lstm, bptt.lstm_sequence):
        inputs = _grad_inputs(args)
        outs = fn(*inputs)
        torch.manual_seed(9)
        loss = sum((o * torch.randn_like(o)).sum() for o in outs)
        loss.backward()
        grads.append([a.grad for a in inputs if a is not None and a.is_floating_point()])
    for ours, ref in zip(*grads):
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_both_ways_of_the_recurrent_weight_gradient_agree(cell, monkeypatch):
    """dW_hh = sum_t d_pre[t]^T h_{t-1}: one product over a copied block of h_{t-1} up to
    LSTM_CPU_HPREV_MAX elements, else two products without a copy (step 0, then the rest).
    Both against lstm.bptt, with ragged lengths and a projection for the LSTM."""
    if cell == "lstm":
        fns, args = (cpu.lstm, bptt.lstm_sequence), _lstm_args(7, 3, 5, 6, 4, ragged=True, seed=5)
    elif cell == "gru":
        fns, args = (cpu.gru, bptt.gru_sequence), _gru_args(7, 3, 5, 6, ragged=True, seed=5)
    else:
        fns, args = (cpu.rnn, bptt.rnn_sequence), _rnn_args(7, 3, 5, 6, ragged=True, seed=5)
    grads = {}
    for limit in ("0", str(1 << 20), None):
        if limit is None:
            fn = fns[1]
        else:
            monkeypatch.setenv("LSTM_CPU_HPREV_MAX", limit)
            fn = fns[0]
        inputs = _grad_inputs(args)
        outs = fn(*inputs)
        outs = outs if isinstance(outs, tuple) else (outs,)
        torch.manual_seed(9)
        sum((o * torch.randn_like(o)).sum() for o in outs).backward()
        grads[limit] = [a.grad for a in inputs if a is not None and a.is_floating_point()]
    for split, copied, ref in zip(*grads.values()):
        torch.testing.assert_close(split, ref, rtol=0, atol=1e-10)
        torch.testing.assert_close(copied, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("B", [1, 32])
def test_threaded_steps_give_the_same_bits_as_one_thread(cell, B):
    """Each thread owns whole columns of the step's product (and, at B=32, whole rows of the
    pointwise pass) and sums over k in the same order as one thread does, so the thread count
    changes nothing, forward or backward. At B=1 the LSTM and the GRU split the hidden units
    instead (in the forward each thread runs its units' columns in every gate block, then their
    gate arithmetic; in the backward their gate gradients, then their columns of dh_{t-1};
    experiments 12 and 14), which must give the same bits too."""
    make = {"lstm": _lstm_args, "gru": _gru_args, "rnn": _rnn_args}[cell]
    args = make(6, B, 8, 128, ragged=True, seed=5)
    fn = getattr(cpu, cell)
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            # the B=1 forward product: 128 x 512 multiply-adds over 64 panels of 8 doubles
            assert cpu.load_extension().step_threads(128 * 512, 64) == threads
            inputs = _grad_inputs(args)
            outs = fn(*inputs)
            outs = outs if isinstance(outs, tuple) else (outs,)
            sum(o.sum() for o in outs).backward()
            grads = [a.grad for a in inputs if a is not None and a.is_floating_point()]
            results.append([o.detach() for o in outs] + grads)
    finally:
        torch.set_num_threads(before)
    for one, two in zip(*results):
        assert torch.equal(one, two)


def _everything(fn, args):
    """A cell's inference outputs (fn: cpu.lstm, cpu.gru or cpu.rnn), its training outputs and
    every input's gradient (of a sum that weighs each output differently), as one list."""
    inputs = _grad_inputs(args)
    with torch.no_grad():
        inferred = fn(*inputs)
    outs = fn(*inputs)
    inferred, outs = (o if isinstance(o, tuple) else (o,) for o in (inferred, outs))
    sum((o * (k + 1)).sum() for k, o in enumerate(outs)).backward()
    grads = [a.grad for a in inputs if a is not None and a.is_floating_point()]
    return [*inferred, *(o.detach() for o in outs), *grads]


def _assert_same_bits(one, *others):
    for other in others:
        for a, b in zip(one, other, strict=True):
            assert torch.equal(a, b)


def _same_bits_on_one_and_two_threads(monkeypatch, variable, run):
    """run(threads, value) on one thread with `variable` at "1", then on two with it at "0" and
    at "1": the three results must be the same bits. Returns the last (two threads, "1")."""
    results = {}
    before = torch.get_num_threads()
    try:
        for threads, value in ((1, "1"), (2, "0"), (2, "1")):
            torch.set_num_threads(threads)
            monkeypatch.setenv(variable, value)
            results[threads, value] = run(threads, value)
    finally:
        torch.set_num_threads(before)
    _assert_same_bits(results[1, "1"], results[2, "0"], results[2, "1"])
    return results[2, "1"]


@pytest.mark.parametrize("P", [None, 96])
def test_rows_split_gives_the_same_bits_as_one_thread(monkeypatch, P):
    """Experiment 20: with two threads and B=32 each thread runs 16 whole rows of the time loop
    (their product against every panel, their gate arithmetic; forward, inference and BPTT), with
    ragged lengths and with a projection: the same bits as one thread, and as the panels' split
    (LSTM_CPU_BY_ROWS=0)."""
    args = _lstm_args(6, 32, 8, 128, P, ragged=True, seed=5)
    ext = cpu.load_extension()
    weights = (512 * (P or 128) + (128 * P if P else 0)) * 8

    def run(threads, rows):
        split = ext.split_rows(32, weights, 512 * 8, 32 * 512 * (P or 128))
        assert split == (threads == 2 and rows == "1")
        return _everything(cpu.lstm, args)

    _same_bits_on_one_and_two_threads(monkeypatch, "LSTM_CPU_BY_ROWS", run)


@pytest.mark.parametrize("bias", [True, False])
def test_gru_rows_split_gives_the_same_bits_as_one_thread(monkeypatch, bias):
    """Experiment 23: with two threads and B=32, H=128 (B * H = 4096: no units split) each thread
    runs 16 whole rows of the GRU's time loop (their product against every panel with b_hh,
    their gate arithmetic; forward, inference and BPTT), with ragged lengths: the same bits as
    one thread, and as the per-step forks (LSTM_CPU_BY_ROWS=0); and the values of the reference
    loop."""
    args = _gru_args(6, 32, 8, 128, bias=bias, ragged=True, seed=5)
    ext = cpu.load_extension()

    def run(threads, rows):
        expected = "rows" if (threads, rows) == (2, "1") else "steps"
        assert ext.loop_split("gru", 32, 128, 128, False, 8) == expected
        return _everything(cpu.gru, args)

    by_rows = _same_bits_on_one_and_two_threads(monkeypatch, "LSTM_CPU_BY_ROWS", run)
    h_ref = reference.gru_loop(*args)[0]
    torch.testing.assert_close(by_rows[0], h_ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_rows_split_gives_the_same_bits_as_one_thread(monkeypatch, nonlinearity):
    """Experiment 24: with two threads and B=32, H=64, each thread runs 16 whole rows of the
    plain RNN's time loop (forward, inference and BPTT), with ragged lengths: the same bits as
    one thread, and as the per-step forks (LSTM_CPU_BY_ROWS=0); and the reference's values."""
    args = _rnn_args(6, 32, 8, 64, ragged=True, seed=5)
    ext = cpu.load_extension()

    def fn(*inputs):
        return cpu.rnn(*inputs, nonlinearity=nonlinearity)

    def run(threads, rows):
        split = ext.split_rows(32, 64 * 64 * 8, 64 * 8, 32 * 64 * 64)
        assert split == ((threads, rows) == (2, "1"))
        return _everything(fn, args)

    by_rows = _same_bits_on_one_and_two_threads(monkeypatch, "LSTM_CPU_BY_ROWS", run)
    h_ref = reference.rnn_loop(*args, nonlinearity)
    torch.testing.assert_close(by_rows[0], h_ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("B,H", [(16, 64), (32, 64)])
def test_rows_split_is_preferred_to_the_units_split_and_both_give_the_same_bits(
    monkeypatch, cell, B, H
):
    """Experiments 22 and 23: where both splits apply (8 rows a thread or more, B * H under
    4096), the rows split runs (LSTM_CPU_PREFER_ROWS=0: the units split), for the LSTM and the
    GRU. Both give one thread's bits, forward, inference and BPTT, with ragged lengths."""
    make = {"lstm": _lstm_args, "gru": _gru_args}[cell]
    args = make(6, B, 8, H, ragged=True, seed=7)
    ext = cpu.load_extension()

    def run(threads, prefer):
        expected = "steps" if threads == 1 else {"0": "units", "1": "rows"}[prefer]
        assert ext.loop_split(cell, B, H, H, False, 8) == expected
        return _everything(getattr(cpu, cell), args)

    _same_bits_on_one_and_two_threads(monkeypatch, "LSTM_CPU_PREFER_ROWS", run)


@pytest.mark.parametrize(
    "B,H,P",
    [(3, 20, 7), (2, 40, None), (32, 128, None), (32, 128, 96)],
    ids=["serial-projection", "units-split", "rows-split", "rows-split-projection"],
)
def test_bias_in_the_gate_pass_or_the_projection_agree(monkeypatch, B, H, P):
    """Experiment 21: the LSTM's bias is added in the gate pass (LSTM_CPU_BIAS_IN_PASS=1, the
    default) instead of being broadcast into the pre-activations before the input projection's
    GEMM (0). Both ways, on two threads, for the serial loop, the units split (B=2, H=40) and the
    rows split (B=32), with ragged lengths: forward, inference and gradients against the
    reference equations and lstm.bptt in float64."""
    args = _lstm_args(5, B, 6, H, P, bias=True, ragged=True, seed=3)
    h_ref, c_ref, _ = reference.lstm_loop(*args)
    ref_inputs = _grad_inputs(args)
    torch.manual_seed(9)
    ref_outs = bptt.lstm_sequence(*ref_inputs)
    weights = [torch.randn_like(o) for o in ref_outs]
    sum((o * w).sum() for o, w in zip(ref_outs, weights)).backward()
    ref_grads = [a.grad for a in ref_inputs if a is not None and a.is_floating_point()]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        for in_pass in ("0", "1"):
            monkeypatch.setenv("LSTM_CPU_BIAS_IN_PASS", in_pass)
            h_all, c_last = cpu.load_extension().lstm_infer(*args, 2)
            torch.testing.assert_close(h_all, h_ref, rtol=0, atol=1e-12)
            torch.testing.assert_close(c_last, c_ref[-1], rtol=0, atol=1e-12)
            inputs = _grad_inputs(args)
            outs = cpu.lstm(*inputs)
            torch.testing.assert_close(outs[0].detach(), h_ref, rtol=0, atol=1e-12)
            torch.testing.assert_close(outs[1].detach(), c_ref, rtol=0, atol=1e-12)
            sum((o * w).sum() for o, w in zip(outs, weights)).backward()
            grads = [a.grad for a in inputs if a is not None and a.is_floating_point()]
            assert len(grads) == len(ref_grads) == 6 + (P is not None)  # x h0 c0 W_ih W_hh b W_hr
            for ours, ref in zip(grads, ref_grads):
                torch.testing.assert_close(ours, ref, rtol=0, atol=1e-10)
    finally:
        torch.set_num_threads(before)


def test_float32_stays_within_1e5_of_float64_after_1000_steps():
    args64 = _lstm_args(1000, 3, 8, 16, None, True, False, seed=5)
    args64[3] *= 0.5
    args64[4] *= 0.5
    ref = reference.lstm_loop(*args64)
    args32 = [a.float() if a is not None and a.is_floating_point() else a for a in args64]
    for ours, exact in zip(cpu.lstm(*args32), ref):
        assert ours.dtype == torch.float32
        assert (ours.double() - exact).abs().max().item() < 1e-5
    gru32 = [
        a.float() if a is not None and a.is_floating_point() else a
        for a in _gru_args(1000, 3, 8, 16)
    ]
    ours = cpu.gru(*gru32)[0].double()
    exact = reference.gru_loop(
        *[a.double() if a is not None and a.is_floating_point() else a for a in gru32]
    )[0]
    assert (ours - exact).abs().max().item() < 1e-5


def test_double_backward_is_refused():
    args = _grad_inputs(_lstm_args(3, 2, 3, 4))
    h_all = cpu.lstm(*args)[0]
    (grad,) = torch.autograd.grad(h_all.sum(), args[3], create_graph=True)
    # once_differentiable: the first-order gradient carries no graph, so a second order fails.
    with pytest.raises(RuntimeError, match=r"does not require grad|once_differentiable"):
        grad.sum().backward()


def test_inference_skips_autograd():
    args = _lstm_args(5, 2, 3, 4)
    w = args[3].clone().requires_grad_()
    with torch.no_grad():
        h_all = cpu.lstm(args[0], args[1], args[2], w, *args[4:])[0]
    assert h_all.grad_fn is None


# --------------------------------------------------------------------------------------------
# The layers on the fused path against torch.nn
# --------------------------------------------------------------------------------------------


def test_auto_picks_cpu_and_repr_says_so():
    model = lstm.LSTM(4, 8)
    assert "cpu" in kernels.available_backends()
    assert kernels.get_backend("auto", torch.device("cpu"), torch.float32).name == "cpu"
    assert kernels.get_backend("auto", torch.device("cpu"), torch.float64).name == "cpu"
    assert "backend=cpu" in repr(model)


@pytest.mark.parametrize(
    "kind,kwargs",
    [
        ("LSTM", dict(num_layers=2, bidirectional=True)),
        ("LSTM", dict(num_layers=2, proj_size=3, bidirectional=True)),
        ("LSTM", dict(num_layers=1, bias=False, batch_first=True)),
        ("GRU", dict(num_layers=2, bidirectional=True)),
        ("RNN", dict(num_layers=2, nonlinearity="relu", bidirectional=True)),
    ],
)
def test_layers_match_torch_nn_with_ragged_lengths(kind, kwargs):
    torch.manual_seed(6)
    theirs = getattr(torch.nn, kind)(5, 7, dtype=F64, **kwargs)
    ours = getattr(lstm, kind).from_torch(theirs, backend="cpu")
    T, B = 9, 4
    lengths = torch.tensor([9, 6, 3, 1])
    x = (
        torch.randn(B, T, 5, dtype=F64)
        if kwargs.get("batch_first")
        else torch.randn(T, B, 5, dtype=F64)
    )
    results = []
    for module in (theirs, ours):
        inp = x.clone().requires_grad_()
        packed = pack_padded_sequence(inp, lengths, batch_first=kwargs.get("batch_first", False))
        out, state = module(packed)
        out, _ = pad_packed_sequence(out, batch_first=kwargs.get("batch_first", False))
        states = state if isinstance(state, tuple) else (state,)
        loss = (out * torch.linspace(-1, 1, out.shape[-1], dtype=F64)).sum() + sum(
            (s**2).sum() for s in states
        )
        loss.backward()
        results.append([out, *states, inp.grad, *[p.grad for p in module.parameters()]])
    for mine, ref in zip(results[1], results[0]):
        torch.testing.assert_close(mine, ref, rtol=1e-9, atol=1e-10)


def test_lstm_float32_module_matches_torch_nn():
    torch.manual_seed(7)
    theirs = torch.nn.LSTM(16, 32, num_layers=2)
    ours = lstm.LSTM.from_torch(theirs)  # auto: the cpu backend
    x = torch.randn(50, 8, 16)
    with torch.no_grad():
        out_ours, (_, c_ours) = ours(x)
        out_theirs, (_, c_theirs) = theirs(x)
    torch.testing.assert_close(out_ours, out_theirs, rtol=0, atol=2e-5)
    torch.testing.assert_close(c_ours, c_theirs, rtol=0, atol=2e-5)


# --------------------------------------------------------------------------------------------
# Where the kernels cannot be built
# --------------------------------------------------------------------------------------------


@pytest.fixture
def failed_build(monkeypatch):
    """A fresh loader whose build raises, as it does without a compiler; restored afterwards."""

    def no_compiler():
        raise RuntimeError("Error building extension: g++: command not found")

    monkeypatch.setattr(cpu, "_build", no_compiler)
    monkeypatch.setattr(cpu, "_ext", None)
    monkeypatch.setattr(cpu, "_error", None)
    monkeypatch.setattr(kernels, "_LOADED", {})
    yield


def test_failed_build_warns_once_and_falls_back_to_bptt(failed_build):
    torch.manual_seed(8)
    model = lstm.LSTM(3, 5, num_layers=2, dtype=F64)
    reference_model = lstm.LSTM.from_torch(model.to_torch(), backend="bptt")
    x = torch.randn(6, 2, 3, dtype=F64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out1, _ = model(x)
        out2, _ = model(x)
        text = repr(model)
    built = [w for w in caught if "could not build the fused CPU kernels" in str(w.message)]
    assert len(built) == 1
    assert issubclass(built[0].category, RuntimeWarning)
    assert "g++: command not found" in str(built[0].message)
    assert "backend=bptt" in text
    torch.testing.assert_close(out1, reference_model(x)[0], rtol=0, atol=0)
    torch.testing.assert_close(out2, out1, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="backend 'cpu' is not available"):
        lstm.LSTM(3, 5, backend="cpu")(x.float())


def test_build_key_separates_checkouts_of_the_same_sources(tmp_path):
    # Regression: the key hashed only the sources' contents, so two checkouts shared one build
    # folder whose ninja file names the source path: each rebuilt the other's kernels (40-80 s).
    here = Path(cpu.__file__).parent
    for name in cpu._SOURCES:
        (tmp_path / name).write_bytes((here / name).read_bytes())
    assert cpu._build_key(tmp_path) != cpu._build_key(here)
    assert cpu._build_key(here) == cpu._build_key()


# --------------------------------------------------------------------------------------------
# Every compiled copy of the loops, and both GEMM libraries
# --------------------------------------------------------------------------------------------

# Run in a fresh process per setting (the copy and the library are chosen once per process):
# float32 forward and gradients of the three cells, with and without a projection and padding,
# on batch sizes that run every row tile (1-3 split, 4, 6, 8) and hidden sizes whose 4H leaves
# an odd panel (H=20: 5 panels of 16 floats) or a panel cut short (H=9), against float64.
_EVERY_COPY_SCRIPT = r"""
import torch
from lstm.kernels import cpu, reference
ext = cpu.load_extension()
print(ext.isa(), ext.gemm_library())
worst = 0.0
for T, B, I, H, P, ragged in [(6, 1, 5, 20, None, False), (5, 3, 7, 9, 4, True),
                              (4, 13, 6, 20, None, True), (4, 40, 9, 36, None, False),
                              (3, 6, 33, 64, None, True)]:
    g = torch.Generator().manual_seed(T * 1000 + B)
    r = lambda *s, scale=0.4: torch.randn(*s, generator=g, dtype=torch.float64) * scale
    P_ = P or H
    mask = None
    if ragged:
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        lengths[0] = T
        mask = (torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0)).unsqueeze(-1)
    cases = {
        "lstm": (cpu.lstm, reference.lstm_loop, [r(T, B, I, scale=1), r(B, P_), r(B, H),
                 r(4 * H, I), r(4 * H, P_), r(4 * H), r(P_, H) if P else None, mask]),
        "gru": (cpu.gru, reference.gru_loop, [r(T, B, I, scale=1), r(B, H), r(3 * H, I),
                r(3 * H, H), r(3 * H), r(3 * H), mask]),
        "rnn": (cpu.rnn, reference.rnn_loop, [r(T, B, I, scale=1), r(B, H), r(H, I), r(H, H),
                r(H), mask]),
    }
    for ours_fn, ref_fn, args in cases.values():
        results = []
        for dtype in (torch.float32, torch.float64):
            inputs = [a.to(dtype).requires_grad_() if a is not None and a.is_floating_point()
                      else a for a in args]
            fn = ours_fn if dtype == torch.float32 else ref_fn
            outs = fn(*inputs)
            outs = outs if isinstance(outs, tuple) else (outs,)
            weights = [torch.randn(o.shape, generator=torch.Generator().manual_seed(i),
                                   dtype=torch.float64).to(dtype) for i, o in enumerate(outs)]
            sum((o * w).sum() for o, w in zip(outs, weights)).backward()
            grads = [a.grad for a in inputs if a is not None and a.is_floating_point()]
            results.append([o.detach().double() for o in outs] + [x.double() for x in grads])
        for ours, exact in zip(*results):
            worst = max(worst, ((ours - exact).abs().max() / (1 + exact.abs().max())).item())
print(worst)
"""


def _copies_and_libraries():
    ext = cpu.load_extension()  # None where it cannot build: the module is skipped then
    best = ext.isa() if ext is not None else "base"
    isas = {"avx512": ["avx512", "avx2", "base"], "avx2": ["avx2", "base"]}.get(best, ["base"])
    return [(isa, gemm) for isa in isas for gemm in ("mkl", "onednn")]


@pytest.mark.parametrize("isa,gemm", _copies_and_libraries())
def test_every_copy_of_the_loops_and_gemm_library_matches_float64(isa, gemm):
    """The AVX-512 copy tiles two panels at a time and sends float32's big GEMMs to oneDNN; the
    AVX2 and portable copies tile one panel and use MKL. Each is checked where this CPU runs it
    (LSTM_CPU_ISA caps the copy, LSTM_CPU_GEMM forces the library, and LSTM_CPU_ONEDNN_MIN=0
    sends these small products to oneDNN too: by default those under 2^22 multiply-adds go to
    MKL)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, LSTM_CPU_ISA=isa, LSTM_CPU_GEMM=gemm, LSTM_CPU_ONEDNN_MIN="0")
    run = subprocess.run([sys.executable, "-c", _EVERY_COPY_SCRIPT], env=env, text=True,
                         capture_output=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    first, worst = run.stdout.split("\n")[:2]
    if gemm == "onednn" and first.split()[1] == "mkl":
        pytest.skip(
            "torch's oneDNN float32 matmul is missing or refuses this CPU (it needs avx512bw/vl/dq"
            " or avx_ne_convert): MKL runs instead"
        )
    assert first.split() == [isa, gemm]
    assert float(worst) < 2e-5, worst
