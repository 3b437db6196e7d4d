"""The task generators against the definitions of Hochreiter and Schmidhuber (1997) and the
copy task, and the paper's correctness criteria."""

from __future__ import annotations

import pytest
import torch

from lstm.data import tasks


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("T", [11, 30, 100, 1000])
def test_adding_problem_follows_the_paper(T):
    n = 2560
    task = tasks.adding_problem(n, T, _g())
    x, lengths, y = task.inputs, task.lengths, task.targets
    first, second = task.info["first"], task.info["second"]
    assert x.shape == (n, T + T // 10, 2)
    assert lengths.min() >= T and lengths.max() <= T + T // 10
    assert lengths.unique().numel() > 1 if T >= 30 else True  # really random lengths
    values, markers = x[..., 0], x[..., 1]
    valid = torch.arange(x.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
    assert values[valid].min() >= -1 and values[valid].max() <= 1
    assert torch.all(values[~valid] == 0) and torch.all(markers[~valid] == 0)
    # exactly two pairs marked 1.0: one of the first ten, one of the first T/2 - 1, distinct
    assert torch.all((markers == 1).sum(1) == 2)
    assert torch.all(first <= 9) and torch.all(second <= T // 2 - 2) and torch.all(first != second)
    rows = torch.arange(n)
    assert torch.all(markers[rows, first] == 1) and torch.all(markers[rows, second] == 1)
    # first and last pair marked -1 unless the first pair is itself marked
    pair0_marked = (first == 0) | (second == 0)
    assert torch.all(markers[rows[~pair0_marked], 0] == -1)
    assert torch.all(markers[rows, lengths - 1] == -1)
    # all other markers zero
    assert int((markers == -1).sum()) == int((~pair0_marked).sum()) + n
    # target formula; a marked first pair counts as zero ("X1 is set to zero")
    assert torch.all(values[rows[pair0_marked], 0] == 0)
    assert torch.allclose(y, 0.5 + (values[rows, first] + values[rows, second]) / 4.0)
    assert 0.0 <= y.min() and y.max() <= 1.0
    # the second marker ranges over its window
    assert int(second.max()) >= (T // 2 - 2) - 1 and int(second.min()) <= 1


def test_adding_problem_is_seeded_and_validates_T():
    a, b = tasks.adding_problem(8, 50, _g(3)), tasks.adding_problem(8, 50, _g(3))
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    with pytest.raises(ValueError, match=r"T should be an integer of at least 11.*got 10"):
        tasks.adding_problem(1, 10)


def test_adding_criterion_counts_errors_of_004_or_more():
    target = torch.tensor([0.5, 0.5, 0.5, 0.5])
    pred = torch.tensor([0.5, 0.539, 0.541, 0.45])
    assert tasks.adding_wrong(pred, target) == 2


@pytest.mark.parametrize("variant,windows", [("6a", [(10, 20), (50, 60)]),
                                             ("6b", [(10, 20), (33, 43), (66, 76)])])  # fmt: skip
def test_temporal_order_follows_the_paper(variant, windows):
    n = 2000
    task = tasks.temporal_order(n, variant, _g())
    x, lengths, labels = task.inputs, task.lengths, task.targets
    sym = x.argmax(-1)
    valid = torch.arange(110).unsqueeze(0) < lengths.unsqueeze(1)
    assert torch.all(x.sum(-1)[valid] == 1) and torch.all(x.sum(-1)[~valid] == 0)
    assert lengths.min() >= 100 and lengths.max() <= 110
    S = tasks.TEMPORAL_ORDER_SYMBOLS
    rows = torch.arange(n)
    assert torch.all(sym[:, 0] == S.index("E"))
    assert torch.all(sym[rows, lengths - 1] == S.index("B"))
    pos = task.info["positions"]
    xy = (sym == S.index("X")) | (sym == S.index("Y"))
    assert torch.all(xy.sum(1) == len(windows))  # X/Y only at the relevant positions
    label = torch.zeros(n, dtype=torch.long)
    for k, (low, high) in enumerate(windows):
        assert pos[:, k].min() == low - 1 and pos[:, k].max() == high - 1  # 1-based in the paper
        is_y = (sym[rows, pos[:, k]] == S.index("Y")).long()
        label = label * 2 + is_y
    assert torch.equal(label, labels)
    assert labels.unique().numel() == 2 ** len(windows)
    others = valid & ~xy
    others[:, 0] = False
    others[rows, lengths - 1] = False
    assert torch.all(sym[others] <= 3)  # distractors a-d


def test_temporal_order_criterion_uses_all_output_units():
    labels = torch.tensor([0, 1])
    outputs = torch.tensor([[0.75, 0.1, 0.1, 0.1], [0.29, 0.71, 0.0, 0.0]])
    assert tasks.temporal_order_wrong(outputs, labels) == 0  # every unit within 0.3 of its target
    outputs[1, 0] = 0.31  # one unit of the second sequence off by 0.31
    assert tasks.temporal_order_wrong(outputs, labels) == 1
    with pytest.raises(ValueError, match="variant should be '6a' or '6b'"):
        tasks.temporal_order(1, "6c")


def _reber_legal(string: str) -> bool:
    """An independent acceptor of the Reber grammar, to check the generator."""
    graph = {1: {"T": 2, "P": 3}, 2: {"S": 2, "X": 4}, 3: {"T": 3, "V": 5},
             4: {"X": 3, "S": 6}, 5: {"P": 4, "V": 6}, 6: {"E": 0}}  # fmt: skip
    if not string.startswith("B"):
        return False
    state = 1
    for ch in string[1:]:
        if state == 0 or ch not in graph[state]:
            return False
        state = graph[state][ch]
    return state == 0


def test_embedded_reber_strings_and_targets():
    n = 300
    task = tasks.embedded_reber(n, _g())
    R = tasks.REBER_SYMBOLS
    for row, s in enumerate(task.info["strings"]):
        assert s[0] == "B" and s[-1] == "E" and s[1] in "TP" and s[-2] == s[1]
        assert _reber_legal(s[2:-2]), s
        L = int(task.lengths[row])
        assert L == len(s) - 1
        inputs = "".join(R[i] for i in task.inputs[row, :L].argmax(-1))
        assert inputs == s[:-1]
        # the next symbol is always among the legal ones; the long-range step has exactly one
        for t in range(L):
            assert task.targets[row, t, R.index(s[t + 1])] == 1
        assert task.targets[row, L - 1].sum() == 1 and task.targets[row, L - 2, R.index(s[1])] == 1
        assert task.targets[row, 0, R.index("T")] == 1 and task.targets[row, 0, R.index("P")] == 1
    both = {s[1] for s in task.info["strings"]}
    assert both == {"T", "P"}


def test_reber_criterion():
    task = tasks.embedded_reber(4, _g(1))
    perfect = task.targets * 0.9 + 0.05
    assert tasks.reber_wrong(perfect, task.targets, task.lengths) == 0
    perfect[2, int(task.lengths[2]) - 2] = 0.5  # second-to-last: the long-range symbol missed
    assert tasks.reber_wrong(perfect, task.targets, task.lengths) == 1


def test_copy_task_layout():
    task = tasks.copy_task(5, delay=20, generator=_g(), n_symbols=8, length=10)
    seq = task.inputs.argmax(-1)
    assert task.inputs.shape == (5, 40, 10)
    assert torch.equal(seq[:, :10], task.info["data"])
    assert (
        torch.all(seq[:, 10:29] == 8) and torch.all(seq[:, 29] == 9) and torch.all(seq[:, 30:] == 8)
    )
    assert torch.all(task.targets[:, :30] == 8) and torch.equal(
        task.targets[:, 30:], task.info["data"]
    )


def test_pixel_sequences_and_permutation():
    images = torch.rand(3, 4, 4)
    plain = tasks.pixel_sequences(images, torch.tensor([0, 1, 2]))
    perm = tasks.pixel_sequences(images, torch.tensor([0, 1, 2]), permute=True, seed=5)
    assert plain.inputs.shape == (3, 16, 1)
    assert torch.equal(plain.inputs[:, perm.info["permutation"]], perm.inputs)
    assert not torch.equal(plain.inputs, perm.inputs)
    again = tasks.pixel_sequences(images, torch.tensor([0, 1, 2]), permute=True, seed=5)
    assert torch.equal(again.inputs, perm.inputs)  # one fixed permutation per seed


def test_fashion_mnist_loader_reads_idx_files(tmp_path):
    import gzip

    import numpy as np

    imgs = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"\0" * 16 + imgs.tobytes())
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\0" * 8 + bytes([3, 7]))
    task = tasks.load_fashion_mnist_sequences(tmp_path, "test")
    assert task.inputs.shape == (2, 784, 1)
    assert task.targets.tolist() == [3, 7]
    assert torch.allclose(
        task.inputs[0, :, 0] * 255, torch.tensor(imgs[0].reshape(-1), dtype=torch.float32)
    )
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        tasks.load_fashion_mnist_sequences(tmp_path, "train")
