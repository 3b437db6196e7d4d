"""Parallel text for machine translation: two real tasks, tokenizers and batches.

**Numbers to words** (:func:`number_pairs`): ``"1987" -> "mil novecientos ochenta y siete"``
with ``num2words`` in any of its languages (Spanish by default). Numbers come from
``0 .. max_number`` (default 999,999), drawn by first choosing a digit count uniformly (so that
"7" is as common as "734,012"-sized numbers) and then a number of that many digits uniformly. A
fixed held-out set (validation and test, drawn with their own seed) never appears in training.

**Bible verses** (:func:`bible_pairs`): the King James Bible (``bible`` from Debian's
``bible-kjv``) and the Reina-Valera 1909 (``diatheke`` with ``sword-text-sparv``), aligned by
verse. Both print the 31,102 verses in the same order; the alignment is checked reference by
reference (book by its position in the canon, chapter and verse), and pairs with an empty side
are dropped. Strong's numbers (``<G5547>``, ``<H1234>``) and the references are stripped. The
aligned corpus is cached as TSV in ``~/.cache/lstm/translation`` (``$LSTM_CACHE_DIR``, as for
the CPU kernels, or the ``cache_dir`` argument override it). Whole books are held out
(:data:`BIBLE_TEST_BOOKS`, :data:`BIBLE_VAL_BOOKS`): a test verse's book was never seen in training.

A user's own parallel text: :func:`read_parallel_tsv` (``source<TAB>target`` per line).

**Tokenizers** (:class:`TranslationTokenizer`): built with the ``tokenizers`` library and trained
on the training part only, stored as the library's JSON (never pickle): ``bpe`` (sentencepiece-
style BPE on a ``▁``-marked metaspace, reversible), ``word`` (whitespace words) and ``char``.
Ids 0..3 are always ``<pad> <s> </s> <unk>``.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "BIBLE_TEST_BOOKS",
    "BIBLE_VAL_BOOKS",
    "BOS",
    "EOS",
    "PAD",
    "UNK",
    "PairBatches",
    "ParallelSplit",
    "TranslationDataError",
    "TranslationTokenizer",
    "align_verses",
    "bible_pairs",
    "bible_verses",
    "cache_dir",
    "number_pairs",
    "parse_diatheke",
    "parse_kjv",
    "read_parallel_tsv",
    "split_by_books",
]

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


class TranslationDataError(ValueError):
    """Parallel data that cannot be read or aligned, or a missing tool."""


@dataclass
class ParallelSplit:
    """Source and target sentences of train, validation and test, and what they are."""

    train: list[tuple[str, str]]
    val: list[tuple[str, str]]
    test: list[tuple[str, str]]
    source: dict  # JSON description (task, languages, split)


# --------------------------------------------------------------------------------------------
# Numbers to words
# --------------------------------------------------------------------------------------------


HELDOUT_SHARE = 0.1  # of the numbers of each digit count, at most


def _draw_number(rng: random.Random, max_number: int) -> int:
    """A digit count uniform over 1..digits(max_number), then a number of that many digits."""
    digits = rng.randint(1, len(str(max_number)))
    low = 0 if digits == 1 else 10 ** (digits - 1)
    return rng.randint(low, min(max_number, 10**digits - 1))


def number_pairs(
    lang: str = "es",
    max_number: int = 999_999,
    train_size: int = 100_000,
    val_size: int | None = None,
    test_size: int | None = None,
    seed: int = 0,
    heldout_seed: int = 1234,
) -> ParallelSplit:
    """``(digits, words)`` pairs: a fixed held-out set (``val_size + test_size`` distinct numbers
    drawn with ``heldout_seed``, the same for every run; by default 1,000 and 2,000, or a third and
    two thirds of what the range allows) and ``train_size`` training numbers drawn
    with ``seed`` from the rest (repeats allowed for small ranges, held-out numbers never).

    Both are drawn with a digit count uniform over 1..digits(max_number), but the held-out set
    takes at most :data:`HELDOUT_SHARE` (10%) of the numbers of any digit count: 0..9 and 10..99
    hold the words everything else is made of, and holding most of them out would test words
    that training never showed (with the defaults the held-out set holds 1 one-digit number, 9
    two-digit numbers, 90 three-digit numbers and the rest spread over four to six digits)."""
    try:
        from num2words import num2words
    except ImportError:
        raise TranslationDataError(
            "the numbers task needs num2words: pip install 'lstm[translate]'"
        ) from None
    if max_number < 9:
        raise ValueError(f"max_number should be at least 9, got {max_number}")
    digits = len(str(max_number))
    bucket = {
        d: min(max_number, 10**d - 1) - (0 if d == 1 else 10 ** (d - 1)) + 1
        for d in range(1, digits + 1)
    }
    cap = {d: int(HELDOUT_SHARE * size) for d, size in bucket.items()}
    room = sum(cap.values())
    if val_size is None:
        val_size = min(1000, room // 3)
    if test_size is None:
        test_size = min(2000, room - val_size)
    for name, value in (
        ("train_size", train_size),
        ("val_size", val_size),
        ("test_size", test_size),
    ):
        if value < 1:
            raise ValueError(f"{name} should be at least 1, got {value}")
    if val_size + test_size > sum(cap.values()):
        raise ValueError(
            f"val_size + test_size ({val_size + test_size}) should be at most "
            f"{sum(cap.values())}: {HELDOUT_SHARE:.0%} of the numbers of each digit count in "
            f"0..{max_number}"
        )
    try:
        num2words(1, lang=lang)
    except NotImplementedError:
        raise ValueError(f"lang {lang!r} is not a language num2words knows") from None

    rng = random.Random(heldout_seed)
    heldout: list[int] = []
    seen: set[int] = set()
    taken = dict.fromkeys(bucket, 0)
    while len(heldout) < val_size + test_size:
        n = _draw_number(rng, max_number)
        d = len(str(n))
        if n not in seen and taken[d] < cap[d]:
            seen.add(n)
            heldout.append(n)
            taken[d] += 1
    rng.shuffle(heldout)  # validation and test alike
    rng = random.Random(seed)
    train = []
    while len(train) < train_size:
        n = _draw_number(rng, max_number)
        if n not in seen:
            train.append(n)

    def pairs(numbers: list[int]) -> list[tuple[str, str]]:
        return [(str(n), num2words(n, lang=lang)) for n in numbers]

    return ParallelSplit(
        pairs(train),
        pairs(heldout[:val_size]),
        pairs(heldout[val_size:]),
        {
            "task": "numbers",
            "lang": lang,
            "max_number": max_number,
            "train_size": train_size,
            "val_size": val_size,
            "test_size": test_size,
            "seed": seed,
            "heldout_seed": heldout_seed,
        },
    )


# --------------------------------------------------------------------------------------------
# The Bible: King James and Reina-Valera 1909
# --------------------------------------------------------------------------------------------

# Whole books held out (KJV names; the 66 books in canonical order are BOOKS).
BOOKS = (
    "Genesis Exodus Leviticus Numbers Deuteronomy Joshua Judges Ruth 1Samuel 2Samuel 1Kings "
    "2Kings 1Chronicles 2Chronicles Ezra Nehemiah Esther Job Psalms Proverbs Ecclesiastes "
    "SongOfSolomon Isaiah Jeremiah Lamentations Ezekiel Daniel Hosea Joel Amos Obadiah Jonah Micah "
    "Nahum Habakkuk Zephaniah Haggai Zechariah Malachi Matthew Mark Luke John Acts Romans "
    "1Corinthians 2Corinthians Galatians Ephesians Philippians Colossians 1Thessalonians "
    "2Thessalonians 1Timothy 2Timothy Titus Philemon Hebrews James 1Peter 2Peter 1John 2John "
    "3John Jude Revelation"
).split()
BIBLE_TEST_BOOKS = ("Ruth", "Jonah", "Mark", "Philippians", "James")
BIBLE_VAL_BOOKS = ("Joel", "Titus", "1John")

KJV_COMMAND = ["bible", "-f", "gen1:1-rev22:21"]
RV_COMMAND = [
    "diatheke",
    "-b",
    "spaRV1909eb",
    "-f",
    "plain",
    "-k",
    "Genesis 1:1-Revelation of John 22:21",
]
_KJV_LINE = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+) ?(.*)$")
_DIATHEKE_LINE = re.compile(r"^(.+?) (\d+):(\d+): ?(.*)$")
_STRONGS = re.compile(r"\s*<[GH]\d+>")


@dataclass
class Verse:
    book: str  # as the tool names it
    chapter: int
    verse: int
    text: str


def _clean(text: str) -> str:
    return " ".join(_STRONGS.sub("", text).split())


def parse_kjv(text: str) -> list[Verse]:
    """The output of ``bible -f gen1:1-rev22:21`` (``Ge1:1 In the beginning ...``, one verse a
    line) as verses."""
    verses = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _KJV_LINE.match(line)
        if m is None:
            raise TranslationDataError(f"KJV line {number} has no verse reference: {line[:60]!r}")
        verses.append(Verse(m[1], int(m[2]), int(m[3]), _clean(m[4])))
    return verses


def parse_diatheke(text: str) -> list[Verse]:
    """The output of ``diatheke -f plain`` (``Genesis 1:1: EN el principio ...``; the last line
    names the module) as verses, Strong's numbers stripped."""
    verses = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or re.fullmatch(r"\s*\(\w+\)\s*", line):
            continue
        m = _DIATHEKE_LINE.match(line)
        if m is None:
            raise TranslationDataError(
                f"diatheke line {number} has no verse reference: {line[:60]!r}"
            )
        verses.append(Verse(m[1], int(m[2]), int(m[3]), _clean(m[4])))
    return verses


def _book_ordinals(verses: list[Verse]) -> list[int]:
    ordinals, names = [], []
    for v in verses:
        if not names or names[-1] != v.book:
            if v.book in names:
                raise TranslationDataError(f"book {v.book!r} appears twice, not in one run")
            names.append(v.book)
        ordinals.append(len(names) - 1)
    return ordinals


def align_verses(
    english: list[Verse], spanish: list[Verse], books: Sequence[str] = BOOKS
) -> list[tuple[str, int, int, str, str]]:
    """``(book, chapter, verse, english, spanish)`` for every verse, checked reference by
    reference: the same count, the same book (by its position in each text's order of books),
    chapter and verse on every line. ``books`` names the books in order (the canon's 66 by
    default). Pairs with an empty side are dropped."""
    if len(english) != len(spanish):
        raise TranslationDataError(
            f"the English text has {len(english)} verses and the Spanish {len(spanish)}: "
            "they cannot be aligned"
        )
    en_books, es_books = _book_ordinals(english), _book_ordinals(spanish)
    if en_books and en_books[-1] >= len(books):
        raise TranslationDataError(f"{en_books[-1] + 1} books, but only {len(books)} names")
    out = []
    for k, (e, s, be, bs) in enumerate(zip(english, spanish, en_books, es_books)):
        if (be, e.chapter, e.verse) != (bs, s.chapter, s.verse):
            raise TranslationDataError(
                f"verse {k + 1} is misaligned: English {e.book} {e.chapter}:{e.verse}, "
                f"Spanish {s.book} {s.chapter}:{s.verse}"
            )
        if e.text and s.text:
            out.append((books[be], e.chapter, e.verse, e.text, s.text))
    return out


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """Where the aligned corpus is cached: ``path``, else ``$LSTM_CACHE_DIR/translation``, else
    ``~/.cache/lstm/translation``."""
    if path is not None:
        return Path(path)
    root = os.environ.get("LSTM_CACHE_DIR")
    return Path(root) / "translation" if root else Path.home() / ".cache" / "lstm" / "translation"


def _run_tool(command: list[str], package: str) -> str:
    if shutil.which(command[0]) is None:
        raise TranslationDataError(
            f"{command[0]!r} is not installed: the Bible corpus needs the Debian packages "
            f"{package} (apt-get install -y bible-kjv diatheke sword-text-sparv)"
        )
    done = subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise TranslationDataError(
            f"{' '.join(command)!r} failed (exit {done.returncode}): {done.stderr.strip()[:200]}"
            f" (is {package} installed?)"
        )
    return done.stdout


def bible_verses(cache: str | os.PathLike | None = None) -> list[tuple[str, int, int, str, str]]:
    """The aligned verses ``(book, chapter, verse, english, spanish)``, from the cache or built
    with ``bible`` and ``diatheke`` (then cached, written atomically)."""
    from lstm.checkpoint import atomic_write_text

    path = cache_dir(cache) / "bible-kjv-rv1909.tsv"
    if path.is_file():
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            book, chapter, verse, en, es = line.split("\t")
            rows.append((book, int(chapter), int(verse), en, es))
        return rows
    english = parse_kjv(_run_tool(KJV_COMMAND, "bible-kjv"))
    spanish = parse_diatheke(_run_tool(RV_COMMAND, "diatheke and sword-text-sparv"))
    rows = align_verses(english, spanish)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(f"{b}\t{c}\t{v}\t{en}\t{es}\n" for b, c, v, en, es in rows))
    return rows


def split_by_books(
    rows: list[tuple[str, int, int, str, str]],
    test_books: Sequence[str] = BIBLE_TEST_BOOKS,
    val_books: Sequence[str] = BIBLE_VAL_BOOKS,
) -> ParallelSplit:
    """Whole books for test and validation, the rest for training."""
    for name in (*test_books, *val_books):
        if name not in BOOKS:
            raise ValueError(f"book {name!r} is not one of the 66: {', '.join(BOOKS)}")
    parts: dict[str, list] = {"train": [], "val": [], "test": []}
    for book, _, _, en, es in rows:
        part = "test" if book in test_books else "val" if book in val_books else "train"
        parts[part].append((en, es))
    return ParallelSplit(
        parts["train"],
        parts["val"],
        parts["test"],
        {
            "task": "bible",
            "source_lang": "en",
            "target_lang": "es",
            "test_books": list(test_books),
            "val_books": list(val_books),
        },
    )


def bible_pairs(cache: str | os.PathLike | None = None) -> ParallelSplit:
    """English -> Spanish verse pairs split by :data:`BIBLE_TEST_BOOKS`/:data:`BIBLE_VAL_BOOKS`."""
    return split_by_books(bible_verses(cache))


def read_parallel_tsv(path: str | os.PathLike, every: int = 20) -> ParallelSplit:
    """A user's ``source<TAB>target`` file (UTF-8, one pair a line, blank lines skipped): every
    ``every``-th pair goes to validation, the one after it to test, the rest to training."""
    from lstm.data.text import read_text_file

    pairs = []
    for number, line in enumerate(read_text_file(path, "parallel TSV file").splitlines(), 1):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) != 2 or not cells[0].strip() or not cells[1].strip():
            raise TranslationDataError(
                f"{str(path)!r} line {number}: expected 'source<TAB>target', got {line[:60]!r}"
            )
        pairs.append((cells[0].strip(), cells[1].strip()))
    if len(pairs) < 3:
        raise TranslationDataError(f"{str(path)!r} has {len(pairs)} pairs; need at least 3")
    parts: dict[int, list] = {0: [], 1: [], 2: []}
    for k, pair in enumerate(pairs):
        parts[1 if k % every == every - 1 else 2 if k % every == 0 and k else 0].append(pair)
    # A short file has no pair at those positions: take the held-out ones from the end of the
    # training part (moved, not copied: a pair is never both trained on and tested on).
    if not parts[1]:
        parts[1] = [parts[0].pop()]
    if not parts[2]:
        parts[2] = [parts[0].pop()]
    return ParallelSplit(parts[0], parts[1], parts[2], {"task": "tsv", "path": str(path)})


# --------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------

TOKENIZER_KINDS = ("bpe", "word", "char")


class TranslationTokenizer:
    """A ``tokenizers.Tokenizer`` with the four special ids first; see the module docstring."""

    def __init__(self, tokenizer, kind: str) -> None:  # a tokenizers.Tokenizer
        self.tokenizer = tokenizer
        self.kind = kind
        for k, name in enumerate(SPECIALS):
            if tokenizer.token_to_id(name) != k:
                raise ValueError(f"tokenizer: special token {name!r} should have id {k}")

    @classmethod
    def build(
        cls, texts: Sequence[str], kind: str = "bpe", vocab_size: int = 4000
    ) -> TranslationTokenizer:
        """Learns a tokenizer of ``kind`` (bpe | word | char) from ``texts``."""
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

        if kind not in TOKENIZER_KINDS:
            raise ValueError(f"kind should be one of {', '.join(TOKENIZER_KINDS)}, got {kind!r}")
        if vocab_size < len(SPECIALS) + 1:
            raise ValueError(f"vocab_size should be at least 5, got {vocab_size}")
        if not texts:
            raise ValueError("a tokenizer needs at least one training text")
        if kind == "bpe":
            tok = Tokenizer(models.BPE(unk_token="<unk>"))
            tok.pre_tokenizer = pre_tokenizers.Metaspace()
            tok.decoder = decoders.Metaspace()
            trainer = trainers.BpeTrainer(
                vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False
            )
        else:
            tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
            if kind == "word":
                tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
            else:
                tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
                tok.decoder = decoders.Fuse()
            trainer = trainers.WordLevelTrainer(
                vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False
            )
        tok.train_from_iterator(list(texts), trainer)
        return cls(tok, kind)

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no ``<s>``/``</s>``)."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """Text of ``ids``, special tokens dropped."""
        if torch.is_tensor(ids):
            ids = ids.tolist()
        return self.tokenizer.decode([int(i) for i in ids if int(i) >= UNK])  # no pad, <s>, </s>

    def tokens(self, text: str) -> list[str]:
        """The token strings of ``text`` (for plots)."""
        return self.tokenizer.encode(text, add_special_tokens=False).tokens

    def id_to_token(self, i: int) -> str:
        return self.tokenizer.id_to_token(int(i)) or "<unk>"

    def to_json(self) -> dict:
        return {"kind": self.kind, "tokenizer": self.tokenizer.to_str()}

    @classmethod
    def from_json(cls, data: dict) -> TranslationTokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(data["tokenizer"]), data["kind"])


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


def pad(sequences: Sequence[Sequence[int]], value: int = PAD) -> Tensor:
    """``(B, T)`` int64, right-padded with ``value``."""
    T = max(1, max((len(s) for s in sequences), default=1))
    out = torch.full((len(sequences), T), value, dtype=torch.long)
    for k, s in enumerate(sequences):
        out[k, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
    return out


class PairBatches:
    """Batches of encoded pairs for :func:`lstm.training.fit`: ``(src (B, S), src_lengths (B,),
    tgt_in (B, T), tgt_out (B, T))``, batch first, padded with ``PAD``; ``tgt_in`` is ``<s> y``,
    ``tgt_out`` is ``y </s>`` (teacher forcing). Pairs are sorted by length into buckets of
    ``batch_size`` so little is padding; with ``shuffle`` the pairs within 50-batch windows and
    the batch order are shuffled each epoch (seeded by ``seed`` and the epoch). Sequences longer
    than ``max_len`` tokens are cut."""

    def __init__(
        self,
        src: Sequence[Sequence[int]],
        tgt: Sequence[Sequence[int]],
        batch_size: int = 64,
        shuffle: bool = True,
        seed: int = 0,
        max_len: int | None = None,
    ) -> None:
        if len(src) != len(tgt):
            raise ValueError(f"{len(src)} sources but {len(tgt)} targets")
        if not len(src):
            raise ValueError("no pairs to batch")
        if batch_size < 1:
            raise ValueError(f"batch_size should be at least 1, got {batch_size}")
        self.src = [list(s)[:max_len] or [UNK] for s in src]  # [:None] keeps all
        self.tgt = [list(t)[:max_len] for t in tgt]
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.epoch = 0

    def __len__(self) -> int:
        return -(-len(self.src) // self.batch_size)

    def order(self) -> list[list[int]]:
        """The indices of each batch, in the order of this epoch."""
        n = len(self.src)
        rng = random.Random(self.seed * 1000 + self.epoch)
        index = list(range(n))
        if self.shuffle:
            rng.shuffle(index)
        window = self.batch_size * 50
        chunks = []
        for start in range(0, n, window):
            part = sorted(
                index[start : start + window], key=lambda i: (len(self.src[i]), len(self.tgt[i]))
            )
            chunks += [part[k : k + self.batch_size] for k in range(0, len(part), self.batch_size)]
        if self.shuffle:
            rng.shuffle(chunks)
        return chunks

    def batch(self, index: Sequence[int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        src = pad([self.src[i] for i in index])
        lengths = torch.tensor([len(self.src[i]) for i in index])
        tgt_in = pad([[BOS, *self.tgt[i]] for i in index])
        tgt_out = pad([[*self.tgt[i], EOS] for i in index])
        return src, lengths, tgt_in, tgt_out

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
        for index in self.order():
            yield self.batch(index)
        self.epoch += 1
