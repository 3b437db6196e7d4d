"""Sentiment analysis end to end: data -> vocabulary -> (language-model pre-training) -> classifier
-> test accuracy, F1 and confusion matrix beside a TF-IDF baseline; ``lstm train sentiment``,
``lstm predict`` and ``lstm evaluate`` are thin shells over these functions.

The baseline (:func:`tfidf_baseline`): scikit-learn's ``TfidfVectorizer(ngram_range=(1, 2),
sublinear_tf=True)`` and ``LogisticRegression``, fitted on the whole training part (train and
validation) of the fixed split of :func:`lstm.data.sentiment.split_dataset`.

Pre-training (:func:`pretrain_language_model`): the engine's recurrent language model
(:class:`lstm.models.language_model.RecurrentLM`, trained by :func:`lstm.training.fit` with
truncated BPTT, an adaptive softmax over large vocabularies) on unlabelled text, read forwards,
and optionally a second one on the same tokens reversed;
:func:`lstm.models.classifier.init_from_language_model` then starts the classifier's forward (and
backward) direction from them. The text is the classifier's own training texts, or a larger
corpus (:func:`pretraining_corpus`: the IMDB training reviews for the short Rotten Tomatoes
sentences, as ULMFiT pre-trains on more text than the task has), and the language models of one
run can start the classifiers of others over the same vocabulary (:func:`load_pretrained`).

Fine-tuning (:func:`finetune_start`): a classifier trained on one data set starts another's
training (``lstm train sentiment --finetune RUN``): the IMDB reviews' classifier, say, for the
Rotten Tomatoes sentences. Its vocabulary gains the new training texts' words it lacks, and the
head is kept when the labels are the same.

Two cheaper starts and a regularizer (``--word2vec``, ``--adversarial``): the embedding can start
from skip-gram word2vec vectors of the training texts
(:func:`lstm.data.sentiment.word2vec_embedding`), and training can add the loss at the
worst small perturbation of each review's embeddings
(:func:`lstm.models.classifier.adversarial_loss`, Miyato et al. 2017).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lstm import checkpoint as ckpt
from lstm import metrics
from lstm.data.sentiment import (
    LabelledText,
    LengthBatches,
    SentimentDataError,
    Split,
    build_vocab,
    clean_text,
    encode_texts,
    load_aclimdb,
    load_csv,
    load_movie_reviews,
    split_dataset,
    word2vec_embedding,
)
from lstm.data.text import WordVocab, vocab_from_json
from lstm.models.classifier import (
    ClassifierConfig,
    adversarial_loss,
    build_classifier,
    classification_loss,
    discriminative_groups,
    init_from_language_model,
    predict_proba,
)
from lstm.viz import plot_confusion

__all__ = [
    "ensemble_proba",
    "finetune_start",
    "load_ensemble",
    "load_pretrained",
    "load_sentiment_data",
    "load_sentiment_model",
    "plot_confusion",
    "predict_texts",
    "pretrain_language_model",
    "pretraining_corpus",
    "report_metrics",
    "tfidf_baseline",
    "train_classifier",
]

TASK = "sentiment"
DATASET_NAMES = {"imdb": "IMDB", "rt": "Rotten Tomatoes"}  # --dataset -> the name reports use


def load_sentiment_data(
    dataset: str | None = "imdb",
    csv: str | None = None,
    text_col: str = "text",
    label_col: str = "label",
    aclimdb: str | None = None,
) -> tuple[LabelledText, dict]:
    """The labelled texts and a JSON description of where they came from: the package's
    ``imdb``/``rt``, a CSV, or an ``aclImdb/`` folder (train and test parts pooled, then split
    like the others)."""
    if csv:
        return load_csv(csv, text_col, label_col), {"csv": str(csv), "text_col": text_col,
                                                   "label_col": label_col}  # fmt: skip
    if aclimdb:
        return load_aclimdb(aclimdb), {"aclimdb": str(aclimdb)}
    return load_movie_reviews(dataset), {"dataset": dataset}


# --------------------------------------------------------------------------------------------
# Metrics, plots and the baseline
# --------------------------------------------------------------------------------------------


def report_metrics(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> dict:
    """Accuracy, F1 (positive class for two classes, macro otherwise) and the confusion matrix."""
    return {
        "accuracy": metrics.accuracy(labels, predictions),
        "f1": metrics.f1_score(labels, predictions, num_classes),
        "confusion": metrics.confusion_matrix(labels, predictions, num_classes).tolist(),
        "count": len(labels),
    }


TFIDF_C_GRID = (1.0, 3.0, 10.0, 30.0, 100.0)


def tfidf_baseline(
    split: Split,
    C: float | None = None,
    grid: tuple[float, ...] = TFIDF_C_GRID,
    extra: LabelledText | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """TF-IDF of words and word pairs (sublinear tf) and logistic regression. The inverse
    regularization ``C`` is chosen on the validation part from ``grid`` (fitted on train) unless
    given; the final model is fitted on train and validation. ``extra`` labelled texts (with the
    same label names) join every fit: the baseline's side of a classifier fine-tuned from another
    data set's (the IMDB reviews for Rotten Tomatoes). Returns the test part's predicted labels,
    class probabilities and the ``C`` used."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    if extra is not None and list(extra.label_names) != list(split.train.label_names):
        raise ValueError(f"the extra texts' labels {extra.label_names} are not the data's "
                         f"{split.train.label_names}")  # fmt: skip

    def vectorize(train: LabelledText):  # once per training set: every C shares it
        texts, labels = list(train.texts), np.asarray(train.labels)
        if extra is not None:
            texts, labels = texts + list(extra.texts), np.concatenate([labels, extra.labels])
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        return vectorizer, vectorizer.fit_transform(texts), labels

    if C is None:
        if not len(split.val):
            raise ValueError("choosing C needs a validation part; give C")
        vectorizer, x, labels = vectorize(split.train)
        x_val = vectorizer.transform(split.val.texts)
        scores = [metrics.accuracy(split.val.labels,
                                   LogisticRegression(C=c, max_iter=2000).fit(x, labels).predict(x_val))
                  for c in grid]  # fmt: skip
        C = grid[int(np.argmax(scores))]
    vectorizer, x, labels = vectorize(split.train_full)
    model = LogisticRegression(C=C, max_iter=2000).fit(x, labels)
    probs = model.predict_proba(vectorizer.transform(split.test.texts))
    return probs.argmax(1), probs, float(C)


# --------------------------------------------------------------------------------------------
# Language-model pre-training
# --------------------------------------------------------------------------------------------


def review_stream(vocab: WordVocab, texts: list[str], reverse: bool = False) -> torch.Tensor:
    """The token ids of ``texts`` one after another, each ended by a newline token (a review
    boundary); the whole stream reversed for a backward language model."""
    newline = vocab.index.get("\n", 0)
    parts = []
    for t in texts:
        parts.append(vocab.encode(clean_text(t).replace("\n", " ")))
        parts.append(torch.tensor([newline]))
    ids = torch.cat(parts)
    return ids.flip(0) if reverse else ids


def pretraining_corpus(corpus: str, split: Split) -> list[str]:
    """The texts a language model pre-trains on, always including the classifier's training
    texts: ``"train"`` (those alone), ``"imdb"`` (with the training part of the fixed IMDB split),
    or the path of a UTF-8 text file with one document per line. The validation and test texts of
    the fixed splits are never part of it."""
    from lstm.data.text import read_text_file

    own = list(split.train.texts)
    if corpus == "train":
        return own
    if corpus == "imdb":
        imdb = list(split_dataset(load_movie_reviews("imdb")).train.texts)
        return imdb if set(own) <= set(imdb) else [*imdb, *own]
    text = read_text_file(corpus, "pre-training corpus")
    return [line for line in text.split("\n") if line.strip()] + own


def load_pretrained(run_dir: str | os.PathLike) -> tuple[WordVocab, dict, dict | None, dict]:
    """The language models of an earlier ``lstm train sentiment --pretrain-minutes`` run
    (``run_dir/lm-forward`` and, if present, ``run_dir/lm-backward``): ``(vocabulary, forward
    state dict, backward state dict or None, the forward model's config)``. Safetensors and JSON
    only."""
    run_dir = Path(run_dir)
    _, meta, forward = ckpt.load_task_checkpoint(run_dir / "lm-forward", "lm", "a language model")
    backward = None
    if (run_dir / "lm-backward").exists():
        backward = ckpt.load_task_checkpoint(run_dir / "lm-backward", "lm", "a language model")[2]
    vocab = vocab_from_json(meta["vocab"])
    if not isinstance(vocab, WordVocab):
        raise ckpt.CheckpointError(f"{str(run_dir)!r} holds no word-level language model")
    return vocab, forward, backward, meta["model"]


def finetune_start(
    run_dir: str | os.PathLike,
    train_texts: list[str],
    label_names: list[str],
    min_count: int = 2,
) -> tuple[WordVocab, ClassifierConfig, dict[str, torch.Tensor], list[str]]:
    """Where fine-tuning the classifier of an earlier ``lstm train sentiment`` run (its ``BEST``
    checkpoint, else ``LATEST``) on new data starts: ``(vocabulary, config, weights, notes)``.

    - The vocabulary is the run's, then the words of ``train_texts`` seen at least ``min_count``
      times that it lacks; their embedding rows start at the mean of the run's rows (ULMFiT's
      choice), so a new word starts as an average word, not as noise.
    - The head is kept when ``label_names`` are the run's (same classes, same order); otherwise it
      is left out of the weights and starts as initialized.
    - ``notes`` says, in words, what was kept and what was added."""
    _, meta, weights = ckpt.load_task_checkpoint(run_dir, TASK, "a sentiment classifier")
    vocab = vocab_from_json(meta["vocab"])
    new_words = [w for w in build_vocab(train_texts, min_count, None).tokens[1:]
                 if w not in vocab.index]  # fmt: skip
    old_size = len(vocab)
    vocab = WordVocab(vocab.tokens[1:] + new_words)
    table = weights["embedding.weight"]
    if table.shape[0] != old_size:
        raise ckpt.CheckpointError(f"{str(run_dir)!r}: its embedding has {table.shape[0]} rows, "
                                   f"its vocabulary {old_size} words")  # fmt: skip
    grown = table.mean(0, keepdim=True).expand(len(new_words), -1)
    weights = {**weights, "embedding.weight": torch.cat([table, grown])}
    config = ClassifierConfig.from_json(meta["model"])
    config.vocab_size, config.num_classes = len(vocab), len(label_names)
    notes = [
        f"{old_size:,} words from the run, {len(new_words):,} new ones from the training texts"
    ]
    if list(meta.get("label_names") or []) == list(label_names):
        notes.append(f"head kept (labels {', '.join(label_names)})")
    else:
        weights = {k: v for k, v in weights.items() if not k.startswith("head.")}
        notes.append(f"new head: the run's labels {meta.get('label_names')} are not "
                     f"{list(label_names)}")  # fmt: skip
    return vocab, config, weights, notes


def pretrain_language_model(
    vocab: WordVocab,
    texts: list[str],
    classifier_config: ClassifierConfig,
    train_config,
    *,
    reverse: bool = False,
    batch_size: int = 32,
    seq_len: int = 70,
    dropout: float = 0.2,
    out_dir: str | os.PathLike | None = None,
    val_texts: list[str] | None = None,
    embedding: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Trains the engine's recurrent language model (the classifier's cell, sizes and
    vocabulary) on ``texts`` (reversed with ``reverse``) and returns its state dict. Given
    ``embedding`` (the forward model's, for the backward model), it reads that embedding and
    leaves it as it is, so that both directions of the classifier can share it (as ELMo's two
    directions share their token representation)."""
    from lstm.data.text import StreamBatches
    from lstm.models.language_model import (
        LMConfig,
        RecurrentLM,
        adaptive_cutoffs,
        evaluate_stream,
        lm_loss,
    )
    from lstm.training import fit

    c = classifier_config
    lm_config = LMConfig(vocab_size=len(vocab), cell=c.cell, embed_size=c.embed_size,
                         hidden_size=c.hidden_size, num_layers=c.num_layers, dropout=dropout,
                         backend=c.backend, adaptive_cutoffs=adaptive_cutoffs(len(vocab)))  # fmt: skip
    torch.manual_seed(train_config.seed)
    model = RecurrentLM(lm_config)
    if embedding is not None:
        model.embedding.weight.data.copy_(embedding)
        model.embedding.weight.requires_grad_(False)
    ids = review_stream(vocab, texts, reverse)
    batches = StreamBatches(ids, batch_size, seq_len)
    eval_fn = None
    if val_texts:
        val_ids = review_stream(vocab, val_texts, reverse)
        rows = max(1, min(8, (len(val_ids) - 1) // 64))

        def eval_fn(m):
            return {"loss": evaluate_stream(m, val_ids, rows, seq_len)["loss"]}

    fit(model, batches, lm_loss, train_config, eval_fn=eval_fn, out_dir=out_dir,
        extra={"task": "lm", "model": lm_config.to_json(), "vocab": vocab.to_json(),
               "data": {"source": "sentiment reviews", "reverse": reverse}})  # fmt: skip
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------------------------
# Training and evaluation of the classifier
# --------------------------------------------------------------------------------------------


@dataclass
class SentimentRun:
    """What :func:`train_classifier` returns."""

    model: torch.nn.Module
    vocab: WordVocab
    config: ClassifierConfig
    val: dict
    test: dict
    fit_result: object


def _batches(vocab, part: LabelledText, max_len, batch_size, shuffle, seed=0, head=None):
    return LengthBatches(encode_texts(vocab, part.texts, max_len, head), part.labels, batch_size,
                         shuffle, seed)  # fmt: skip


def train_classifier(
    split: Split,
    config: ClassifierConfig,
    train_config,
    *,
    vocab: WordVocab | None = None,
    max_len: int | None = 400,
    batch_size: int = 32,
    pretrained: tuple[dict, dict | None] | None = None,
    initial: dict[str, torch.Tensor] | None = None,
    out_dir: str | os.PathLike | None = None,
    source: dict | None = None,
    min_count: int = 2,
    max_vocab: int | None = 30000,
    lr_decay: float = 1.0,
    gradual_unfreeze: bool = False,
    keep_head: int | None = None,
    embedding: torch.Tensor | None = None,
    adversarial: float = 0.0,
) -> SentimentRun:
    """Trains a classifier on ``split.train`` with :func:`lstm.training.fit`, keeping the weights
    of the best validation loss, and scores it on validation and test. ``pretrained`` is the
    state dicts of a forward and (optionally) backward language model built over ``vocab``;
    ``initial`` the classifier's own starting weights (all, or all but the head: see
    :func:`finetune_start`). ``lr_decay`` and ``gradual_unfreeze`` are ULMFiT's discriminative
    learning rates and gradual unfreezing (:func:`lstm.models.classifier.discriminative_groups`);
    the defaults train every layer at one rate from the start. A text longer than ``max_len``
    keeps its first ``max_len`` tokens, or its first ``keep_head`` and its last ``max_len -
    keep_head`` (:func:`lstm.data.sentiment.encode_texts`). ``embedding`` ``(len(vocab),
    embed_size)`` replaces the embedding's random start (word2vec's vectors:
    :func:`lstm.data.sentiment.word2vec_embedding`). ``adversarial`` > 0 trains with adversarial
    perturbations of that norm on each review's embeddings
    (:func:`lstm.models.classifier.adversarial_loss`)."""
    from lstm.training import fit

    vocab = vocab or build_vocab(split.train.texts, min_count, max_vocab)
    if config.vocab_size != len(vocab):
        raise ValueError(f"config.vocab_size {config.vocab_size} != the vocabulary's {len(vocab)}")
    torch.manual_seed(train_config.seed)
    model = build_classifier(config)
    if pretrained is not None:
        init_from_language_model(model, *pretrained)
    if embedding is not None:
        if tuple(embedding.shape) != tuple(model.embedding.weight.shape):
            raise ValueError(f"embedding: expected shape {tuple(model.embedding.weight.shape)}, "
                             f"got {tuple(embedding.shape)}")  # fmt: skip
        with torch.no_grad():
            model.embedding.weight.copy_(embedding)
    if initial is not None:
        keys = model.load_state_dict(initial, strict=False)
        missing = [k for k in keys.missing_keys if not k.startswith("head.")]
        if missing or keys.unexpected_keys:
            raise ValueError(f"the starting weights lack {missing[:3]} and have "
                             f"{keys.unexpected_keys[:3]}: not this classifier's")  # fmt: skip
    train_batches = _batches(vocab, split.train, max_len, batch_size, True, train_config.seed,
                             keep_head)  # fmt: skip
    val_batches = _batches(vocab, split.val if len(split.val) else split.train, max_len, 64, False,
                           head=keep_head)  # fmt: skip

    def eval_fn(m):
        probs, labels, loss = predict_proba(m, val_batches)
        acc = metrics.accuracy(labels.numpy(), probs.argmax(1).numpy())
        return {"loss": loss, "accuracy": acc}

    extra = {"task": TASK, "model": config.to_json(), "vocab": vocab.to_json(),
             "label_names": split.train.label_names, "max_len": max_len, "keep_head": keep_head,
             "data": source or {}, "adversarial": adversarial}  # fmt: skip
    groups = None
    if lr_decay != 1.0 or gradual_unfreeze:
        groups = discriminative_groups(model, lr_decay, gradual_unfreeze)
    loss_fn = adversarial_loss(adversarial) if adversarial else classification_loss
    result = fit(model, train_batches, loss_fn, train_config, eval_fn=eval_fn,
                 out_dir=out_dir, extra=extra, restore_best=True, param_groups=groups)  # fmt: skip
    K = config.num_classes
    scores = {}
    for name, part in (("val", split.val), ("test", split.test)):
        if len(part) == 0:
            continue
        batches = _batches(vocab, part, max_len, 64, False, head=keep_head)
        probs, labels, loss = predict_proba(model, batches)
        scores[name] = {**report_metrics(labels.numpy(), probs.argmax(1).numpy(), K), "loss": loss}
    if out_dir is not None:
        ckpt.write_final(out_dir, model, extra, train_config)
    return SentimentRun(model, vocab, config, scores.get("val", {}), scores.get("test", {}), result)


def load_sentiment_model(path: str | os.PathLike) -> tuple[torch.nn.Module, WordVocab, dict]:
    """A trained classifier, its vocabulary and checkpoint config (the run's ``BEST`` checkpoint,
    else ``LATEST``)."""
    _, meta, weights = ckpt.load_task_checkpoint(path, TASK, "a sentiment classifier")
    model = build_classifier(ClassifierConfig.from_json(meta["model"]))
    model.load_state_dict(weights)
    model.eval()
    return model, vocab_from_json(meta["vocab"]), meta


@torch.no_grad()
def predict_texts(
    model, vocab, texts: list[str], max_len: int | None = 400, keep_head: int | None = None
) -> np.ndarray:
    """Class probabilities ``(N, K)`` of raw texts, in their order, each cut as in training
    (``max_len``, ``keep_head``: see :func:`train_classifier`)."""
    ids = encode_texts(vocab, texts, max_len, keep_head)
    batches = LengthBatches(ids, np.zeros(len(texts), np.int64), 64, shuffle=False)
    order = np.concatenate(batches._order())
    probs, _, _ = predict_proba(model, batches)
    out = np.empty_like(probs.numpy())
    out[order] = probs.numpy()
    return out


def write_report(out_dir, rows: dict[str, dict], title: str, label_names: list[str]) -> str:
    """``report.md`` / ``report.json`` (a table of accuracy and F1 per method) and a confusion
    matrix PNG per method; returns the markdown."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"{title}\n", "| method | accuracy | F1 | test examples |", "|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['accuracy']:.2%} | {r['f1']:.4f} | {r['count']:,} |")
        slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
        plot_confusion(r["confusion"], label_names, out / f"confusion-{slug}.png", name)
    md = "\n".join(lines) + "\n"
    ckpt.atomic_write_text(out / "report.md", md)
    ckpt.atomic_write_text(out / "report.json", json.dumps(rows, indent=2) + "\n")
    return md


# --------------------------------------------------------------------------------------------
# Command line (registered in lstm.cli)
# --------------------------------------------------------------------------------------------


def add_train_arguments(p) -> None:
    """Options of ``lstm train sentiment``."""
    from lstm.cli import add_training_arguments, dropout_rate, positive_int

    d = p.add_argument_group("data")
    d.add_argument("--dataset", choices=["imdb", "rt"], default="imdb",
                   help="IMDB reviews or Rotten Tomatoes sentences (movie-reviews package)")  # fmt: skip
    d.add_argument("--csv", help="your own CSV instead of --dataset")
    d.add_argument("--text-col", default="text", help="with --csv: the text column")
    d.add_argument("--label-col", default="label", help="with --csv: the label column")
    d.add_argument("--aclimdb", help="an aclImdb/ folder instead of --dataset")
    d.add_argument("--limit", type=positive_int, help="use only this many training examples")
    d.add_argument("--max-len", type=positive_int, default=400, help="tokens kept per text")
    d.add_argument("--keep-head", type=int, metavar="N",
                   help="a text longer than --max-len keeps its first N tokens and its last "
                        "max-len - N (default: its first max-len)")  # fmt: skip
    d.add_argument("--min-count", type=positive_int, default=2)
    d.add_argument("--max-vocab", type=positive_int, default=30000)
    d.add_argument("--batch", type=positive_int, default=32)
    m = p.add_argument_group("model")
    m.add_argument("--cell", choices=["lstm", "gru", "rnn", "transformer"], default="lstm")
    m.add_argument("--backend", default="auto")
    m.add_argument("--embed", type=positive_int, default=128)
    m.add_argument("--hidden", type=positive_int, default=128, help="per direction")
    m.add_argument("--layers", type=positive_int, default=1)
    m.add_argument("--unidirectional", action="store_true")
    m.add_argument("--pooling", choices=["last", "max", "mean", "concat"], default="concat")
    m.add_argument("--dropout", type=dropout_rate, default=0.3)
    m.add_argument("--word-dropout", type=dropout_rate, default=0.0)
    m.add_argument("--heads", type=positive_int, default=4, help="transformer")
    pre = p.add_argument_group("language-model pre-training")
    pre.add_argument("--pretrain-minutes", type=float, default=0.0,
                     help="minutes of LM pre-training per direction (0: none)")  # fmt: skip
    pre.add_argument("--pretrain-lr", type=float, default=2e-3)
    pre.add_argument("--pretrain-seq-len", type=positive_int, default=70)
    pre.add_argument(
        "--pretrain-corpus",
        default="train",
        help="what the language models read: train (the training texts), imdb (the "
        "IMDB training reviews), or a UTF-8 file with one document per line",
    )
    pre.add_argument("--word2vec", type=int, default=0, metavar="EPOCHS",
                     help="start the embedding from skip-gram word2vec vectors trained for "
                          "EPOCHS passes over the training texts (gensim; 0: random)")  # fmt: skip
    pre.add_argument("--pretrained", metavar="RUN",
                     help="start from the language models (and vocabulary) of an earlier run "
                          "with --pretrain-minutes instead of training new ones")  # fmt: skip
    p.add_argument("--finetune", metavar="RUN",
                   help="start from the classifier of an earlier run (say, IMDB's for Rotten "
                        "Tomatoes): its weights and vocabulary, which gains the new words")  # fmt: skip
    p.add_argument("--no-baseline", action="store_true", help="skip the TF-IDF baseline")
    p.add_argument("--adversarial", type=float, default=0.0, metavar="EPSILON",
                   help="adversarial training: each review's embeddings also perturbed by EPSILON "
                        "(L2 norm over the review) against its gradient (Miyato et al. 2017)")  # fmt: skip
    f = p.add_argument_group("fine-tuning (ULMFiT)")
    f.add_argument("--lr-decay", type=float, default=1.0, metavar="FACTOR",
                   help="discriminative learning rates: each layer below the head trains at "
                        "the rate of the one above divided by FACTOR (ULMFiT: 2.6; default 1: "
                        "one rate)")  # fmt: skip
    f.add_argument("--gradual-unfreeze", action="store_true",
                   help="train the head alone for the first epoch, then thaw one layer more each "
                        "epoch, down to the embedding")  # fmt: skip
    add_training_arguments(p)
    p.set_defaults(out="runs/sentiment", optimizer="adamw", lr=2e-3, weight_decay=0.01)


def run_train(args) -> int:
    """``lstm train sentiment``."""
    from lstm.cli import train_config_from
    from lstm.training import TrainConfig

    if args.steps is None and args.minutes is None and args.epochs is None:
        args.epochs = 3
    if args.keep_head is not None and not 0 <= args.keep_head <= args.max_len:
        raise ValueError(f"argument --keep-head: should be between 0 and --max-len "
                         f"({args.max_len}), got {args.keep_head}")  # fmt: skip
    if args.adversarial < 0 or (args.adversarial and args.cell == "transformer"):
        raise ValueError(f"argument --adversarial: should be positive, for a recurrent cell; got "
                         f"{args.adversarial:g} with --cell {args.cell}")  # fmt: skip
    if not args.lr_decay >= 1:
        raise ValueError(f"argument --lr-decay: should be at least 1, got {args.lr_decay:g}")
    if args.threads:
        torch.set_num_threads(args.threads)
    data, source = load_sentiment_data(args.dataset, args.csv, args.text_col, args.label_col,
                                       args.aclimdb)  # fmt: skip
    split = split_dataset(data)
    if args.limit:
        split.train = split.train.subset(range(min(args.limit, len(split.train))))
    if args.pretrained and args.pretrain_minutes > 0:
        raise ValueError("give --pretrained RUN or --pretrain-minutes, not both")
    if args.word2vec < 0:
        raise ValueError(f"argument --word2vec: should be at least 0, got {args.word2vec}")
    if args.word2vec and (args.finetune or args.pretrained or args.pretrain_minutes > 0):
        # checked before any pre-training runs, not after its minutes
        raise ValueError("--word2vec starts the embedding of a new classifier: give it without "
                         "--finetune, --pretrained or --pretrain-minutes")  # fmt: skip
    if args.finetune and (args.pretrained or args.pretrain_minutes > 0):
        raise ValueError("--finetune RUN starts from a trained classifier: give it without "
                         "--pretrained or --pretrain-minutes")  # fmt: skip
    corpus, lm_states, initial = None, None, None
    if args.finetune:
        vocab, start, initial, notes = finetune_start(args.finetune, split.train.texts,
                                                      data.label_names, args.min_count)  # fmt: skip
        asked = (("cell", args.cell), ("embed_size", args.embed), ("hidden_size", args.hidden),
                 ("num_layers", args.layers), ("bidirectional", not args.unidirectional),
                 ("pooling", args.pooling))  # fmt: skip
        asked += (("num_heads", args.heads),) if args.cell == "transformer" else ()
        _check_sizes("--finetune", args.finetune, dataclasses.asdict(start), asked)
        print(f"[sentiment] fine-tuning the classifier of {args.finetune}: {'; '.join(notes)}")
    elif args.pretrained:
        vocab, forward, backward, lm_model = load_pretrained(args.pretrained)
        # a one-directional classifier reads forwards: it takes the forward model only
        lm_states = [forward] + (
            [backward] if backward is not None and not args.unidirectional else []
        )
        _check_sizes("--pretrained", args.pretrained, lm_model,
                     (("embed_size", args.embed), ("hidden_size", args.hidden),
                      ("num_layers", args.layers), ("cell", args.cell)))  # fmt: skip
    elif args.pretrain_minutes > 0:
        corpus = pretraining_corpus(args.pretrain_corpus, split)
        vocab = build_vocab(corpus, args.min_count, args.max_vocab)  # it holds the train texts
    else:
        vocab = build_vocab(split.train.texts, args.min_count, args.max_vocab)
    if args.finetune:  # the run's architecture (checked above), this run's regularization
        config = dataclasses.replace(start, dropout=args.dropout, embed_dropout=args.word_dropout,
                                     backend=args.backend)  # fmt: skip
    else:
        config = ClassifierConfig(
            vocab_size=len(vocab), num_classes=len(data.label_names), cell=args.cell,
            embed_size=args.embed, hidden_size=args.hidden, num_layers=args.layers,
            bidirectional=not args.unidirectional, pooling=args.pooling, dropout=args.dropout,
            embed_dropout=args.word_dropout, backend=args.backend, num_heads=args.heads,
        )  # fmt: skip
    train_config = train_config_from(args)
    train_config.carry_state = False
    if train_config.eval_every is None:
        train_config.eval_every = max(1, len(split.train) // args.batch // 2)
    name = DATASET_NAMES.get(source.get("dataset"), "data")
    print(f"[sentiment] {name}: train {len(split.train):,}, validation {len(split.val):,}, "
          f"test {len(split.test):,}; vocabulary {len(vocab):,} words")  # fmt: skip
    out = Path(args.out)
    if corpus is not None:
        if args.cell == "transformer":
            raise ValueError("--pretrain-minutes works with the recurrent cells only")
        lm_states = []
        directions = (False, True) if config.bidirectional else (False,)
        for reverse in directions:
            lm_train = TrainConfig(minutes=args.pretrain_minutes, lr=args.pretrain_lr,
                                   optimizer="adamw", weight_decay=0.01, warmup_steps=100,
                                   eval_every=500, seed=args.seed, device=train_config.device,
                                   progress=train_config.progress)  # fmt: skip
            lm_dir = out / ("lm-backward" if reverse else "lm-forward")
            print(f"[sentiment] pre-training the {'backward' if reverse else 'forward'} language "
                  f"model for {args.pretrain_minutes:g} min on {len(corpus):,} texts "
                  f"-> {lm_dir}")  # fmt: skip
            lm_states.append(pretrain_language_model(
                vocab, corpus, config, lm_train, reverse=reverse,
                seq_len=args.pretrain_seq_len, out_dir=lm_dir, val_texts=split.val.texts[:500],
                embedding=lm_states[0]["embedding.weight"] if reverse else None,
            ))  # fmt: skip
    pretrained = None
    if lm_states:
        if config.bidirectional and len(lm_states) < 2:
            print("[sentiment] the language models hold no backward model: the classifier's "
                  "backward direction starts from random weights")  # fmt: skip
        pretrained = (lm_states[0], lm_states[1] if len(lm_states) > 1 else None)
    embedding = None
    if args.word2vec:
        t1 = time.perf_counter()
        embedding = word2vec_embedding(vocab, split.train.texts, args.embed, epochs=args.word2vec,
                                       seed=args.seed, workers=args.threads or 1)  # fmt: skip
        print(f"[sentiment] word2vec embedding: {args.word2vec} passes over the training texts "
              f"in {time.perf_counter() - t1:.0f} s")  # fmt: skip
    t0 = time.perf_counter()
    run = train_classifier(split, config, train_config, vocab=vocab, max_len=args.max_len,
                           batch_size=args.batch, pretrained=pretrained, initial=initial,
                           out_dir=out, source=source, lr_decay=args.lr_decay,
                           gradual_unfreeze=args.gradual_unfreeze,
                           keep_head=args.keep_head, embedding=embedding,
                           adversarial=args.adversarial)  # fmt: skip
    seconds = time.perf_counter() - t0  # the classifier's training and scoring, no baseline
    label = args.cell.upper() + (" (LM pre-trained)" if pretrained else "")
    label += f" (fine-tuned from {Path(args.finetune).name})" if initial else ""
    rows = {label: run.test}
    if not args.no_baseline:
        pred, _, C = tfidf_baseline(split)
        rows[f"TF-IDF + logistic regression (C={C:g})"] = report_metrics(
            split.test.labels, pred, config.num_classes
        )
        first = _finetune_data(args.finetune, source, data.label_names) if initial else None
        if first is not None:  # the fine-tuned classifier saw that data too: so does this one
            what, extra = first
            pred, _, C = tfidf_baseline(split, extra=extra)
            rows[f"TF-IDF + logistic regression, {what} added (C={C:g})"] = report_metrics(
                split.test.labels, pred, config.num_classes
            )
    md = write_report(out, rows, f"{name}: test part of the fixed 80/20 split "
                      f"(training {seconds:.0f} s)", data.label_names)  # fmt: skip
    print(md)
    print(f"[sentiment] checkpoint {out / 'checkpoints'}; report {out / 'report.md'}")
    return 0


def _finetune_data(run_dir, source: dict, label_names: list[str]):
    """``(name, texts)``: the labelled texts the classifier of ``run_dir`` was trained on (the
    training and validation parts of its data's fixed split), for the baseline of a run
    fine-tuned from it; ``None`` when they are unknown, this run's own, or labelled otherwise."""
    meta = ckpt.load_json(ckpt.find_checkpoint(run_dir, "BEST") / ckpt.CONFIG)  # no tensors
    d = meta.get("data") or {}
    if not d or d == source:
        return None
    first, _ = load_sentiment_data(d.get("dataset"), d.get("csv"), d.get("text_col", "text"),
                                   d.get("label_col", "label"), d.get("aclimdb"))  # fmt: skip
    if list(first.label_names) != list(label_names):
        return None
    what = DATASET_NAMES.get(d.get("dataset"))
    what = f"{what} training part" if what else "the first run's training part"
    return what, split_dataset(first).train_full


def _check_sizes(option: str, run: str, stored: dict, asked) -> None:
    """A clear error when a size this run asks for (``asked``: ``(key, value)`` pairs) is not the
    one ``stored`` in the run that ``option`` starts it from."""
    for key, given in asked:
        if stored[key] != given:
            raise ValueError(f"{option} {run!r} has {key} {stored[key]!r}, this run asks for "
                             f"{given!r}")  # fmt: skip


def add_predict_arguments(p) -> None:
    """Options of ``lstm predict``."""
    p.add_argument("checkpoint", help="a run directory of `lstm train sentiment` or a checkpoint")
    p.add_argument("text", nargs="+", help="one or more texts to classify")


def run_predict(args) -> int:
    """``lstm predict CHECKPOINT "text" ...``: the label and its probability for each text."""
    texts = [t for t in args.text]
    if any(not t.strip() for t in texts):
        raise ValueError("a text to classify is empty")
    model, vocab, meta = load_sentiment_model(args.checkpoint)
    probs = ensemble_proba([(model, vocab, meta)], texts)
    names = meta.get("label_names") or [str(i) for i in range(probs.shape[1])]
    for text, p in zip(texts, probs):
        k = int(p.argmax())
        short = text if len(text) <= 60 else text[:57] + "..."
        print(f"{names[k]}\t{p[k]:.3f}\t{short}")
    return 0


def load_ensemble(
    runs: Sequence[str | os.PathLike],
) -> list[tuple[torch.nn.Module, WordVocab, dict]]:
    """The classifiers of ``runs`` (:func:`load_sentiment_model` each), checked to share the
    first one's labels."""
    loaded = [load_sentiment_model(run) for run in runs]
    labels = loaded[0][2].get("label_names")
    for run, (_, _, meta) in zip(runs[1:], loaded[1:]):
        if meta.get("label_names") != labels:
            raise SentimentDataError(f"--ensemble {run}: its labels {meta.get('label_names')} "
                                     f"are not the checkpoint's {labels}")  # fmt: skip
    return loaded


def ensemble_proba(
    classifiers: Sequence[tuple[torch.nn.Module, WordVocab, dict]], texts: list[str]
) -> np.ndarray:
    """The mean class probabilities ``(N, K)`` of ``classifiers`` (from :func:`load_ensemble`, or
    one from :func:`load_sentiment_model`) on raw texts, each reading them with its own
    vocabulary and cut (its run's ``max_len`` and ``keep_head``)."""
    total = 0
    for model, vocab, meta in classifiers:
        total = total + predict_texts(model, vocab, texts, meta.get("max_len"),
                                      meta.get("keep_head"))  # fmt: skip
    return total / len(classifiers)


def evaluate_checkpoint(args) -> int:
    """``lstm evaluate`` of a sentiment checkpoint: its data's test part, or ``--csv``; with
    ``--ensemble RUN ...``, of the mean of its class probabilities and those runs'."""
    members = getattr(args, "ensemble", None) or []
    classifiers = load_ensemble([args.checkpoint, *members])
    meta = classifiers[0][2]
    if getattr(args, "csv", None):
        part = load_csv(args.csv, args.text_col, args.label_col)
        what = args.csv
    else:
        d = meta.get("data", {})
        data, _ = load_sentiment_data(d.get("dataset"), d.get("csv"), d.get("text_col", "text"),
                                      d.get("label_col", "label"), d.get("aclimdb"))  # fmt: skip
        part = getattr(split_dataset(data), args.split)
        what = f"{d.get('dataset') or d.get('csv') or d.get('aclimdb')} ({args.split} part)"
    probs = ensemble_proba(classifiers, part.texts)
    if members:
        what += f", ensemble of {len(classifiers)} classifiers"
    K = probs.shape[1]
    if part.labels.max() >= K:
        raise SentimentDataError(f"{what} has labels beyond the model's {K} classes")
    r = report_metrics(part.labels, probs.argmax(1), K)
    names = meta.get("label_names") or [str(i) for i in range(K)]
    out = Path(getattr(args, "out", None) or Path(args.checkpoint))
    png = plot_confusion(r["confusion"], names, out / "confusion-evaluate.png", what)
    print(f"{what}: {r['count']:,} texts, accuracy {r['accuracy']:.2%}, F1 {r['f1']:.4f}")
    print(f"confusion (rows true, columns predicted; {', '.join(names)}): {r['confusion']}")
    print(f"plot: {png}")
    return 0
