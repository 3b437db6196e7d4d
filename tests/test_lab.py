"""lstm lab and lstm viz: the models, online data, the paper's criterion, a short run that must
learn, and the commands end to end on tiny settings."""

from __future__ import annotations

import json

import pytest
import torch

from lstm.cli import main
from lstm.data import tasks
from lstm.tasks.lab import LAB_TASKS, OnlineSequences, SequenceModel, evaluate_lab, train_lab


def test_chrono_initialization_gives_each_cell_a_time_scale_up_to_t_max():
    """b_f = log(u), u ~ U(1, T_max - 1), and b_i = -b_f, in every layer; b_hh adds nothing."""
    torch.manual_seed(0)
    m = SequenceModel("lstm", 2, 500, 1, per_step=False, num_layers=2, chrono=1000)
    for layer in (0, 1):
        b_ih, b_hh = getattr(m.rnn, f"bias_ih_l{layer}"), getattr(m.rnn, f"bias_hh_l{layer}")
        b_i, b_f = b_ih[:500], b_ih[500:1000]
        assert torch.equal(b_i, -b_f) and torch.all(b_hh[:1000] == 0)
        u = b_f.exp()  # uniform on [1, 999]: its mean and spread
        assert u.min() >= 1 and u.max() <= 999
        assert abs(u.mean().item() - 500) < 40 and abs(u.std().item() - 998 / 12**0.5) < 30
    with pytest.raises(
        ValueError, match="chrono should be the longest dependency, at least 3, got 2"
    ):
        SequenceModel("lstm", 2, 6, 1, per_step=False, chrono=2)


def test_sequence_model_shapes_and_forget_bias():
    m = SequenceModel("lstm", 2, 6, 1, per_step=False, forget_bias=2.5)
    assert torch.all(m.rnn.bias_ih_l0[6:12] == 2.5) and torch.all(m.rnn.bias_hh_l0[6:12] == 0)
    assert torch.all(m.rnn.bias_ih_l0[:6] != 2.5)
    x = torch.randn(3, 7, 2)
    lengths = torch.tensor([7, 4, 5])
    assert m(x, lengths).shape == (3, 1)
    # the final read-out is the state after each sequence's own last step
    alone = m(x[1:2, :4], torch.tensor([4]))
    assert torch.allclose(m(x, lengths)[1], alone[0], atol=1e-6)
    per_step = SequenceModel("gru", 2, 6, 3, per_step=True)
    assert per_step(x, lengths).shape == (3, 7, 3)
    with pytest.raises(ValueError, match="forget_bias and chrono apply to the LSTM only"):
        SequenceModel("rnn", 2, 6, 1, per_step=False, forget_bias=1.0)
    with pytest.raises(ValueError, match="cell should be one of lstm, gru, rnn, got 'tcn'"):
        SequenceModel("tcn", 2, 6, 1, per_step=False)


def test_online_sequences_are_fresh_per_epoch_and_repeatable():
    task = LAB_TASKS["adding"](20)
    data = OnlineSequences(task, 4, steps_per_epoch=3, seed=1)
    first = [b.inputs for b in data]
    again = [b.inputs for b in data]
    data.set_epoch(1)
    other = [b.inputs for b in data]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])


def test_evaluate_lab_applies_the_papers_criterion():
    task = LAB_TASKS["adding"](20)
    test = task.make(64, torch.Generator().manual_seed(0))

    class Oracle(torch.nn.Module):  # outputs the target, off by 0.05 on the first 10 sequences
        def forward(self, x, lengths):
            out = test.targets.clone()
            out[:10] += 0.05
            return out.unsqueeze(-1)

    result = evaluate_lab(Oracle(), task, test)
    assert result["wrong"] == 10 and result["accuracy"] == pytest.approx(54 / 64)
    assert result["wrong"] == tasks.adding_wrong(Oracle()(None, None).squeeze(-1), test.targets)


def test_short_adding_run_learns():
    """T = 11: a small LSTM gets most of the 2,560 test sequences within |err| < 0.04 in 200
    updates (measured: 322 wrong). Predicting the mean leaves ~84% (~2,150) wrong, since
    |X1 + X2| / 4 < 0.04 has probability ~0.16."""
    r, model = train_lab("adding", cell="lstm", length=11, hidden_size=16, batch_size=64,
                         steps=200, lr=1e-2, eval_every=200, progress=False)  # fmt: skip
    assert r.wrong < 1000, r
    assert r.sequences_seen == r.config["batch_size"] * (r.sequences_seen // 64)
    assert isinstance(model, SequenceModel)


def test_lab_command_end_to_end(tmp_path, capsys):
    status = main(["lab", "temporal-order-6a", "--steps", "3", "--eval-every", "3",
                   "--hidden", "8", "--out", str(tmp_path)])  # fmt: skip
    assert status == 0
    line = capsys.readouterr().out
    assert "wrong of 2,560 test sequences" in line and "Paper: 1 wrong of 2,560" in line
    saved = json.loads((tmp_path / "temporal-order-6a-lstm-seed0" / "lab.json").read_text())
    assert saved["test_sequences"] == 2560 and saved["sequences_seen"] == 3 * 16  # batch 16


def test_lab_command_rejects_unknown_task(capsys):
    assert main(["lab", "addition"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'addition'" in err


def test_viz_gradients_writes_plot_and_numbers(tmp_path, capsys):
    status = main(["viz", "gradients", "--length", "11", "--hidden", "8", "--train-steps", "2",
                   "--out", str(tmp_path)])  # fmt: skip
    assert status == 0
    report = json.loads((tmp_path / "gradients.json").read_text())
    assert set(report["cells"]) == {"lstm", "gru", "rnn"}
    lstm_runs = report["cells"]["lstm"]
    trained = next(k for k in lstm_runs if k != "untrained")
    assert len(lstm_runs) == 2 and "untrained" in lstm_runs
    assert trained.startswith("trained 2 steps, ") and trained.endswith(" wrong of 2,560")
    assert len(lstm_runs["untrained"]["hidden"]) == 12 and "cell" in lstm_runs["untrained"]
    assert "cell" not in report["cells"]["rnn"]["untrained"]
    assert (tmp_path / "gradients.png").stat().st_size > 10_000
    assert "at lag 11" in capsys.readouterr().out


def test_viz_gates_on_a_tiny_language_model(tmp_path, capsys):
    text = 'He said "yes" (and then (more)) to her.\n' * 40
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text)
    run = tmp_path / "run"
    assert main(["train", "lm", "--text", str(corpus), "--steps", "3", "--hidden", "16",
                 "--embed", "8", "--batch", "4", "--seq-len", "16", "--samples", "0",
                 "--out", str(run)]) == 0  # fmt: skip
    out = tmp_path / "gates"
    assert main(["viz", "gates", str(run), "--prompt", text[:200], "--out", str(out)]) == 0
    page = (out / "gates.html").read_text()
    assert page.count('class="c"') >= 200 and "forget gate" in page and "tracks" in page
    assert (out / "gates.png").stat().st_size > 10_000
    report = json.loads((out / "gates.json").read_text())
    assert len(report["cells"]) == 5 and all(-1 <= c["correlation"] <= 1 for c in report["cells"])
    capsys.readouterr()
    assert main(["viz", "gates", str(run), "--prompt", "hi", "--layer", "3"]) == 2
    assert "layer should be in 0..0, got 3" in capsys.readouterr().err


def test_gradient_norms_do_not_underflow_over_a_hundred_steps(tmp_path):
    """Regression: in float32 a plain RNN's dL/dh_t fell below 1e-45 about 40-100 steps back and
    was plotted as a cliff at zero; the report now works in float64, where it stays positive."""
    from lstm.tasks.inside import gradient_report

    report = gradient_report("adding", length=100, hidden_size=8, train_steps=1, cells=("rnn",),
                             out_dir=tmp_path)  # fmt: skip
    for entry in report["cells"]["rnn"].values():
        norms = torch.tensor(entry["hidden"], dtype=torch.float64)
        assert len(norms) == 110 and bool((norms > 0).all()), norms[:5]
        assert norms[0] < 1e-10 * norms[-1]  # and it has vanished by many orders of magnitude
