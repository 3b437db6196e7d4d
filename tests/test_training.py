"""The training engine: exact resume, clipping, truncated BPTT, schedules, early stopping, time
budget, and a short run whose loss must fall below a stated value."""

import math

import pytest
import torch
from torch import nn

from lstm.data.text import CharVocab, StreamBatches
from lstm.models.language_model import LMConfig, build_language_model, evaluate_stream, lm_loss
from lstm.training import TrainConfig, detach_state, fit, lr_factor, read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")


POEM = (
    "Shall I compare thee to a summer's day?\n"
    "Thou art more lovely and more temperate:\n"
    "Rough winds do shake the darling buds of May,\n"
    "And summer's lease hath all too short a date.\n"
)


def _lm(cell="lstm", dropout=0.0, hidden=16, backend="bptt", seed=0, dtype=torch.float32):
    vocab = CharVocab.build(POEM)
    torch.manual_seed(seed)
    model = build_language_model(
        LMConfig(
            len(vocab),
            cell,
            embed_size=8,
            hidden_size=hidden,
            dropout=dropout,
            backend=backend,
            num_heads=2,
            context=16,
        )
    ).to(dtype)
    return model, vocab, vocab.encode(POEM * 3)


class Interrupt(Exception):
    pass


def _interrupting(loss_fn, at_call):
    calls = [0]

    def wrapped(model, batch, state):
        calls[0] += 1
        if calls[0] == at_call:
            raise Interrupt
        return loss_fn(model, batch, state)

    return wrapped


def test_resume_continues_exactly_like_the_uninterrupted_run(tmp_path):
    # Dropout (RNG), carried state, an epoch boundary (batches per epoch: 13), warmup + cosine,
    # and evaluations in between: everything a resume must restore.
    config = dict(steps=26, lr=1e-2, warmup_steps=3, log_every=1, eval_every=4, progress=False)

    def run(out, **kw):
        model, _, ids = _lm(dropout=0.2)
        batches = StreamBatches(ids[:-100], 4, 8)
        assert len(batches) == 13
        eval_fn = lambda m: evaluate_stream(m, ids[-100:], 2, 16)  # noqa: E731
        loss_fn = kw.pop("loss_fn", lm_loss)
        result = fit(model, batches, loss_fn, TrainConfig(**config, **kw), eval_fn=eval_fn,
                     out_dir=out, resume=kw.get("resume", False))  # fmt: skip
        return model, result

    straight, _ = run(tmp_path / "a")
    with pytest.raises(Interrupt):  # a kill after step 20 (checkpointed at 10 and 20)
        run(tmp_path / "b", checkpoint_every=10, loss_fn=_interrupting(lm_loss, 22))
    resumed, result = run(tmp_path / "b", checkpoint_every=10)
    assert result.step == 26

    a, b = read_metrics(tmp_path / "a/metrics.jsonl"), read_metrics(tmp_path / "b/metrics.jsonl")
    keys = ("split", "step", "epoch", "loss", "lr", "grad_norm")
    assert [[m.get(k) for k in keys] for m in a] == [[m.get(k) for k in keys] for m in b]
    assert len([m for m in a if m["split"] == "train"]) == 26
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name  # bitwise


def test_clipping_scales_the_update_to_the_stated_norm():
    model, _, ids = _lm()
    reference = _lm()[0]
    batch = next(iter(StreamBatches(ids, 4, 8)))

    def loud_loss(m, b, s):  # large gradients
        loss, state, n = lm_loss(m, b, s)
        return loss * 1000, state, n

    loss, _, _ = loud_loss(reference, batch, None)
    loss.backward()
    grads = [p.grad.clone() for p in reference.parameters()]
    norm = torch.sqrt(sum(g.square().sum() for g in grads))
    assert norm > 10
    before = [p.detach().clone() for p in model.parameters()]
    config = TrainConfig(steps=1, optimizer="sgd", momentum=0.0, lr=1.0, schedule="constant",
                         clip_norm=0.5, log_every=1, progress=False)  # fmt: skip
    result = fit(model, [batch], loud_loss, config)
    assert result.history[0]["grad_norm"] == pytest.approx(float(norm), rel=1e-5)  # before
    for p0, p1, g in zip(before, model.parameters(), grads):
        torch.testing.assert_close(p0 - p1, g * (0.5 / norm), rtol=1e-4, atol=1e-7)
    step = torch.sqrt(sum((p0 - p1).square().sum() for p0, p1 in zip(before, model.parameters())))
    assert float(step.detach()) == pytest.approx(0.5, rel=1e-4)


def test_truncated_bptt_carries_the_state_detached_and_resets_each_epoch():
    model, _, ids = _lm()
    batches = StreamBatches(ids, 4, 8)
    seen = []

    def recording(m, b, state):
        loss, out, n = lm_loss(m, b, state)
        seen.append((state, out))
        return loss, out, n

    fit(model, batches, recording, TrainConfig(epochs=2, lr=1e-3, progress=False))
    per_epoch = len(batches)
    assert len(seen) == 2 * per_epoch
    for k, (state_in, _) in enumerate(seen):
        if k % per_epoch == 0:
            assert state_in is None  # a new pass over the text starts from zeros
            continue
        previous_out = seen[k - 1][1]
        for s_in, s_out in zip(state_in, previous_out):  # (h, c)
            assert s_out.grad_fn is not None  # the state left batch k-1 inside its graph ...
            assert s_in.grad_fn is None and not s_in.requires_grad  # ... and enters k cut off
            assert torch.equal(s_in, s_out.detach())  # with the same values
    # Without carry_state every batch starts from zeros.
    seen.clear()
    fit(model, batches, recording, TrainConfig(steps=3, carry_state=False, progress=False))
    assert [s for s, _ in seen] == [None, None, None]
    assert detach_state({"h": torch.ones(2, requires_grad=True) * 2})["h"].grad_fn is None


def test_learning_rate_schedules():
    cfg = TrainConfig(steps=100, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert [lr_factor(cfg, s, s / 100) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert lr_factor(cfg, 10, 0.1) == pytest.approx(1.0)
    assert lr_factor(cfg, 55, 0.55) == pytest.approx(0.1 + 0.9 * 0.5)  # half way after warmup
    assert lr_factor(cfg, 100, 1.0) == pytest.approx(0.1)
    lin = TrainConfig(minutes=1, schedule="linear")
    assert lr_factor(lin, 7, 0.25) == pytest.approx(0.75)  # by the time budget's fraction
    assert lr_factor(TrainConfig(steps=5, schedule="constant"), 3, 0.6) == 1.0


def test_an_epoch_budget_spans_the_schedule():
    # Regression: with only ``epochs`` given, the cosine schedule used to stay at the peak rate
    # for the whole run (it "could not know the end"); the batches' length tells it.
    model, _, ids = _lm()
    batches = StreamBatches(ids, 4, 8)
    n = 2 * len(batches)
    config = TrainConfig(epochs=2, lr=1.0, warmup_steps=2, schedule="cosine", min_lr_ratio=0.1,
                         log_every=1, progress=False)  # fmt: skip
    lrs = [h["lr"] for h in fit(model, batches, lm_loss, config).history if "lr" in h]
    assert len(lrs) == n
    expected = [lr_factor(TrainConfig(steps=n, warmup_steps=2, min_lr_ratio=0.1), s, 0.0)
                for s in range(n)]  # fmt: skip
    assert lrs == pytest.approx(expected)
    assert lrs[-1] < 0.2 and max(lrs) == pytest.approx(1.0)
    # Data without a length cannot say when an epoch ends: constant after warmup, as before.
    lrs = [h["lr"] for h in fit(model, iter(list(batches)), lm_loss, config).history if "lr" in h]
    assert lrs[2:] == pytest.approx([1.0] * (len(lrs) - 2))


def test_early_stopping_and_best_checkpoint(tmp_path):
    from lstm.checkpoint import find_checkpoint, load_json

    model, _, ids = _lm()
    losses = iter([3.0, 2.0, 2.5, 2.6, 2.7, 2.8])
    config = TrainConfig(steps=50, eval_every=1, patience=2, checkpoint_every=1, keep_checkpoints=1,
                         progress=False)  # fmt: skip
    result = fit(model, StreamBatches(ids, 4, 8), lm_loss, config,
                 eval_fn=lambda m: {"loss": next(losses)}, out_dir=tmp_path)  # fmt: skip
    assert result.stopped == "early stopping"
    assert result.step == 4 and result.best_val_loss == 2.0
    best = find_checkpoint(tmp_path, "BEST")
    assert best.name == "step-00000002"
    assert load_json(best / "config.json")["progress"]["step"] == 2


def test_best_checkpoint_is_the_best_checkpoint_not_the_best_evaluation(tmp_path):
    # Regression: BEST moved only when the evaluation at a checkpoint's step was the best of all
    # evaluations. With the best evaluation between two checkpoints (step 3 here) it stayed on an
    # older, worse checkpoint for the rest of the run (a 60-minute run left BEST at step 2000,
    # val 1.563, while step 5000 had 1.474).
    from lstm.checkpoint import find_checkpoint, load_json

    model, _, ids = _lm()
    losses = iter([3.0, 2.0, 1.5, 1.8, 1.7, 1.9, 2.5])
    config = TrainConfig(steps=7, eval_every=1, checkpoint_every=2, keep_checkpoints=5,
                         progress=False)  # fmt: skip
    fit(model, StreamBatches(ids, 4, 8), lm_loss, config,
        eval_fn=lambda m: {"loss": next(losses)}, out_dir=tmp_path)  # fmt: skip
    best = find_checkpoint(tmp_path, "BEST")
    assert best.name == "step-00000004"  # 1.8 beats step 2's 2.0; step 6 (1.9) and 7 (2.5) don't
    assert load_json(best / "config.json")["progress"]["best_saved_loss"] == 1.8
    assert find_checkpoint(tmp_path, "LATEST").name == "step-00000007"


def test_time_budget_stops_training():
    model, _, ids = _lm()
    result = fit(model, StreamBatches(ids, 4, 8), lm_loss,
                 TrainConfig(minutes=0.005, progress=False))  # fmt: skip
    assert result.stopped == "time"
    assert result.train_seconds >= 0.3


def test_invalid_training_options_name_the_option():
    with pytest.raises(ValueError, match="give at least one of steps, epochs or minutes"):
        TrainConfig()
    with pytest.raises(
        ValueError, match="optimizer should be one of adam, adamw, sgd, rmsprop, got 'lbfgs'"
    ):
        TrainConfig(steps=1, optimizer="lbfgs")
    with pytest.raises(ValueError, match="steps should be at least 1, got 0"):
        TrainConfig(steps=0)
    model, _, ids = _lm()

    def nan_loss(m, b, s):
        loss, state, n = lm_loss(m, b, s)
        return loss * float("nan"), state, n

    with pytest.raises(FloatingPointError, match="the loss became nan at step 0"):
        fit(model, StreamBatches(ids, 4, 8), nan_loss, TrainConfig(steps=2, progress=False))


@pytest.mark.slow
def test_a_short_run_learns_the_text(tmp_path):
    """A character LSTM (hidden 64) on a 4-line poem, 150 steps: from log2(V) = 5.2 bits per
    character to below 1.0 on held-out repetitions of it."""
    vocab = CharVocab.build(POEM)
    ids = vocab.encode(POEM * 40)
    torch.manual_seed(0)
    model = build_language_model(LMConfig(len(vocab), embed_size=16, hidden_size=64))
    before = evaluate_stream(model, ids[-600:], 2, 64)["bpc"]
    result = fit(model, StreamBatches(ids[:-600], 16, 32), lm_loss,
                 TrainConfig(steps=150, lr=1e-2, progress=False), out_dir=tmp_path)  # fmt: skip
    after = evaluate_stream(model, ids[-600:], 2, 64)["bpc"]
    assert before > 5.0
    assert after < 1.0, after
    assert result.train_loss / math.log(2) < 1.2
    assert (tmp_path / "curves.png").stat().st_size > 10_000  # the plot was drawn


@pytest.mark.parametrize("cell", ["gru", "rnn", "transformer"])
def test_every_cell_trains(cell):
    model, _, ids = _lm(cell)
    first = evaluate_stream(model, ids, 2, 16)["loss"]
    fit(model, StreamBatches(ids, 4, 16), lm_loss, TrainConfig(steps=20, lr=1e-2, progress=False))
    assert evaluate_stream(model, ids, 2, 16)["loss"] < first - 0.5


def test_torch_backend_is_a_peer_with_the_same_parameters():
    ours, _, ids = _lm(backend="bptt", dtype=torch.float64)
    peer = build_language_model(LMConfig(ours.config.vocab_size, embed_size=8, hidden_size=16,
                                         backend="torch")).double()  # fmt: skip
    peer.load_state_dict(ours.state_dict())
    assert isinstance(peer.rnn, nn.LSTM)
    x = ids[:64].view(4, 16)
    a, (_h, c) = ours(x)
    b, (_h2, c2) = peer(x)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(c, c2, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("best_key, best_call", [(None, 1), (lambda r: -r["loss"], 0)])
def test_restore_best_ends_with_the_weights_of_the_best_evaluation(best_key, best_call):
    """Evaluations score 3, 1, 2 (the last at the end of training): ``restore_best`` ends with the
    weights seen at the lowest key (call 1 by the loss; call 0 by ``-loss``), not the last ones."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    data = [(torch.randn(8, 3), torch.randn(8, 1)) for _ in range(6)]
    seen = []

    def loss_fn(m, batch, state):
        x, y = batch
        return nn.functional.mse_loss(m(x), y), None, len(x)

    def eval_fn(m):
        seen.append({k: v.clone() for k, v in m.state_dict().items()})
        return {"loss": [3.0, 1.0, 2.0][len(seen) - 1]}

    config = TrainConfig(steps=5, lr=0.1, eval_every=2, progress=False, carry_state=False)
    result = fit(model, data, loss_fn, config, eval_fn=eval_fn, restore_best=True,
                 best_key=best_key)  # fmt: skip
    assert len(seen) == 3 and result.best_val_loss == 1.0
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, seen[best_call][name], rtol=0, atol=0)
    assert not torch.equal(seen[best_call]["weight"], seen[-1]["weight"])


def test_parameter_groups_scale_and_freeze_their_learning_rate():
    """param_groups: plain SGD moves each group by its own rate times its gradient, and a group
    with frozen_epochs stays where it is for those epochs and moves after them: two epochs of one
    batch each, against the same two steps written out."""
    import copy

    from lstm.training import group_lr_scale

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    x, y = torch.randn(8, 3), torch.randn(8, 1)

    def loss_fn(m, batch, state):
        return (m(batch[0]) - batch[1]).square().mean(), None, len(batch[0])

    expected = copy.deepcopy(model)
    for rates in ((0.0, 0.1), (0.025, 0.1)):  # epoch 0: the lower layer frozen; then 0.1 / 4
        expected.zero_grad()
        loss_fn(expected, (x, y), None)[0].backward()
        with torch.no_grad():
            for layer, rate in zip((expected[0], expected[2]), rates):
                for p in layer.parameters():
                    p -= rate * p.grad
    groups = [{"params": list(model[0].parameters()), "lr_scale": 0.25, "frozen_epochs": 1},
              {"params": list(model[2].parameters())}]  # fmt: skip
    config = TrainConfig(epochs=2, optimizer="sgd", momentum=0.0, lr=0.1, schedule="constant",
                         clip_norm=None, progress=False)  # fmt: skip
    start = [p.detach().clone() for p in model.parameters()]
    fit(model, [(x, y)], loss_fn, config, param_groups=groups)
    for p, q, p0 in zip(model.parameters(), expected.parameters(), start):
        torch.testing.assert_close(p, q)
        assert not torch.equal(p, p0)  # every layer moved in the end
    assert group_lr_scale(groups[0], 0) == 0.0 and group_lr_scale(groups[0], 1) == 0.25
    assert group_lr_scale(groups[1], 0) == 1.0
    # Adam, one epoch with the lower layer frozen: it gathers no state, and the clipped norm is
    # the upper layer's alone
    adam = TrainConfig(epochs=1, lr=0.1, clip_norm=1e-3, log_every=1, progress=False)
    expected.zero_grad()
    loss_fn(expected, (x, y), None)[0].backward()
    upper_norm = torch.sqrt(sum(p.grad.square().sum() for p in expected[2].parameters()))
    result = fit(model, [(x, y)], loss_fn, adam, param_groups=groups)
    assert result.history[0]["grad_norm"] == pytest.approx(float(upper_norm), rel=1e-5)


def test_parameter_groups_must_hold_each_parameter_once():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    config = TrainConfig(steps=1, progress=False)

    def loss_fn(m, batch, state):
        return m(batch).sum(), None, 1

    whole, top = list(model.parameters()), list(model[1].parameters())
    cases = [
        ([{"params": top}], "2 of 4 are in none"),
        ([{"params": whole}, {"params": top}], "param_groups[1] repeats a parameter"),
        ([{"params": whole, "lr": 1.0}], "param_groups[0] has unknown keys ['lr']"),
        ([{"params": whole, "lr_scale": -1}], "should be >= 0, got -1"),
        ([{"params": [*whole, nn.Parameter(torch.ones(1))]}], "not the model's"),
    ]
    for groups, message in cases:
        with pytest.raises(ValueError) as info:
            fit(model, [torch.randn(2, 3)], loss_fn, config, param_groups=groups)
        assert message in str(info.value)


def _linear_run(config: TrainConfig, out_dir=None, resume=False, loss_wrap=None):
    """SGD on a linear model over 4 fixed batches; returns the model and the weights each step
    started from."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    data = [(torch.randn(8, 3), torch.randn(8, 2)) for _ in range(4)]
    after = []

    def loss_fn(m, batch, state):
        after.append(m.weight.detach().clone())  # the weights the previous step left
        x, y = batch
        return nn.functional.mse_loss(m(x), y), None, len(x)

    fn = loss_wrap(loss_fn) if loss_wrap else loss_fn
    fit(model, data, fn, config, out_dir=out_dir, resume=resume)
    return model, after


@pytest.mark.parametrize("average", ["swa", "ema"])
def test_weight_averaging_ends_with_the_average_of_the_steps(average):
    """``average="swa"`` ends with the mean of the weights after steps 4..10 of 10 (start 0.4:
    the steps at or past 0.4 of the run, the 4th at 4/10); ``"ema"`` with their exponential
    average, seeded by the first of them."""
    base = dict(steps=10, lr=0.1, optimizer="sgd", schedule="constant", progress=False,
                carry_state=False)  # fmt: skip
    plain, seen = _linear_run(TrainConfig(**base))
    trajectory = [*seen[1:], plain.weight.detach()]  # the weights after steps 1..10
    assert len(trajectory) == 10
    averaged, _ = _linear_run(TrainConfig(**base, average=average, average_start=0.4,
                                          ema_decay=0.7))  # fmt: skip
    kept = trajectory[3:]  # after steps 4..10: 4/10 >= 0.4
    if average == "swa":
        expected = torch.stack(kept).mean(0)
    else:
        expected = kept[0]
        for w in kept[1:]:
            expected = 0.7 * expected + 0.3 * w
    torch.testing.assert_close(averaged.weight.detach(), expected, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(expected, plain.weight.detach(), atol=1e-4)


def test_weight_averaging_resumes_exactly_and_checkpoints_the_average(tmp_path):
    from lstm import checkpoint as ckpt

    config = TrainConfig(steps=12, lr=0.1, optimizer="sgd", schedule="constant", progress=False,
                         carry_state=False, average="swa", average_start=0.25,
                         checkpoint_every=4)  # fmt: skip
    straight, _ = _linear_run(config, tmp_path / "a")
    with pytest.raises(Interrupt):  # killed after step 9 (checkpointed at 4 and 8)
        _linear_run(config, tmp_path / "b", loss_wrap=lambda f: _interrupting(f, 10))
    resumed, _ = _linear_run(config, tmp_path / "b", resume=True)
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name  # bitwise
    weights, _ = ckpt.load_tensors(ckpt.find_checkpoint(tmp_path / "a/checkpoints") / ckpt.MODEL)
    torch.testing.assert_close(weights["weight"], straight.weight.detach(), rtol=0, atol=0)


def test_weight_averaging_options_are_checked():
    with pytest.raises(ValueError, match="average should be one of"):
        TrainConfig(steps=1, average="mean")
    with pytest.raises(ValueError, match="average_start should be in"):
        TrainConfig(steps=1, average="swa", average_start=1.0)
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(steps=1, average="ema", ema_decay=1.5)
