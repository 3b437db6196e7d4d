"""Sentiment: loaders on small files (and malformed ones), the fixed split, the packed classifier's
padding invariance, LM initialisation, a short training run that must beat a bar, and the CLI."""

import numpy as np
import pytest
import torch

from lstm.cli import main
from lstm.data.sentiment import (
    LabelledText,
    LengthBatches,
    SentimentDataError,
    build_vocab,
    encode_texts,
    load_aclimdb,
    load_csv,
    split_dataset,
    word2vec_embedding,
)
from lstm.models.classifier import (
    ClassifierConfig,
    RecurrentClassifier,
    adversarial_loss,
    build_classifier,
    init_from_language_model,
)
from lstm.models.language_model import LMConfig, RecurrentLM
from lstm.tasks.sentiment import train_classifier
from lstm.training import TrainConfig

POSITIVE = ["great", "wonderful", "superb", "moving", "brilliant"]
NEGATIVE = ["awful", "dull", "boring", "terrible", "lifeless"]
FILLER = ["the", "film", "a", "plot", "actor", "was", "and", "it", "scene", "of", "music", "story"]


def toy_reviews(n: int, seed: int = 0) -> LabelledText:
    """Reviews whose label is the majority of sentiment words among filler (varied lengths)."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        label = int(rng.integers(2))
        words = list(rng.choice(FILLER, size=int(rng.integers(4, 30))))
        strong = POSITIVE if label else NEGATIVE
        weak = NEGATIVE if label else POSITIVE
        for w in list(rng.choice(strong, 2)) + list(rng.choice(weak, int(rng.integers(0, 2)))):
            words.insert(int(rng.integers(len(words) + 1)), w)
        texts.append(" ".join(words) + ".")
        labels.append(label)
    return LabelledText(texts, np.array(labels), ["negative", "positive"])


def test_load_csv_with_named_columns_and_string_labels(tmp_path):
    f = tmp_path / "r.csv"
    f.write_text('review,stars\n"Great, really",pos\nawful<br />film,neg\n"fine, ""ok""",pos\n')
    data = load_csv(f, "review", "stars")
    assert data.label_names == ["neg", "pos"]
    assert data.labels.tolist() == [1, 0, 1]
    assert data.texts[2] == 'fine, "ok"'
    ints = tmp_path / "i.csv"
    ints.write_text("text,label\na,0\nb,2\nc,1\n")
    assert load_csv(ints).label_names == ["0", "1", "2"]


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        ("text,label\na,1\n", ("txt", "label"), r"column 'txt' is not in .*--text-col"),
        ("text,label\na,1\n", ("text", "y"), r"column 'y' is not in .*--label-col"),
        ("text,label\na,1\n ,0\n", ("text", "label"), r"column 'text' .* is empty at row 2"),
        ("text,label\na,1\nb,\n", ("text", "label"), r"column 'label' .* is empty at row 2"),
        ("text,label\na,1\nb,1\n", ("text", "label"), "single class"),
        ("text,label\n", ("text", "label"), "no data rows"),
        ('text,label\n"a,1\n', ("text", "label"), "cannot be parsed"),
    ],
)
def test_load_csv_errors(tmp_path, content, args, message):
    f = tmp_path / "bad.csv"
    f.write_text(content)
    with pytest.raises(SentimentDataError, match=message):
        load_csv(f, *args)


def test_aclimdb_layout(tmp_path):
    root = tmp_path / "aclImdb"
    for split in ("train", "test"):
        for label in ("neg", "pos"):
            (root / split / label).mkdir(parents=True)
            for k in range(2):
                (root / split / label / f"{k}_7.txt").write_text(f"{split} {label} {k}")
    data = load_aclimdb(root)
    assert len(data) == 8 and data.labels.tolist() == [0, 0, 1, 1, 0, 0, 1, 1]
    assert data.texts[2] == "train pos 0"
    assert len(load_aclimdb(root, "test")) == 4
    (root / "test" / "pos" / "0_7.txt").unlink()
    (root / "test" / "pos" / "1_7.txt").unlink()
    (root / "test" / "pos").rmdir()
    with pytest.raises(SentimentDataError, match=r"test/pos' is missing"):
        load_aclimdb(root)
    with pytest.raises(SentimentDataError, match="does not exist"):
        load_aclimdb(tmp_path / "nowhere")


def test_the_fixed_split_is_stratified_and_reproducible():
    from sklearn.model_selection import train_test_split

    data = toy_reviews(500)
    split = split_dataset(data)
    assert (len(split.train), len(split.val), len(split.test)) == (360, 40, 100)
    _, test_index = train_test_split(np.arange(500), test_size=0.2, random_state=0,
                                     stratify=data.labels)  # fmt: skip
    assert split.test.texts == [data.texts[i] for i in test_index]
    for part in (split.train, split.val, split.test):
        assert abs(part.labels.mean() - data.labels.mean()) < 0.02
    with pytest.raises(SentimentDataError, match="too few examples"):
        split_dataset(toy_reviews(6))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("pooling", ["last", "concat"])
def test_padding_never_changes_a_prediction(cell, pooling):
    """A text's logits are the same alone and in a batch padded to a longer text (float64)."""
    torch.manual_seed(0)
    config = ClassifierConfig(vocab_size=30, cell=cell, embed_size=6, hidden_size=5, num_layers=2,
                              pooling=pooling, dropout=0.0)  # fmt: skip
    model = RecurrentClassifier(config).double().eval()
    short = torch.randint(1, 30, (1, 4))
    batch = torch.zeros(2, 9, dtype=torch.long)
    batch[0] = torch.randint(1, 30, (9,))
    batch[1, :4] = short[0]
    alone = model(short, torch.tensor([4]))
    padded = model(batch, torch.tensor([9, 4]))
    assert (alone[0] - padded[1]).abs().max() < 1e-12


def test_transformer_classifier_ignores_padding():
    torch.manual_seed(0)
    config = ClassifierConfig(vocab_size=30, cell="transformer", hidden_size=8, num_layers=1,
                              num_heads=2, dropout=0.0, pooling="concat")  # fmt: skip
    model = build_classifier(config).double().eval()
    short = torch.randint(1, 30, (1, 4))
    batch = torch.zeros(2, 7, dtype=torch.long)
    batch[0] = torch.randint(1, 30, (7,))
    batch[1, :4] = short[0]
    assert (
        model(short, torch.tensor([4]))[0] - model(batch, torch.tensor([7, 4]))[1]
    ).abs().max() < 1e-10


def test_init_from_language_models_copies_both_directions():
    torch.manual_seed(0)
    lm_config = LMConfig(vocab_size=20, cell="lstm", embed_size=6, hidden_size=5, num_layers=2)
    forward, alone = RecurrentLM(lm_config).state_dict(), RecurrentLM(lm_config).state_dict()
    backward = {**alone, "embedding.weight": forward["embedding.weight"]}  # read the forward's
    clf = RecurrentClassifier(ClassifierConfig(vocab_size=20, embed_size=6, hidden_size=5,
                                               num_layers=2))  # fmt: skip
    copied = init_from_language_model(clf, forward, backward)
    own = clf.state_dict()
    assert torch.equal(own["rnn.weight_hh_l1"], forward["rnn.weight_hh_l1"])
    assert torch.equal(own["rnn.weight_ih_l0_reverse"], backward["rnn.weight_ih_l0"])
    assert torch.equal(own["embedding.weight"], forward["embedding.weight"])
    assert "rnn.weight_ih_l1" not in copied  # reads both directions: 2H wide
    # Two independently trained embeddings: each LSTM reads its own, the classifier has one (an
    # average of the two, which the first version made, is a space neither LSTM was trained on).
    with pytest.raises(ValueError, match="backward language model has an embedding of its own"):
        init_from_language_model(clf, forward, alone)
    wrong = RecurrentClassifier(ClassifierConfig(vocab_size=21, embed_size=6, hidden_size=5))
    with pytest.raises(ValueError, match="vocabularies must match"):
        init_from_language_model(wrong, forward)


def test_length_batches_are_deterministic_per_epoch():
    ids = [torch.arange(1, n + 1) for n in (3, 9, 1, 5, 7, 2)]
    batches = LengthBatches(ids, np.arange(6) % 2, batch_size=2, seed=3)
    first = [b[1].tolist() for b in batches]
    assert first == [b[1].tolist() for b in batches]
    batches.set_epoch(1)
    flat = [i for b in batches for i in b[1].tolist()]
    assert sorted(flat) == sorted(i for f in first for i in f)
    tokens, lengths, _ = next(iter(batches))
    assert tokens.shape == (2, int(lengths.max()))


@pytest.mark.slow
def test_short_training_learns_the_toy_reviews():
    """About ten seconds of training: at least 90% test accuracy on reviews whose label is the
    majority of their sentiment words (chance is 50%)."""
    split = split_dataset(toy_reviews(900))
    vocab = build_vocab(split.train.texts)
    config = ClassifierConfig(vocab_size=len(vocab), embed_size=16, hidden_size=16, dropout=0.1)
    train = TrainConfig(steps=120, lr=1e-2, progress=False, carry_state=False, eval_every=40)
    run = train_classifier(split, config, train, vocab=vocab, batch_size=32)
    assert run.test["accuracy"] >= 0.90, run.test
    assert sum(map(sum, run.test["confusion"])) == len(split.test)


@pytest.mark.slow
def test_cli_train_predict_evaluate(tmp_path, capsys):
    data = toy_reviews(300)
    f = tmp_path / "r.csv"
    import pandas as pd

    pd.DataFrame({"review": data.texts,
                  "mood": np.where(data.labels == 1, "happy", "sad")}).to_csv(f, index=False)  # fmt: skip
    out = tmp_path / "run"
    rc = main(["train", "sentiment", "--csv", str(f), "--text-col", "review", "--label-col",
               "mood", "--steps", "60", "--lr", "1e-2", "--embed", "16", "--hidden", "16",
               "--no-progress", "--out", str(out)])  # fmt: skip
    assert rc == 0
    report = (out / "report.md").read_text()
    assert "| LSTM |" in report and "TF-IDF" in report
    assert (out / "confusion-lstm.png").stat().st_size > 1000
    capsys.readouterr()
    assert main(["predict", str(out), "a great and superb film", "dull, boring and awful"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["happy", "sad"]
    assert all(0.5 <= float(line.split("\t")[1]) <= 1 for line in lines)
    assert main(["evaluate", str(out), "--csv", str(f), "--text-col", "review",
                 "--label-col", "mood"]) == 0  # fmt: skip
    assert "accuracy" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
    f = tmp_path / "r.csv"
    f.write_text("text,label\na,1\nb,0\n")
    cases = [
        (["train", "sentiment", "--csv", str(tmp_path / "no.csv")], "does not exist"),
        (["train", "sentiment", "--csv", str(f), "--text-col", "body"], "column 'body' is not in"),
        (["train", "sentiment", "--csv", str(f)], "too few examples"),
        (["predict", str(tmp_path), "text"], "is not a checkpoint"),
    ]
    for argv, message in cases:
        assert main([*argv, "--no-progress"] if argv[0] == "train" else argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


@pytest.mark.slow
def test_cli_pretrains_on_a_corpus_file_and_a_later_run_reuses_the_models(tmp_path, capsys):
    """--pretrain-corpus FILE: the language models read the file's documents too (its words
    enter the vocabulary); --pretrained RUN starts another classifier from them, over their
    vocabulary, and refuses sizes that do not fit."""
    import pandas as pd

    from lstm.tasks.sentiment import load_pretrained, load_sentiment_model

    data = toy_reviews(300)
    f = tmp_path / "r.csv"
    pd.DataFrame({"text": data.texts, "label": data.labels}).to_csv(f, index=False)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"zebra {t}" for t in toy_reviews(100, seed=1).texts) + "\n")
    sizes = ["--embed", "8", "--hidden", "8", "--steps", "3", "--no-progress", "--no-baseline"]
    first = tmp_path / "first"
    argv = ["train", "sentiment", "--csv", str(f), "--pretrain-corpus", str(corpus),
            "--pretrain-minutes", "0.01", *sizes, "--out", str(first)]  # fmt: skip
    assert main(argv) == 0
    vocab, forward, backward, model = load_pretrained(first)
    assert "zebra" in vocab.index and model["hidden_size"] == 8
    assert torch.equal(backward["embedding.weight"], forward["embedding.weight"])  # shared
    assert "[sentiment] pre-training the backward language model" in capsys.readouterr().out
    second = tmp_path / "second"
    assert main(["train", "sentiment", "--csv", str(f), "--pretrained", str(first), *sizes,
                 "--out", str(second)]) == 0  # fmt: skip
    assert "| LSTM (LM pre-trained) |" in (second / "report.md").read_text()
    _, reused, _ = load_sentiment_model(second)
    assert reused.tokens == vocab.tokens
    cases = [
        (["--pretrained", str(first), "--hidden", "16"], "has hidden_size 8, this run asks for 16"),
        (["--pretrained", str(first), "--pretrain-minutes", "1"], "not both"),
        (["--pretrain-corpus", str(tmp_path / "none.txt"), "--pretrain-minutes", "1"],
         "does not exist"),
    ]  # fmt: skip
    capsys.readouterr()
    for extra, message in cases:
        argv = ["train", "sentiment", "--csv", str(f), "--embed", "8", "--hidden", "8", *extra,
                "--no-progress", "--out", str(tmp_path / "bad")]  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_cli_finetunes_a_trained_classifier_on_new_data(tmp_path, capsys):
    """--finetune RUN: the new run starts from the run's weights; its vocabulary gains the new
    texts' words (their embeddings start at the mean row), the head is kept for the same labels
    and made anew for others, and a size that does not fit is one clear line."""
    import pandas as pd

    from lstm.tasks.sentiment import finetune_start, load_sentiment_model

    data = toy_reviews(200)
    first_csv, second_csv = tmp_path / "a.csv", tmp_path / "b.csv"
    pd.DataFrame({"text": data.texts, "label": data.labels}).to_csv(first_csv, index=False)
    other = toy_reviews(200, seed=1)
    texts = [f"zebra quagga {t}" for t in other.texts]  # two new words, each in every text
    pd.DataFrame({"text": texts, "label": other.labels}).to_csv(second_csv, index=False)
    sizes = ["--embed", "8", "--hidden", "8", "--steps", "3", "--no-progress", "--no-baseline"]
    first = tmp_path / "first"
    assert main(["train", "sentiment", "--csv", str(first_csv), *sizes, "--out", str(first)]) == 0
    trained, old_vocab, _ = load_sentiment_model(first)

    vocab, config, weights, notes = finetune_start(first, texts, ["0", "1"])
    assert vocab.tokens[: len(old_vocab)] == old_vocab.tokens  # old ids keep their meaning
    assert vocab.tokens[len(old_vocab) :] == ["quagga", "zebra"] and config.vocab_size == len(vocab)
    table, old = weights["embedding.weight"], trained.embedding.weight.detach()
    torch.testing.assert_close(table[: len(old_vocab)], old)
    torch.testing.assert_close(table[len(old_vocab) :], old.mean(0).expand(2, -1))
    assert torch.equal(weights["head.weight"], trained.head.weight.detach())
    assert notes[-1].startswith("head kept")
    relabelled = finetune_start(first, texts, ["bad", "good"])
    assert not any(k.startswith("head.") for k in relabelled[2])
    assert relabelled[3][-1].startswith("new head")

    second = tmp_path / "second"
    capsys.readouterr()
    assert main(["train", "sentiment", "--csv", str(second_csv), "--finetune", str(first),
                 *sizes[:-1], "--out", str(second)]) == 0  # fmt: skip
    assert "fine-tuning the classifier of" in capsys.readouterr().out
    report = (second / "report.md").read_text()
    assert "(fine-tuned from first)" in report
    # the baselines: on this data alone, and with the first run's data too, as the LSTM had
    assert "| TF-IDF + logistic regression (C=" in report
    assert "| TF-IDF + logistic regression, the first run's training part added (C=" in report
    tuned, tuned_vocab, _ = load_sentiment_model(second)
    assert tuned_vocab.tokens == vocab.tokens
    # three Adam steps of 2e-3 from the run's weights (a fresh start would be ~0.35 away)
    moved = (tuned.rnn.weight_hh_l0 - trained.rnn.weight_hh_l0).detach().abs().max()
    assert float(moved) < 0.01
    cases = [
        (["--hidden", "16"], "has hidden_size 8, this run asks for 16"),
        (["--pooling", "max"], "has pooling 'concat', this run asks for 'max'"),
        (["--pretrain-minutes", "1"], "without --pretrained or --pretrain-minutes"),
    ]
    for extra, message in cases:
        argv = ["train", "sentiment", "--csv", str(second_csv), "--finetune", str(first),
                *sizes, *extra, "--out", str(tmp_path / "bad")]  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_tfidf_baseline_learns_and_takes_extra_labelled_texts():
    """The baseline beats chance on the toy reviews; texts from elsewhere (``extra``) teach it
    words the data's own training part never shows, and their labels must be the data's."""
    from lstm.data.sentiment import Split
    from lstm.tasks.sentiment import tfidf_baseline

    split = split_dataset(toy_reviews(400))
    pred, probs, C = tfidf_baseline(split)
    assert (pred == split.test.labels).mean() > 0.8 and probs.shape == (len(split.test), 2)
    assert C in (1.0, 3.0, 10.0, 30.0, 100.0)
    # Test texts whose only sentiment words are new: a coin toss, until extra texts teach them.
    rng = np.random.default_rng(2)
    labels = rng.integers(2, size=60)
    new = LabelledText([("zebra" if y else "quagga") + " the film" for y in labels], labels,
                       ["negative", "positive"])  # fmt: skip
    unseen = Split(split.train, split.val, new)
    assert (tfidf_baseline(unseen, C=10.0)[0] == labels).mean() < 0.8
    extra = LabelledText(["zebra zebra", "quagga quagga"] * 20, np.array([1, 0] * 20),
                         ["negative", "positive"])  # fmt: skip
    assert (tfidf_baseline(unseen, C=10.0, extra=extra)[0] == labels).mean() == 1.0
    with pytest.raises(ValueError, match=r"labels \['bad', 'good'\] are not the data's"):
        tfidf_baseline(unseen, C=1.0, extra=LabelledText(["a"], np.array([0]), ["bad", "good"]))


def test_report_times_the_classifier_without_the_baseline(tmp_path, monkeypatch):
    """Regression: the "(training N s)" of report.md (the results table's training column)
    included the TF-IDF baseline's fits, a minute or more on IMDB."""
    import re
    import time

    import pandas as pd

    import lstm.tasks.sentiment as task

    data = toy_reviews(200)
    f = tmp_path / "r.csv"
    pd.DataFrame({"text": data.texts, "label": data.labels}).to_csv(f, index=False)
    real, called = task.tfidf_baseline, []

    def slow_baseline(*args, **kwargs):
        called.append(time.perf_counter())
        time.sleep(5.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(task, "tfidf_baseline", slow_baseline)
    argv = ["train", "sentiment", "--csv", str(f), "--embed", "8", "--hidden", "8", "--steps",
            "2", "--no-progress", "--out", str(tmp_path / "run")]  # fmt: skip
    start = time.perf_counter()
    assert main(argv) == 0
    title = (tmp_path / "run" / "report.md").read_text().splitlines()[0]
    reported = int(re.search(r"\(training (\d+) s\)", title).group(1))
    assert reported <= called[0] - start + 1, title  # the 5 s sleep came after it


@pytest.mark.parametrize("cell,layers", [("lstm", 2), ("gru", 1), ("transformer", 2)])
def test_discriminative_groups_hold_every_parameter_once_by_depth(cell, layers):
    from lstm.models.classifier import discriminative_groups, layer_groups

    model = build_classifier(ClassifierConfig(vocab_size=30, cell=cell, num_layers=layers,
                                              embed_size=8, hidden_size=8, num_heads=2))  # fmt: skip
    groups = layer_groups(model)
    assert len(groups) == layers + 2
    ids = [id(p) for g in groups for p in g]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # each exactly once
    assert any(p is model.embedding.weight for p in groups[0])
    assert any(p is model.head.weight for p in groups[-1])
    found = discriminative_groups(model, 2.0, gradual=True)
    assert [g["lr_scale"] for g in found] == [2.0 ** -(layers + 1 - k) for k in range(layers + 2)]
    assert [g["frozen_epochs"] for g in found] == list(range(layers + 1, -1, -1))
    assert all(g["frozen_epochs"] == 0 for g in discriminative_groups(model, 2.6))
    with pytest.raises(ValueError, match=r"lr_decay should be at least 1, got 0\.5"):
        discriminative_groups(model, 0.5)


def test_cli_gradual_unfreezing_trains_the_head_alone_in_the_first_epoch(tmp_path, capsys):
    """--gradual-unfreeze: one epoch of fine-tuning moves the head and leaves the recurrent layer
    and the embedding as the first run left them; --lr-decay below 1 is one clear line."""
    import pandas as pd

    from lstm.tasks.sentiment import load_sentiment_model

    data = toy_reviews(200)
    csv = tmp_path / "a.csv"
    pd.DataFrame({"text": data.texts, "label": data.labels}).to_csv(csv, index=False)
    sizes = ["--embed", "8", "--hidden", "8", "--no-progress", "--no-baseline"]
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["train", "sentiment", "--csv", str(csv), *sizes, "--steps", "3",
                 "--out", str(first)]) == 0  # fmt: skip
    assert main(["train", "sentiment", "--csv", str(csv), *sizes, "--epochs", "1", "--finetune",
                 str(first), "--gradual-unfreeze", "--lr-decay", "2.6",
                 "--out", str(second)]) == 0  # fmt: skip
    before, _, _ = load_sentiment_model(first)
    after, _, _ = load_sentiment_model(second)
    assert torch.equal(after.rnn.weight_hh_l0, before.rnn.weight_hh_l0)
    assert torch.equal(after.embedding.weight, before.embedding.weight)
    assert not torch.equal(after.head.weight, before.head.weight)
    capsys.readouterr()
    bad = ["train", "sentiment", "--csv", str(csv), *sizes, "--steps", "1", "--lr-decay", "0.5",
           "--out", str(tmp_path / "bad")]  # fmt: skip
    assert main(bad) == 2
    err = capsys.readouterr().err.strip()
    assert "--lr-decay: should be at least 1, got 0.5" in err and len(err.splitlines()) == 1


def test_long_texts_keep_their_head_and_tail():
    """encode_texts with head: a text longer than max_len keeps its first head tokens and its
    last max_len - head; shorter texts are whole; the run stores the cut so that predict and
    evaluate make the same one; a head beyond --max-len is one clear line."""
    from lstm.data.text import WordVocab

    vocab = WordVocab([f"w{i}" for i in range(20)])
    text = " ".join(f"w{i}" for i in range(10))

    def kept(head):
        return [vocab.tokens[i] for i in encode_texts(vocab, [text], 6, head)[0]]

    assert kept(None) == ["w0", "w1", "w2", "w3", "w4", "w5"]
    assert kept(2) == ["w0", "w1", "w6", "w7", "w8", "w9"]
    assert kept(0) == ["w4", "w5", "w6", "w7", "w8", "w9"]
    assert kept(6) == kept(None)
    assert len(encode_texts(vocab, ["w1 w2"], 6, 2)[0]) == 2
    with pytest.raises(ValueError, match="head should be between 0 and max_len"):
        encode_texts(vocab, [text], 6, 7)


def test_cli_keep_head_is_stored_and_checked(tmp_path, capsys):
    import pandas as pd

    from lstm.tasks.sentiment import load_sentiment_model

    data = toy_reviews(100)
    csv = tmp_path / "a.csv"
    pd.DataFrame({"text": data.texts, "label": data.labels}).to_csv(csv, index=False)
    common = ["train", "sentiment", "--csv", str(csv), "--embed", "8", "--hidden", "8",
              "--steps", "2", "--no-progress", "--no-baseline", "--max-len", "5"]  # fmt: skip
    assert main([*common, "--keep-head", "2", "--out", str(tmp_path / "run")]) == 0
    assert load_sentiment_model(tmp_path / "run")[2]["keep_head"] == 2
    assert main(["predict", str(tmp_path / "run"), "a great film"]) == 0
    capsys.readouterr()
    assert main([*common, "--keep-head", "6", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--keep-head: should be between 0 and --max-len (5), got 6" in err
    assert len(err.splitlines()) == 1


def test_cli_evaluate_an_ensemble_averages_the_class_probabilities(tmp_path, capsys):
    import pandas as pd

    from lstm.tasks.sentiment import load_sentiment_model, predict_texts, report_metrics

    data = toy_reviews(200)
    csv = tmp_path / "a.csv"
    pd.DataFrame({"text": data.texts, "label": data.labels}).to_csv(csv, index=False)
    runs = [tmp_path / "a", tmp_path / "b", tmp_path / "relabelled"]
    common = ["train", "sentiment", "--embed", "8", "--hidden", "8", "--steps", "20", "--lr",
              "1e-2", "--no-progress", "--no-baseline"]  # fmt: skip
    assert main([*common, "--csv", str(csv), "--out", str(runs[0])]) == 0
    assert main([*common, "--csv", str(csv), "--max-len", "6", "--keep-head", "2", "--seed", "1",
                 "--out", str(runs[1])]) == 0  # fmt: skip
    other = tmp_path / "b.csv"
    pd.DataFrame({"text": data.texts, "label": np.where(data.labels == 1, "pos", "neg")}).to_csv(
        other, index=False
    )
    assert main([*common, "--csv", str(other), "--out", str(runs[2])]) == 0
    probs = []
    for run in runs[:2]:
        model, vocab, meta = load_sentiment_model(run)
        probs.append(predict_texts(model, vocab, data.texts, meta["max_len"], meta["keep_head"]))
    assert not np.allclose(probs[0], probs[1])
    expected = report_metrics(data.labels, ((probs[0] + probs[1]) / 2).argmax(1), 2)
    capsys.readouterr()
    # --out need not exist (a bug: it had to)
    assert main(["evaluate", str(runs[0]), "--csv", str(csv), "--ensemble", str(runs[1]),
                 "--out", str(tmp_path / "new" / "dir")]) == 0  # fmt: skip
    assert (tmp_path / "new" / "dir" / "confusion-evaluate.png").exists()
    out = capsys.readouterr().out
    assert f"ensemble of 2 classifiers: 200 texts, accuracy {expected['accuracy']:.2%}" in out
    assert main(["evaluate", str(runs[0]), "--csv", str(csv), "--ensemble", str(runs[2])]) == 2
    err = capsys.readouterr().err.strip()
    assert "--ensemble" in err and "labels" in err and len(err.splitlines()) == 1


def test_word2vec_embedding_places_words_of_the_same_contexts_together():
    """Synonyms that share every context end nearer each other than words of opposite contexts;
    the known rows are standardized, unknown words keep a random row, and one seed gives one
    result."""
    pytest.importorskip("gensim")
    rng = np.random.default_rng(0)
    texts = []
    for _ in range(300):
        good, bad = rng.choice(["great", "superb"], 2), rng.choice(["awful", "dull"], 2)
        texts.append(f"i loved it , a {good[0]} film with {good[1]} acting , so happy .")
        texts.append(f"i hated it , an {bad[0]} mess with {bad[1]} lines , so sad .")
    vocab = build_vocab([*texts, "neverseen neverseen"])
    w = word2vec_embedding(vocab, texts, 16, epochs=20, seed=3)
    assert w.shape == (len(vocab), 16) and torch.isfinite(w).all()
    cos = torch.nn.functional.cosine_similarity
    i = vocab.index
    assert cos(w[i["great"]], w[i["superb"]], 0) > cos(w[i["great"]], w[i["awful"]], 0) + 0.2
    known = w[[i[t] for t in vocab.tokens[1:] if t not in ("neverseen", "\n")]]  # in the texts
    assert known.mean(0).abs().max() < 1e-4 and abs(float(known.std()) - 1) < 1e-3
    assert torch.equal(w, word2vec_embedding(vocab, texts, 16, epochs=20, seed=3))
    with pytest.raises(ValueError, match="dim and epochs"):
        word2vec_embedding(vocab, texts, 0)


def test_adversarial_loss_adds_the_loss_at_the_worst_first_order_perturbation():
    """In training: the plain loss plus the loss at x + ε·g/‖g‖ (one ε per review, checked by
    hand); that perturbation raises the loss more than a random one of the same norm; in
    evaluation it is the plain loss."""
    torch.manual_seed(0)
    config = ClassifierConfig(vocab_size=30, embed_size=8, hidden_size=6, dropout=0.0)
    model = RecurrentClassifier(config).double()
    tokens = torch.randint(1, 30, (4, 9))
    lengths = torch.tensor([9, 5, 7, 2])
    tokens[1, 5:], tokens[2, 7:], tokens[3, 2:] = 0, 0, 0
    labels = torch.tensor([0, 1, 1, 0])
    batch = (tokens, lengths, labels)
    eps = 0.5
    loss, _, n = adversarial_loss(eps)(model, batch, None)
    ce = torch.nn.functional.cross_entropy
    x = model.embedding(tokens).detach().requires_grad_()
    plain = ce(model.classify(x, tokens, lengths), labels)
    (g,) = torch.autograd.grad(plain, x)
    assert float(g[3, 2:].abs().max()) == 0  # padding has no gradient, so it is not moved
    r = eps * g / g.flatten(1).norm(dim=1)[:, None, None]
    assert torch.allclose(r.flatten(1).norm(dim=1), torch.full((4,), eps, dtype=torch.float64))
    worst = ce(model.classify(x + r, tokens, lengths), labels)
    assert n == 4 and torch.allclose(loss, plain + worst)
    noise = torch.randn_like(g) * (g != 0)
    noise = eps * noise / noise.flatten(1).norm(dim=1)[:, None, None]
    assert worst > ce(model.classify(x + noise, tokens, lengths), labels) > plain - 0.05
    assert worst > plain
    loss.backward()  # the sum trains every parameter
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    assert torch.allclose(adversarial_loss(eps)(model, batch, None)[0], plain)
    with pytest.raises(ValueError, match="epsilon should be positive"):
        adversarial_loss(0.0)


def test_cli_word2vec_and_adversarial_training(tmp_path, capsys):
    """--word2vec N starts the embedding from word2vec (the checkpoint's first update moves it
    from there, not from a random row) and --adversarial EPS trains on the sum of both losses;
    bad values and combinations are one-line errors."""
    pytest.importorskip("gensim")
    import pandas as pd

    from lstm.tasks.sentiment import load_sentiment_model

    data = toy_reviews(300)
    f = tmp_path / "r.csv"
    pd.DataFrame({"text": data.texts, "label": data.labels}).to_csv(f, index=False)
    base = ["train", "sentiment", "--csv", str(f), "--embed", "8", "--hidden", "8",
            "--no-progress", "--no-baseline"]  # fmt: skip
    out = tmp_path / "w2v"
    assert main([*base, "--steps", "1", "--lr", "1e-9", "--word2vec", "2", "--out", str(out)]) == 0
    assert "word2vec embedding: 2 passes" in capsys.readouterr().out
    model, vocab, _ = load_sentiment_model(out)
    split = split_dataset(data)
    start = word2vec_embedding(vocab, split.train.texts, 8, epochs=2, seed=0)
    assert torch.allclose(model.embedding.weight, start, atol=1e-6)  # lr 1e-9: not moved
    out = tmp_path / "adv"
    assert main([*base, "--steps", "4", "--adversarial", "1.0", "--out", str(out)]) == 0
    cases = [
        (["--adversarial", "-1"], "argument --adversarial: should be positive"),
        (["--adversarial", "1", "--cell", "transformer"], "for a recurrent cell"),
        (["--word2vec", "2", "--finetune", str(tmp_path / "adv")], "--word2vec starts"),
        (["--word2vec", "2", "--pretrain-minutes", "0.01"], "--word2vec starts"),
        (["--word2vec", "-1"], "argument --word2vec: should be at least 0"),
    ]
    capsys.readouterr()
    for extra, message in cases:
        assert main([*base, *extra, "--steps", "1", "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "bad" / "lm-forward").exists()  # refused before pre-training ran
