"""The Triton backend against the reference equations (the ``autograd`` backend, in float64).

Without a GPU these run the very same kernels under the Triton interpreter on the CPU
(``TRITON_INTERPRET=1``, set by the module fixture below and restored after it), at tiny sizes
because the interpreter is slow. With a CUDA device they run compiled on the GPU, and the
``gpu_full_size`` tests add the issue's full-size bars (T = 1000: float32 relative error < 1e-5,
bfloat16 < 1e-2).

Every output and every gradient is compared with the float64 reference run on the same (for
bfloat16: the same rounded) inputs and upstream gradients, by two measures: the max error, the
largest absolute difference over the larger of 1 and the reference's largest magnitude (what
``conftest.grad_error`` computes), and the norm error ``‖ours − ref‖ / ‖ref‖``.

- float32: max error < 1e-5 (the stricter measure).
- bfloat16: norm error < 1e-2 (the issue's bar) and max error < 2e-2. A single bfloat16 rounding
  of a value in [2, 4) is already 8e-3 by the max measure, and torch's own loop run in bfloat16
  lands at 5e-3 to 1e-2 on these cases: a 1e-2 max bar would test luck, not the kernels.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys

import pytest
import torch
from conftest import grad_error
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstm
from lstm.kernels import _triton, get_backend, reference, register_backend

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
# dtype -> (max error bar, norm error bar); see the module docstring.
BARS = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (2e-2, 1e-2)}
gpu_full_size = pytest.mark.skipif(not CUDA, reason="full-size bars need a CUDA device")
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None,
    reason="triton is not installed (it is in the dev extra on Linux x86_64)",
)


def _interpreted_triton_loaded() -> bool:
    return type(sys.modules["triton.language"].zeros).__name__ == "InterpretedFunction"


@pytest.fixture(scope="module", autouse=True)
def K():
    """The kernels module, interpreted on a CPU machine.

    Triton decides at import whether its (and our) kernels are compiled or interpreted, and reads
    TRITON_INTERPRET again at the first launch: so the variable is set here, before triton is first
    imported, for this module's tests only, and restored after them (nothing else in the suite
    imports triton; the registry is reset on both sides so no other test sees a stale load).
    """
    saved = os.environ.get("TRITON_INTERPRET")
    if not CUDA:
        if "triton.language" in sys.modules and not _interpreted_triton_loaded():
            pytest.skip(
                "triton was imported before TRITON_INTERPRET=1 could be set: run this file alone"
            )
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        register_backend("triton", _triton)
        module = importlib.import_module("lstm.kernels.triton")
        if module.interpreted() != (not CUDA):  # imported earlier in the other mode: anew
            module = importlib.reload(module)
        yield module
    finally:
        if saved is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = saved
        register_backend("triton", _triton)


@pytest.fixture
def tune(K, monkeypatch):
    """Sets the kernels' tiles and design for one test: ``tune(block_h=16, design=...)``."""

    def set_config(**changes):
        monkeypatch.setattr(K, "config", dataclasses.replace(K.config, **changes))

    return set_config


# --------------------------------------------------------------------------------------------
# Helpers: random problems, both runs, the errors
# --------------------------------------------------------------------------------------------


def _random(seed: int, shapes: dict[str, tuple[int, ...] | None]) -> dict[str, torch.Tensor | None]:
    """float64 tensors, weights scaled like torch's init (so the gates do not saturate)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        if shape is None:
            out[name] = None
            continue
        scale = shape[-1] ** -0.5 if name.startswith("weight") else 1.0
        out[name] = torch.randn(*shape, generator=g, dtype=torch.float64) * scale
    return out


def _mask(seed: int, T: int, B: int, ragged: bool) -> torch.Tensor | None:
    if not ragged:
        return None
    g = torch.Generator().manual_seed(seed + 7)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    lengths[-1] = 1  # the shortest possible row: T-1 padding steps carry its state
    return (torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0)).unsqueeze(-1).to(DEVICE)


def _errors(ours: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """``(max error, norm error)`` of ``ours`` against ``ref`` (see the module docstring)."""
    ref = ref.double()
    diff = ours.double() - ref
    max_error = diff.abs().max().item() / max(1.0, ref.abs().max().item())
    return max_error, diff.norm().item() / max(ref.norm().item(), 1e-30)


def _compare(fn_ours, fn_ref, inputs, extra, dtype, grad_outputs, seed):
    """Runs ``fn(**inputs, **extra)`` both ways (ours in ``dtype`` on DEVICE, the reference in
    float64 on the same rounded values), back-propagates the same random gradients into the
    outputs named by ``grad_outputs`` (indices), returns ``(forward errors, gradient errors)``,
    each a dict of name -> :func:`_errors`."""
    ours_in = {
        k: None if v is None else v.to(DEVICE, dtype).requires_grad_() for k, v in inputs.items()
    }
    ref_in = {
        k: None if v is None else v.detach().double().requires_grad_() for k, v in ours_in.items()
    }
    out, ref = fn_ours(**ours_in, **extra), fn_ref(**ref_in, **extra)
    out, ref = (out, ref) if isinstance(out, tuple) else ((out,), (ref,))
    forward = {f"output {i}": _errors(o, r) for i, (o, r) in enumerate(zip(out, ref))}
    g = torch.Generator().manual_seed(seed + 11)
    grads = [torch.randn(out[i].shape, generator=g, dtype=torch.float64) for i in grad_outputs]
    torch.autograd.backward([out[i] for i in grad_outputs], [gr.to(DEVICE, dtype) for gr in grads])
    rounded = [gr.to(dtype).double().to(DEVICE) for gr in grads]
    torch.autograd.backward([ref[i] for i in grad_outputs], rounded)
    names = [k for k, v in ours_in.items() if v is not None]
    gradient = {f"d{k}": _errors(ours_in[k].grad, ref_in[k].grad) for k in names}
    return forward, gradient


def _assert_within(forward, gradient, dtype):
    """Every ``(max error, norm error)`` of ``forward`` and ``gradient`` under ``BARS[dtype]``."""
    max_bar, norm_bar = BARS[dtype]
    for name, (max_error, norm_error) in {**forward, **gradient}.items():
        assert max_error < max_bar, f"{name}: max error {max_error:.2e} over {max_bar}"
        assert norm_error < norm_bar, f"{name}: norm error {norm_error:.2e} over {norm_bar}"


def _lstm_case(seed, T, B, I, H, P, bias, ragged):
    inputs = _random(seed, dict(
        x=(T, B, I), h0=(B, P), c0=(B, H), weight_ih=(4 * H, I), weight_hh=(4 * H, P),
        bias=(4 * H,) if bias else None, weight_hr=(P, H) if P != H else None,
    ))  # fmt: skip
    return inputs, dict(mask=_mask(seed, T, B, ragged))


# --------------------------------------------------------------------------------------------
# LSTM, GRU and RNN sequence functions against the reference loops
# --------------------------------------------------------------------------------------------

# (dtype, design, H, P, bias, ragged, small tiles, outputs that get a gradient)
LSTM_CASES = {
    "f32-step-small-tiles": (torch.float32, "per_step", 20, 20, True, False, True, (0, 1, 2)),
    "f32-step-ragged-nobias": (torch.float32, "per_step", 32, 32, False, True, False, (0, 1, 2)),
    "f32-step-ragged-h-only": (torch.float32, "per_step", 20, 20, True, True, True, (0,)),
    "f32-persistent-ragged": (torch.float32, "persistent", 20, 20, True, True, False, (0, 1, 2)),
    "f32-projection-ragged": (torch.float32, "auto", 20, 12, True, True, True, (0, 1, 2)),
    "bf16-step-ragged": (torch.bfloat16, "per_step", 24, 24, True, True, True, (0, 1, 2)),
    "bf16-persistent": (torch.bfloat16, "persistent", 24, 24, True, False, False, (0, 2)),
    "bf16-projection": (torch.bfloat16, "auto", 16, 8, False, True, False, (0, 1)),
}


@pytest.mark.parametrize("case", list(LSTM_CASES))
def test_lstm_matches_reference(K, tune, case):
    dtype, design, H, P, bias, ragged, small_tiles, grad_outputs = LSTM_CASES[case]
    tune(design=design, **(dict(block_h=16, block_k=16) if small_tiles else {}))
    inputs, extra = _lstm_case(seed=len(case), T=6, B=3, I=5, H=H, P=P, bias=bias, ragged=ragged)
    forward, gradient = _compare(K.lstm, reference.lstm_loop, inputs, extra, dtype,
                                 grad_outputs, seed=1)  # fmt: skip
    _assert_within(forward, gradient, dtype)


def test_lstm_designs_choose_as_documented(K, tune):
    assert K.choose_design(B=8, H=64, projected=False) == "persistent"
    assert K.choose_design(B=8, H=128, projected=False) == "per_step"
    assert K.choose_design(B=8, H=32, projected=True) == "per_step"
    assert K.choose_design(B=512, H=32, projected=False) == "per_step"
    tune(design="persistent")
    assert K.choose_design(B=512, H=32, projected=False) == "persistent"
    assert K.choose_design(B=8, H=512, projected=False) == "per_step"  # cannot hold W_hh


GRU_CASES = {
    "f32-small-tiles": (torch.float32, 20, True, False, True, (0, 1)),
    "f32-ragged-nobias": (torch.float32, 32, False, True, False, (0, 1)),
    "f32-ragged-h-only": (torch.float32, 20, True, True, True, (0,)),
    "bf16-ragged": (torch.bfloat16, 24, True, True, True, (0, 1)),
}


@pytest.mark.parametrize("case", list(GRU_CASES))
def test_gru_matches_reference(K, tune, case):
    dtype, H, bias, ragged, small_tiles, grad_outputs = GRU_CASES[case]
    if small_tiles:
        tune(block_h=16, block_k=16)
    T, B, I = 6, 3, 5
    inputs = _random(len(case), dict(
        x=(T, B, I), h0=(B, H), weight_ih=(3 * H, I), weight_hh=(3 * H, H),
        bias_ih=(3 * H,) if bias else None, bias_hh=(3 * H,) if bias else None,
    ))  # fmt: skip
    extra = dict(mask=_mask(len(case), T, B, ragged))
    forward, gradient = _compare(K.gru, reference.gru_loop, inputs, extra, dtype,
                                 grad_outputs, seed=2)  # fmt: skip
    _assert_within(forward, gradient, dtype)


RNN_CASES = {
    "f32-tanh-small-tiles": (torch.float32, "tanh", 20, True, False, True),
    "f32-relu-ragged-nobias": (torch.float32, "relu", 32, False, True, False),
    "bf16-tanh-ragged": (torch.bfloat16, "tanh", 24, True, True, True),
}


@pytest.mark.parametrize("case", list(RNN_CASES))
def test_rnn_matches_reference(K, tune, case):
    dtype, nonlinearity, H, bias, ragged, small_tiles = RNN_CASES[case]
    if small_tiles:
        tune(block_h=16, block_k=16)
    T, B, I = 6, 3, 5
    inputs = _random(len(case), dict(
        x=(T, B, I), h0=(B, H), weight_ih=(H, I), weight_hh=(H, H), bias=(H,) if bias else None,
    ))  # fmt: skip
    extra = dict(mask=_mask(len(case), T, B, ragged), nonlinearity=nonlinearity)
    forward, gradient = _compare(K.rnn, reference.rnn_loop, inputs, extra, dtype, (0,), seed=3)
    _assert_within(forward, gradient, dtype)


# --------------------------------------------------------------------------------------------
# The layers with backend="triton" against torch.nn, and the registry
# --------------------------------------------------------------------------------------------


def _layer_parity(ours_cls, torch_cls, T, B, I, packed, **kwargs):
    torch.manual_seed(0)
    theirs = torch_cls(I, device=DEVICE, **kwargs)
    ours = ours_cls.from_torch(theirs, backend="triton")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, I, generator=g).to(DEVICE)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T

    def run(module):
        inp = x.clone().requires_grad_()
        feed = pack_padded_sequence(inp, lengths, enforce_sorted=False) if packed else inp
        out, hidden = module(feed)
        out = pad_packed_sequence(out)[0] if packed else out
        hidden = hidden if isinstance(hidden, tuple) else (hidden,)
        loss = (out * torch.linspace(-1, 1, out.numel(), device=DEVICE).view_as(out)).sum()
        loss = loss + sum((h * h).sum() for h in hidden)
        loss.backward()
        return [out, *hidden], [inp.grad] + [p.grad for p in module.parameters()]

    (ours_out, ours_grads), (ref_out, ref_grads) = run(ours), run(theirs)
    forward = max((a - b).abs().max().item() for a, b in zip(ours_out, ref_out))
    assert forward < 1e-5, f"outputs differ from torch.nn by {forward:.2e}"
    assert grad_error(ours_grads, ref_grads) < 1e-5
    assert "backend=triton" in repr(ours)


def test_lstm_layer_matches_torch_bidirectional_two_layers_packed():
    _layer_parity(lstm.LSTM, nn.LSTM, T=5, B=3, I=4, packed=True, hidden_size=16,
                  num_layers=2, bidirectional=True)  # fmt: skip


def test_lstm_layer_with_projection_matches_torch():
    _layer_parity(lstm.LSTM, nn.LSTM, T=4, B=2, I=3, packed=True, hidden_size=16, proj_size=8)


def test_gru_and_rnn_layers_match_torch():
    _layer_parity(lstm.GRU, nn.GRU, T=4, B=2, I=3, packed=False, hidden_size=16)
    _layer_parity(lstm.RNN, nn.RNN, T=4, B=2, I=3, packed=True, hidden_size=16,
                  nonlinearity="relu")  # fmt: skip


def test_registry_picks_triton_only_when_it_should(K):
    assert get_backend("triton", DEVICE, torch.float32).name == "triton"
    assert get_backend("triton", DEVICE, torch.bfloat16).name == "triton"
    if not CUDA:  # the interpreter runs when asked, but auto never picks it on a CPU
        assert get_backend("auto", torch.device("cpu"), torch.float32).name != "triton"
    else:
        assert get_backend("auto", DEVICE, torch.float32).name == "triton"
    with pytest.raises(RuntimeError, match="does not support"):
        get_backend("triton", DEVICE, torch.float64)
    x = torch.zeros(2, 1, 3, device=DEVICE)
    with pytest.raises(ValueError, match="nonlinearity should be 'tanh' or 'relu', got 'gelu'"):
        K.rnn(x, x[0, :, :2], x.new_zeros(2, 3), x.new_zeros(2, 2), None, None, "gelu")


def test_empty_batch_gives_empty_outputs(K):
    x = torch.zeros(3, 0, 4, device=DEVICE)
    h_all, c_all, gates = K.lstm(x, x.new_zeros(0, 5), x.new_zeros(0, 5),
                                 x.new_zeros(20, 4), x.new_zeros(20, 5), None)  # fmt: skip
    assert h_all.shape == (3, 0, 5) and c_all.shape == (3, 0, 5) and gates.shape == (3, 0, 20)


# --------------------------------------------------------------------------------------------
# Full size, on a GPU only
# --------------------------------------------------------------------------------------------


@gpu_full_size
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cell", ["lstm", "lstm-persistent", "gru", "rnn"])
def test_full_size_on_gpu(K, tune, cell, dtype):
    """T = 1000 against the float64 reference: the issue's bars, float32 < 1e-5 relative error
    and bfloat16 < 1e-2, forward and every gradient."""
    T, B, I, H = 1000, 16, 64, 64 if cell == "lstm-persistent" else 256
    tune(design="persistent" if cell == "lstm-persistent" else "per_step")
    if cell.startswith("lstm"):
        inputs, extra = _lstm_case(seed=5, T=T, B=B, I=I, H=H, P=H, bias=True, ragged=True)
        fns, outs = (K.lstm, reference.lstm_loop), (0, 1, 2)
    elif cell == "gru":
        inputs = _random(6, dict(x=(T, B, I), h0=(B, H), weight_ih=(3 * H, I),
                                 weight_hh=(3 * H, H), bias_ih=(3 * H,), bias_hh=(3 * H,)))  # fmt: skip
        extra, fns, outs = dict(mask=_mask(6, T, B, True)), (K.gru, reference.gru_loop), (0, 1)
    else:
        inputs = _random(7, dict(x=(T, B, I), h0=(B, H), weight_ih=(H, I), weight_hh=(H, H),
                                 bias=(H,)))  # fmt: skip
        extra, fns, outs = dict(mask=_mask(7, T, B, True)), (K.rnn, reference.rnn_loop), (0,)
    forward, gradient = _compare(*fns, inputs, extra, dtype, outs, seed=4)
    _assert_within(forward, gradient, dtype)
