"""The equations of lstm.cells against torch's own cells, and against the concatenated form."""

from __future__ import annotations

import pytest
import torch

from lstm import cells

F64 = torch.float64


def _rand(*shape):
    return torch.randn(*shape, dtype=F64)


@pytest.mark.parametrize("bias", [True, False])
def test_lstm_cell_matches_torch(bias):
    torch.manual_seed(0)
    ref = torch.nn.LSTMCell(5, 4, bias=bias, dtype=F64)
    x, h, c = _rand(3, 5), _rand(3, 4), _rand(3, 4)
    want = ref(x, (h, c))
    got = cells.lstm_cell(x, (h, c), ref.weight_ih, ref.weight_hh, ref.bias_ih, ref.bias_hh)
    assert (got[0] - want[0]).abs().max() < 1e-12
    assert (got[1] - want[1]).abs().max() < 1e-12


def test_lstm_cell_is_the_concatenated_form():
    """f_t = σ(W_f·[h_{t-1}, x_t] + b_f) etc., with W_f = [W_hf | W_if] and b_f = b_if + b_hf."""
    torch.manual_seed(1)
    H, I, B = 3, 2, 4
    w_ih, w_hh, b_ih, b_hh = _rand(4 * H, I), _rand(4 * H, H), _rand(4 * H), _rand(4 * H)
    x, h, c = _rand(B, I), _rand(B, H), _rand(B, H)
    W = torch.cat([w_hh, w_ih], dim=1)  # acts on [h_{t-1}, x_t]
    b = b_ih + b_hh
    hx = torch.cat([h, x], dim=1)
    W_i, W_f, W_C, W_o = W.chunk(4)
    b_i, b_f, b_C, b_o = b.chunk(4)
    f_t = torch.sigmoid(hx @ W_f.T + b_f)
    i_t = torch.sigmoid(hx @ W_i.T + b_i)
    C_tilde = torch.tanh(hx @ W_C.T + b_C)
    C_t = f_t * c + i_t * C_tilde
    o_t = torch.sigmoid(hx @ W_o.T + b_o)
    h_t = o_t * torch.tanh(C_t)
    got_h, got_c = cells.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)
    assert (got_h - h_t).abs().max() < 1e-14
    assert (got_c - C_t).abs().max() < 1e-14


def test_lstm_cell_projection_matches_torch_lstm():
    torch.manual_seed(2)
    ref = torch.nn.LSTM(3, 5, proj_size=2, dtype=F64)
    x = _rand(1, 4, 3)
    h0, c0 = _rand(1, 4, 2), _rand(1, 4, 5)
    _, (h_n, c_n) = ref(x, (h0, c0))
    h, c = cells.lstm_cell(
        x[0], (h0[0], c0[0]), ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0,
        ref.bias_hh_l0, ref.weight_hr_l0,
    )  # fmt: skip
    assert (h - h_n[0]).abs().max() < 1e-12
    assert (c - c_n[0]).abs().max() < 1e-12


@pytest.mark.parametrize("bias", [True, False])
def test_gru_cell_matches_torch(bias):
    torch.manual_seed(3)
    ref = torch.nn.GRUCell(5, 4, bias=bias, dtype=F64)
    x, h = _rand(3, 5), _rand(3, 4)
    got = cells.gru_cell(x, h, ref.weight_ih, ref.weight_hh, ref.bias_ih, ref.bias_hh)
    assert (got - ref(x, h)).abs().max() < 1e-12


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_cell_matches_torch(nonlinearity):
    torch.manual_seed(4)
    ref = torch.nn.RNNCell(5, 4, nonlinearity=nonlinearity, dtype=F64)
    x, h = _rand(3, 5), _rand(3, 4)
    got = cells.rnn_cell(x, h, ref.weight_ih, ref.weight_hh, ref.bias_ih, ref.bias_hh, nonlinearity)
    assert (got - ref(x, h)).abs().max() < 1e-12


def test_rnn_activation_rejects_unknown_nonlinearity():
    with pytest.raises(ValueError, match="Unknown nonlinearity 'gelu'"):
        cells.rnn_activation(torch.zeros(1), "gelu")


def test_lstm_pointwise_gate_values():
    """Known values: zero pre-activations give gates of 0.5 and a candidate of 0."""
    h, c, gates = cells.lstm_pointwise(torch.zeros(1, 8, dtype=F64), torch.ones(1, 2, dtype=F64))
    i, f, g, o = gates.chunk(4, dim=-1)
    assert torch.all(i == 0.5) and torch.all(f == 0.5) and torch.all(g == 0) and torch.all(o == 0.5)
    assert torch.allclose(c, torch.full((1, 2), 0.5, dtype=F64))  # f·C = 0.5·1, i·g = 0
    assert torch.allclose(h, 0.5 * torch.tanh(torch.tensor(0.5, dtype=F64)))
