"""lstm.Streamer: one step at a time equals the whole sequence at once, on the kernels and on the
reference fallback; state, reset and errors."""

from __future__ import annotations

import pytest
import torch

import lstm
from lstm.kernels import cpu

F64 = torch.float64


def _modules():
    torch.manual_seed(0)
    return [
        torch.nn.LSTM(6, 9, num_layers=2, dtype=F64),
        torch.nn.LSTM(6, 9, num_layers=2, proj_size=4, dtype=F64),
        lstm.LSTM(6, 9, bias=False, dtype=F64),
        torch.nn.GRU(6, 9, num_layers=3, dtype=F64),
        torch.nn.RNN(6, 9, num_layers=2, nonlinearity="relu", dtype=F64),
        torch.nn.RNN(6, 9, dtype=F64),
    ]


def _check_matches_sequence(module, batch):
    stream = lstm.Streamer(module, batch_size=batch)
    x = torch.randn(12, batch, 6, dtype=F64)
    ys = torch.stack([stream.step(x_t) for x_t in x])  # (T, B, out)
    with torch.no_grad():
        ref, state = module(x)
    torch.testing.assert_close(ys, ref, rtol=0, atol=1e-12)
    got = stream.state if isinstance(stream.state, tuple) else (stream.state,)
    want = state if isinstance(state, tuple) else (state,)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-12)
    return stream


@pytest.mark.parametrize("batch", [1, 3, 7])
def test_steps_equal_the_whole_sequence(batch):
    for module in _modules():
        stream = _check_matches_sequence(module, batch)
        assert stream.backend == ("cpu" if cpu.load_extension() is not None else "reference")


def test_reference_fallback_equals_the_whole_sequence(monkeypatch):
    monkeypatch.setattr(cpu, "load_extension", lambda: None)
    for module in _modules():
        assert _check_matches_sequence(module, 2).backend == "reference"


@pytest.mark.parametrize("use_kernels", [True, False])
def test_unbatched_steps_state_and_reset(monkeypatch, use_kernels):
    if not use_kernels:
        monkeypatch.setattr(cpu, "load_extension", lambda: None)
    torch.manual_seed(1)
    module = torch.nn.LSTM(4, 5, num_layers=2, dtype=F64)
    h0, c0 = torch.randn(2, 1, 5, dtype=F64), torch.randn(2, 1, 5, dtype=F64)
    stream = lstm.Streamer(module, state=(h0, c0))
    x = torch.randn(6, 4, dtype=F64)
    ys = torch.stack([stream.step(x_t) for x_t in x])  # unbatched: (T, out)
    assert ys.shape == (6, 5)
    with torch.no_grad():
        ref, _ = module(x, (h0[:, 0], c0[:, 0]))
    torch.testing.assert_close(ys, ref, rtol=0, atol=1e-12)
    stream.reset()
    assert stream.state[0].abs().max() == 0 and stream.state[1].abs().max() == 0
    first = stream.step(x[0])
    with torch.no_grad():
        torch.testing.assert_close(first, module(x[:1])[0][0], rtol=0, atol=1e-12)


def test_float32_streaming_matches_torch():
    torch.manual_seed(2)
    module = torch.nn.LSTM(64, 64)
    stream = lstm.Streamer(module)
    x = torch.randn(200, 1, 64)
    ys = torch.stack([stream.step(x_t) for x_t in x])
    with torch.no_grad():
        ref, _ = module(x)
    torch.testing.assert_close(ys, ref, rtol=0, atol=1e-5)


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="bidirectional"):
        lstm.Streamer(torch.nn.LSTM(3, 4, bidirectional=True))
    with pytest.raises(ValueError, match="batch_size should be a positive int, got 0"):
        lstm.Streamer(torch.nn.LSTM(3, 4), batch_size=0)
    with pytest.raises(TypeError, match="got Linear"):
        lstm.Streamer(torch.nn.Linear(3, 4))
    stream = lstm.Streamer(torch.nn.LSTM(3, 4), batch_size=2)
    with pytest.raises(ValueError, match=r"x should .*shape \(2, 3\)"):
        stream.step(torch.randn(2, 5))
    with pytest.raises(ValueError, match="state h should have shape"):
        stream.reset((torch.zeros(1, 1, 4), torch.zeros(1, 1, 4)))
