"""Language models: sampling filters on known distributions, the next-word view on a model whose
probabilities are known exactly, stream evaluation (static and dynamic), the Transformer baseline,
parameter matching."""

import math

import pytest
import torch
from torch import nn

from lstm.data.text import CharVocab
from lstm.models.language_model import (
    LMConfig,
    TransformerLM,
    build_language_model,
    count_parameters,
    evaluate_dynamic,
    evaluate_stream,
    filter_logits,
    generate,
    next_tokens,
    next_words,
    transformer_matching,
)

pytestmark = pytest.mark.usefixtures("one_thread")


PROBS = torch.tensor([0.05, 0.30, 0.10, 0.40, 0.15])  # sorted: 3 (.40), 1 (.30), 4 (.15), 2, 0


def test_top_k_keeps_exactly_the_k_most_likely():
    logits = PROBS.log()
    kept = filter_logits(logits, top_k=2).softmax(-1)
    torch.testing.assert_close(kept, torch.tensor([0, 0.3, 0, 0.4, 0]) / 0.7)
    assert torch.equal(filter_logits(logits, top_k=5), logits)


@pytest.mark.parametrize(
    "top_p, kept",
    [
        (0.40, [3]),  # the first token alone reaches 0.40
        (0.41, [3, 1]),
        (0.70, [3, 1]),  # 0.40 + 0.30 = 0.70 reaches it
        (0.71, [3, 1, 4]),
        (1.00, [3, 1, 4, 2, 0]),
    ],
)
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, kept):
    out = filter_logits(PROBS.log().repeat(3, 1), top_p=top_p)  # batched rows agree
    for row in out:
        assert sorted(torch.isfinite(row).nonzero().flatten().tolist()) == sorted(kept)
        expected = torch.zeros(5)
        expected[kept] = PROBS[kept] / PROBS[kept].sum()
        torch.testing.assert_close(row.softmax(-1), expected)


def test_filter_rejects_bad_values():
    with pytest.raises(ValueError, match="top_k should be at least 1, got 0"):
        filter_logits(PROBS.log(), top_k=0)
    with pytest.raises(ValueError, match=r"top_p should be in \(0, 1\], got 1.5"):
        filter_logits(PROBS.log(), top_p=1.5)


class MarkovModel(nn.Module):
    """A 'language model' whose next-character distribution depends only on the last character:
    its probabilities are known exactly. Characters: ' ', '.', 'a', 'b' (ids 1..4; 0 unknown)."""

    is_recurrent = True

    def __init__(self):
        super().__init__()
        self.vocab = CharVocab([" ", ".", "a", "b"])
        p = torch.zeros(5, 5)
        p[1] = torch.tensor([0, 0.0, 0.0, 0.6, 0.4])  # after ' ': a word starts
        p[2] = torch.tensor([0, 1.0, 0.0, 0.0, 0.0])  # after '.': a space
        after_letter = torch.tensor([0, 0.25, 0.1, 0.5, 0.15])  # ' ', '.', 'a', 'b'
        p[3] = p[4] = after_letter
        p[0] = after_letter
        self.register_buffer("logp", p.log())
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, tokens, state=None):
        return self.logp[tokens] + 0 * self.dummy, state


def test_next_words_are_exact_on_a_known_model():
    model = MarkovModel()
    words = dict(next_words(model, model.vocab, "a ", k=6, beam=256))
    # P(word) = P(its letters) * P(a non-letter after it: ' ' or '.', 0.35)
    end = 0.35
    expected = {"a": 0.6 * end, "b": 0.4 * end, "aa": 0.6 * 0.5 * end, "ba": 0.4 * 0.5 * end,
                "aaa": 0.6 * 0.5 * 0.5 * end, "baa": 0.4 * 0.5 * 0.5 * end}  # fmt: skip
    assert list(words) == sorted(expected, key=lambda w: -expected[w])
    for w, p in expected.items():
        assert words[w] == pytest.approx(p, rel=1e-6)
    # After a prompt that ends inside a word, the next word starts after a space (or is a mark).
    words = dict(next_words(model, model.vocab, "ab", k=3, beam=256))
    assert words == pytest.approx({".": 0.1, "a": 0.25 * 0.6 * end, "b": 0.25 * 0.4 * end})
    table = dict(next_tokens(model, model.vocab, "ab", k=2))
    assert table == pytest.approx({"a": 0.5, " ": 0.25})


def _share_of_a_after_letters(text: str) -> float:
    pairs = [(x, y) for x, y in zip("b" + text, text) if x in "ab"]
    return sum(1 for _, y in pairs if y == "a") / len(pairs)


def test_sampling_frequencies_follow_top_k_top_p_and_temperature():
    model = MarkovModel()
    sample = lambda **kw: generate(  # noqa: E731
        model, model.vocab, "ab", 2000, generator=torch.Generator().manual_seed(0), **kw
    )
    # After a letter: 'a' .5, ' ' .25, 'b' .15, '.' .1. Top-2 keeps 'a' and ' ': 'a' gets 2/3.
    text = sample(top_k=2)
    assert "." not in text
    assert _share_of_a_after_letters(text) == pytest.approx(0.5 / 0.75, abs=0.04)
    text = sample(top_p=0.7)  # the same two tokens reach 0.7
    assert "." not in text
    assert _share_of_a_after_letters(text) == pytest.approx(0.5 / 0.75, abs=0.04)
    # Temperature 0.5 squares the probabilities: 'a' gets .25 / (.25 + .0625 + .0225 + .01).
    text = sample(temperature=0.5)
    assert _share_of_a_after_letters(text) == pytest.approx(0.25 / 0.345, abs=0.04)
    assert _share_of_a_after_letters(sample()) == pytest.approx(0.5, abs=0.04)
    assert generate(model, model.vocab, "a", 5, temperature=0) == "aaaaa"  # greedy


def _tiny(cell="lstm", **kw):
    vocab = CharVocab.build("abcdefgh \n")
    torch.manual_seed(1)
    cfg = LMConfig(len(vocab), cell, embed_size=8, hidden_size=16, num_heads=2, context=12, **kw)
    return build_language_model(cfg).double(), vocab


def test_stream_evaluation_carries_the_state_through():
    model, _ = _tiny()
    ids = torch.randint(1, 11, (301,))
    result = evaluate_stream(model, ids, batch_size=1, seq_len=7)
    logits, _ = model(ids[:-1].unsqueeze(0))  # one pass over the whole stream
    nll = nn.functional.cross_entropy(logits[0], ids[1:]).detach()
    assert result["loss"] == pytest.approx(float(nll), rel=1e-12)
    assert result["bpc"] == pytest.approx(float(nll) / math.log(2), rel=1e-12)
    assert result["tokens"] == 300
    # Word/BPE models: bits per character spread the tokens' bits over the text's characters.
    assert evaluate_stream(model, ids, 1, 7, chars=602)["bpc"] == pytest.approx(
        result["loss"] * 301 / 602 / math.log(2)
    )


def test_dynamic_evaluation_scores_each_segment_before_its_step():
    """Against a loop written with ``torch.optim.SGD``: segment k is scored by the weights after
    the steps on segments 0..k-1 (with the state carried, detached), then stepped on. A stream of
    one segment scores exactly as the static evaluation, whatever the step size."""
    model, _ = _tiny()
    ids = torch.randint(1, 11, (3 * 7 + 1,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    got = evaluate_dynamic(model, ids, seq_len=7, lr=0.5)
    for k, v in model.state_dict().items():  # the caller's model is left as it was
        assert torch.equal(v, before[k]), k

    import copy

    reference = copy.deepcopy(model).eval()
    sgd = torch.optim.SGD(reference.parameters(), lr=0.5)
    total, state = 0.0, None
    for i in range(0, 21, 7):
        logits, state = reference(ids[i : i + 7].unsqueeze(0), state)
        loss = nn.functional.cross_entropy(logits[0], ids[i + 1 : i + 8])
        total += float(loss.detach()) * 7
        sgd.zero_grad()
        loss.backward()
        sgd.step()
        state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
    assert got["loss"] == pytest.approx(total / 21, rel=1e-12)
    assert got["tokens"] == 21
    static = evaluate_stream(model, ids[:8], batch_size=1, seq_len=7)["loss"]
    assert evaluate_dynamic(model, ids[:8], seq_len=7, lr=5.0)["loss"] == pytest.approx(
        static, rel=1e-12
    )
    assert evaluate_dynamic(model, ids, seq_len=7, lr=0)["loss"] == pytest.approx(
        evaluate_stream(model, ids, batch_size=1, seq_len=7)["loss"], rel=1e-12
    )


def test_dynamic_evaluation_adapts_to_a_repeated_text():
    """A text read five times: the adapted model predicts the repeats better than the static
    one (measured: 10% fewer nats); the decay toward the trained weights holds part of the gain
    back."""
    model, _ = _tiny()
    torch.manual_seed(0)
    ids = torch.randint(1, 11, (30,)).repeat(5)
    static = evaluate_dynamic(model, ids, seq_len=8, lr=0)["loss"]
    dynamic = evaluate_dynamic(model, ids, seq_len=8, lr=1.0)["loss"]
    held = evaluate_dynamic(model, ids, seq_len=8, lr=1.0, decay=0.3)["loss"]
    assert dynamic < held < static
    assert dynamic < 0.93 * static
    with pytest.raises(ValueError, match="decay in"):
        evaluate_dynamic(model, ids, lr=0.1, decay=1.0)
    with pytest.raises(ValueError, match="not for a Transformer"):
        evaluate_dynamic(_tiny("transformer")[0], ids)


def test_transformer_is_causal_and_its_stream_evaluation_scores_every_token_once():
    model, _ = _tiny("transformer")
    model.eval().requires_grad_(False)
    x = torch.randint(1, 11, (2, 12))
    y = x.clone()
    y[:, 7:] = torch.randint(1, 11, (2, 5))
    a, _ = model(x)
    b, _ = model(y)
    torch.testing.assert_close(a[:, :7], b[:, :7])  # the future does not leak
    assert not torch.allclose(a[:, 7:], b[:, 7:])
    with pytest.raises(ValueError, match="longer than the context 12"):
        model(torch.zeros(1, 13, dtype=torch.long))

    ids = torch.randint(1, 11, (41,))
    result = evaluate_stream(model, ids, batch_size=1)
    assert result["tokens"] == 40
    # Brute force: each token scored with the windows the stride rule gives (first window: all
    # of 0..11; then blocks of 6 new tokens, each with the 12 tokens up to the block's end).
    total = 0.0
    logits, _ = model(ids[:12].unsqueeze(0))
    total += float(nn.functional.cross_entropy(logits[0], ids[1:13], reduction="sum"))
    for start in range(12, 40, 6):
        hi = min(40, start + 6)
        logits, _ = model(ids[hi - 12 : hi].unsqueeze(0))
        new = logits[0, -(hi - start) :]
        total += float(nn.functional.cross_entropy(new, ids[start + 1 : hi + 1], reduction="sum"))
    assert result["loss"] == pytest.approx(total / 40, rel=1e-12)


def test_transformer_matching_parameter_count():
    lstm_model = build_language_model(LMConfig(85, embed_size=64, hidden_size=384))
    target = count_parameters(lstm_model)
    assert target == 4 * 384 * (64 + 384) + 8 * 384 + 85 * 64 + 85 * 384 + 85
    cfg = transformer_matching(target, LMConfig(85, "transformer", num_layers=4, context=128))
    n = count_parameters(TransformerLM(cfg))
    assert abs(n - target) / target < 0.03, (n, target)
    assert cfg.num_layers == 4 and cfg.hidden_size % 4 == 0


def test_weight_tying_shares_the_matrix():
    model, _ = _tiny(tie_weights=True)
    assert model.head.weight is model.embedding.weight
    assert model.project is not None  # hidden 16 -> embedding 8 before the tied head
    untied, _ = _tiny()
    assert count_parameters(untied) - count_parameters(model) == 11 * 16 - 16 * 8


def test_config_errors_name_the_value():
    with pytest.raises(
        ValueError, match="cell should be one of lstm, gru, rnn, transformer, got 'tcn'"
    ):
        LMConfig(10, "tcn")
    with pytest.raises(ValueError, match=r"backend should be one of .* got 'cuda-magic'"):
        LMConfig(10, backend="cuda-magic")
    with pytest.raises(ValueError, match="hidden_size 10 should be divisible by num_heads 4"):
        LMConfig(10, "transformer", hidden_size=10)
    # Regression: the transformer silently ignored init="keras".
    with pytest.raises(ValueError, match="init 'keras' is for the recurrent cells"):
        LMConfig(10, "transformer", init="keras")


def test_adaptive_softmax_head_is_a_distribution_and_its_fast_loss_is_exact():
    """The adaptive head's training loss (no (B, T, V) logits) equals the cross-entropy of the
    full log-probabilities that forward returns, and those sum to one at every position."""
    from lstm.models.language_model import lm_loss

    torch.manual_seed(0)
    config = LMConfig(50, embed_size=8, hidden_size=16, adaptive_cutoffs=[10, 30], backend="torch")
    model = build_language_model(config).double().eval()
    x, y = torch.randint(0, 50, (3, 7)), torch.randint(0, 50, (3, 7))
    log_probs, _ = model(x)
    assert log_probs.shape == (3, 7, 50)
    assert torch.allclose(log_probs.logsumexp(-1), torch.zeros(3, 7, dtype=torch.float64))
    fast, _, count = lm_loss(model, (x, y), None)
    slow = torch.nn.functional.cross_entropy(log_probs.flatten(0, 1), y.flatten())
    assert count == 21 and abs(fast.item() - slow.item()) < 1e-10
    assert LMConfig.from_json(config.to_json()) == config


def test_adaptive_cutoffs_errors_name_the_value():
    with pytest.raises(ValueError, match=r"rise strictly .* vocab_size 50, got \[30, 10\]"):
        LMConfig(50, adaptive_cutoffs=[30, 10])
    with pytest.raises(ValueError, match=r"got \[10, 50\]"):
        LMConfig(50, adaptive_cutoffs=[10, 50])
    with pytest.raises(ValueError, match="untied recurrent model only"):
        LMConfig(50, adaptive_cutoffs=[10], tie_weights=True)
