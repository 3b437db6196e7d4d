"""Gradient-flow extraction: the hand-written BPTT's recorded state gradients against autograd
(probes), for every cell; and the vanishing-gradient effect they exist to show."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lstm
from lstm.introspect import gradient_flow, state_gradients

F64 = torch.float64


@pytest.mark.parametrize(
    "make",
    [
        lambda: lstm.LSTM(3, 5, dtype=F64),
        lambda: lstm.LSTM(3, 5, proj_size=2, dtype=F64),
        lambda: lstm.LSTM(3, 5, bias=False, batch_first=True, dtype=F64),
        lambda: lstm.GRU(3, 5, dtype=F64),
        lambda: lstm.RNN(3, 5, dtype=F64),
        lambda: lstm.RNN(3, 5, nonlinearity="relu", dtype=F64),
        lambda: nn.LSTM(3, 5, dtype=F64),  # torch.nn layers work too
    ],
)
def test_bptt_trace_matches_autograd_probes(make):
    torch.manual_seed(0)
    layer = make()
    T, B = 9, 2
    x = torch.randn(*((B, T, 3) if layer.batch_first else (T, B, 3)), dtype=F64)
    out_size = layer.proj_size or layer.hidden_size
    grad_y = torch.randn(*((B, T, out_size) if layer.batch_first else (T, B, out_size)), dtype=F64)
    a = state_gradients(layer, x, grad_y, method="bptt")
    b = state_gradients(layer, x, grad_y, method="autograd")
    assert a.hidden.shape == (T, B, out_size)
    assert (a.hidden - b.hidden).abs().max() < 1e-12
    if layer.mode == "LSTM":
        assert a.cell.shape == (T, B, 5) and (a.cell - b.cell).abs().max() < 1e-12
    else:
        assert a.cell is None and b.cell is None


def test_last_state_gradient_is_the_output_gradient():
    """Nothing comes back from beyond the last step: dL/dh_T is exactly dL/dy_T."""
    layer = lstm.GRU(2, 4, dtype=F64)
    x, g = torch.randn(6, 3, 2, dtype=F64), torch.randn(6, 3, 4, dtype=F64)
    assert torch.equal(state_gradients(layer, x, g).hidden[-1], g[-1])


def test_gradient_flow_through_a_model_and_vanishing_in_the_rnn():
    """A loss at the last step only: the RNN's dL/dh_t decays with the lag far faster than the
    LSTM's dL/dC_t with a forget-gate bias of 3 (sigmoid(3) ~ 0.95 per step)."""
    torch.manual_seed(2)

    class Net(nn.Module):
        def __init__(self, rnn):
            super().__init__()
            self.rnn, self.head = rnn, nn.Linear(8, 1, dtype=F64)

        def forward(self, x):
            return self.head(self.rnn(x)[0][-1])

    x = torch.randn(60, 4, 1, dtype=F64)
    rnn = Net(lstm.RNN(1, 8, dtype=F64))
    cell = Net(lstm.LSTM(1, 8, dtype=F64))
    with torch.no_grad():
        cell.rnn.bias_ih_l0[8:16] = 3.0  # forget gate block (i, f, g, o)
    loss = lambda out: out.sum()  # noqa: E731
    g_rnn = gradient_flow(rnn, rnn.rnn, x, loss).norms()["hidden"]
    g_lstm = gradient_flow(cell, cell.rnn, x, loss).norms()["cell"]
    assert g_rnn.shape == (60,)
    decay_rnn = float(g_rnn[0] / g_rnn[-1])  # lag 59 over lag 0
    decay_lstm = float(g_lstm[0] / g_lstm[-1])
    assert decay_rnn < 1e-3  # vanished
    assert decay_lstm > 1e-2  # carried
    assert decay_lstm > 100 * decay_rnn


def test_state_gradients_rejects_stacked_or_bidirectional_layers():
    with pytest.raises(ValueError, match=r"single-layer, one-direction.*num_layers=2"):
        state_gradients(lstm.LSTM(2, 3, num_layers=2), torch.zeros(3, 1, 2), torch.zeros(3, 1, 3))
    with pytest.raises(ValueError, match="method should be 'bptt' or 'autograd'"):
        state_gradients(lstm.LSTM(2, 3), torch.zeros(3, 1, 2), torch.zeros(3, 1, 3), method="x")


def test_gradient_flow_counts_a_loss_on_the_final_states():
    """A model that reads h_n and C_n (not the output sequence): both methods agree, and the
    gradient at the last state is what the loss sends to h_n."""
    torch.manual_seed(3)

    class LastState(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = lstm.LSTM(2, 4, batch_first=True, dtype=F64)

        def forward(self, x):
            _, (h_n, c_n) = self.rnn(x)
            return (h_n[-1] * torch.arange(1.0, 5.0, dtype=F64)).sum() + c_n.pow(2).sum()

    net = LastState()
    x = torch.randn(3, 8, 2, dtype=F64)
    a = gradient_flow(net, net.rnn, x, lambda loss: loss, method="bptt")
    b = gradient_flow(net, net.rnn, x, lambda loss: loss, method="autograd")
    assert (a.hidden - b.hidden).abs().max() < 1e-12 and (a.cell - b.cell).abs().max() < 1e-12
    assert torch.allclose(a.hidden[-1], torch.arange(1.0, 5.0, dtype=F64).expand(3, 4))
    assert a.hidden[0].abs().sum() > 0 and a.cell[0].abs().sum() > 0  # reaches back to t = 0
