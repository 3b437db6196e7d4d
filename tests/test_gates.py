"""return_gates: the traced gates, cell and hidden states against the reference cell equations,
step by step and sequence by sequence, for every layout."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import lstm
from lstm import cells

F64 = torch.float64


def _manual_lstm(x, w_ih, w_hh, b):
    """x (T, I) one sequence -> per step (i, f, g, o, c, h) via lstm_pointwise."""
    H = w_hh.shape[1]
    h, c = torch.zeros(H, dtype=F64), torch.zeros(H, dtype=F64)
    out = []
    for t in range(x.shape[0]):
        h, c, gates = cells.lstm_pointwise(x[t] @ w_ih.T + h @ w_hh.T + b, c)
        out.append((*gates.chunk(4), c, h))
    return [torch.stack(z) for z in zip(*out)]


def _manual_gru(x, w_ih, w_hh, b_ih, b_hh):
    h = torch.zeros(w_hh.shape[1], dtype=F64)
    out = []
    for t in range(x.shape[0]):
        h, gates = cells.gru_pointwise(x[t] @ w_ih.T + b_ih, h @ w_hh.T + b_hh, h)
        out.append((*gates.chunk(3), h))
    return [torch.stack(z) for z in zip(*out)]


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("packed", [False, True])
def test_lstm_traces_match_the_reference_cell(batch_first, packed):
    torch.manual_seed(0)
    m = lstm.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=batch_first, dtype=F64)
    T, B = 6, 3
    lengths = torch.tensor([4, 6, 2]) if packed else torch.full((B,), T)
    x = torch.randn(B, T, 3, dtype=F64)
    inp = x if batch_first else x.transpose(0, 1)
    if packed:
        inp = pack_padded_sequence(inp, lengths, batch_first=batch_first, enforce_sorted=False)
    _, _, traces = m(inp, return_gates=True)
    assert [(t.layer, t.direction) for t in traces] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for d, suffix in enumerate(["", "_reverse"]):
        w_ih, w_hh = getattr(m, "weight_ih_l0" + suffix), getattr(m, "weight_hh_l0" + suffix)
        b = getattr(m, "bias_ih_l0" + suffix) + getattr(m, "bias_hh_l0" + suffix)
        tr = traces[d]
        for row in range(B):
            L = int(lengths[row])
            seq = x[row, :L] if d == 0 else x[row, :L].flip(0)
            want = _manual_lstm(seq, w_ih, w_hh, b)
            if d == 1:
                want = [w.flip(0) for w in want]
            got = [tr.gates[n] for n in ("input", "forget", "candidate", "output")]
            got += [tr.cell, tr.hidden]
            for g, w in zip(got, want):
                g = g[row, :L] if batch_first else g[:L, row]
                assert (g - w).abs().max() < 1e-12


def test_gru_traces_match_the_reference_cell_and_rnn_has_no_gates():
    torch.manual_seed(1)
    m = lstm.GRU(3, 4, dtype=F64)
    x = torch.randn(5, 3, dtype=F64)  # unbatched
    _, _, (tr,) = m(x, return_gates=True)
    want = _manual_gru(x, m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0)
    got = [tr.gates[n] for n in ("reset", "update", "candidate")] + [tr.hidden]
    for g, w in zip(got, want):
        assert (g - w).abs().max() < 1e-12
    assert tr.cell is None
    _, _, (rnn_trace,) = lstm.RNN(3, 4)(torch.randn(5, 3), return_gates=True)
    assert rnn_trace.gates == {} and rnn_trace.hidden.shape == (5, 4)


def test_last_layer_hidden_trace_is_the_output():
    m = lstm.LSTM(3, 4, num_layers=2, proj_size=2)
    y, _, traces = m(torch.randn(7, 2, 3), return_gates=True)
    assert torch.equal(traces[-1].hidden, y)
    assert traces[-1].cell.shape == (7, 2, 4)  # the cell keeps the full hidden size


def test_default_call_is_unchanged():
    m = lstm.LSTM(3, 4)
    x = torch.randn(5, 2, 3)
    y, (h, c) = m(x)
    y2, (h2, c2), _ = m(x, return_gates=True)
    assert torch.equal(y, y2) and torch.equal(h, h2) and torch.equal(c, c2)
