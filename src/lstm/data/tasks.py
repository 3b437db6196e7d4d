"""The long-time-lag tasks of the literature, generated exactly as defined.

Hochreiter and Schmidhuber (1997), "Long Short-Term Memory", Neural Computation 9(8):

- **Adding problem** (their Experiment 4): pairs (value in [-1, 1], marker in {-1, 0, 1}); length a
  random integer in [T, T + T/10]; one of the first ten pairs is marked (X1), then one of the first
  T/2 - 1 still unmarked pairs (X2); the first and last pairs carry marker -1 (X1 is set to zero if
  the first pair got marked); target 0.5 + (X1 + X2)/4 at the end; a sequence is right when the
  absolute error is below 0.04. They test on 2,560 sequences.
- **Temporal order** (Experiment 6a / 6b): one-hot symbols over {a, b, c, d, X, Y, B, E}: E first,
  B (the trigger) last, random distractors a-d between, except two (6a) or three (6b) positions that
  hold X or Y; length in [100, 110]; 6a: t1 in [10, 20], t2 in [50, 60], classes by the order (XX,
  XY, YX, YY); 6b: t1 in [10, 20], t2 in [33, 43], t3 in [66, 76], eight classes. A sequence is
  right when the final absolute error of all output units is below 0.3.
- **Embedded Reber grammar** (Experiment 1): next-symbol prediction where the second and the
  second-to-last symbols (T or P) must match across the whole embedded string.

Plus the **copy task** (Arjovsky, Shah and Bengio 2016) and sequential / permuted-pixel image
classification (Le, Jaitly and Hinton 2015), over scikit-learn's 8x8 digits (64 steps) or
Fashion-MNIST (784 steps).

Every generator takes a :class:`torch.Generator`, so a seed fixes the data, and returns
batch-first padded tensors with their lengths.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "REBER_SYMBOLS",
    "TEMPORAL_ORDER_SYMBOLS",
    "SequenceTask",
    "adding_problem",
    "adding_wrong",
    "copy_task",
    "embedded_reber",
    "load_digits_sequences",
    "load_fashion_mnist_sequences",
    "pixel_sequences",
    "reber_wrong",
    "temporal_order",
    "temporal_order_wrong",
]


@dataclass
class SequenceTask:
    """A batch of a task: ``inputs (N, T_max, I)`` zero-padded, ``lengths (N,)``, ``targets``
    (shape per task), and ``info`` with anything a test or a plot may want (marker positions)."""

    inputs: Tensor
    lengths: Tensor
    targets: Tensor
    info: dict


def _randint(low: int, high: int, size: tuple[int, ...], g: torch.Generator) -> Tensor:
    """Uniform integers in the closed interval [low, high]."""
    return torch.randint(low, high + 1, size, generator=g)


# --------------------------------------------------------------------------------------------
# Adding problem
# --------------------------------------------------------------------------------------------


def adding_problem(n: int, T: int, generator: torch.Generator | None = None) -> SequenceTask:
    """``n`` sequences of the adding problem with minimal length ``T`` (see the module docstring).

    Returns inputs ``(n, T + T//10, 2)`` (value, marker), lengths in ``[T, T + T//10]`` and
    targets ``(n,)`` = ``0.5 + (X1 + X2) / 4``. ``info`` holds the marked positions ``first``,
    ``second`` (0-based) and ``x1``, ``x2``.
    """
    if not isinstance(T, int) or T < 11:
        # the first marker is one of the first ten pairs, which must not reach the last pair
        raise ValueError(f"T should be an integer of at least 11 for the adding problem, got {T!r}")
    g = generator or torch.Generator().manual_seed(0)
    t_max = T + T // 10
    lengths = _randint(T, t_max, (n,), g)
    values = torch.rand(n, t_max, generator=g) * 2 - 1  # uniform in [-1, 1)
    markers = torch.zeros(n, t_max)
    first = _randint(0, 9, (n,), g)  # one of the first ten pairs
    # One of the first T/2 - 1 pairs that is still unmarked: draw among the free slots, then step
    # over `first` when it lies inside that window.
    slots = T // 2 - 1
    inside = first < slots
    free = torch.where(inside, slots - 1, slots)
    second = (torch.rand(n, generator=g) * free).long()
    second = second + (inside & (second >= first)).long()
    rows = torch.arange(n)
    # "X1 is set to zero in the rare case where the first pair got marked": the first pair's value
    # is zeroed whenever it is marked (also when it is drawn as the second marker, a case the paper
    # does not name), so the target below reads it as zero.
    values[rows[(first == 0) | (second == 0)], 0] = 0.0
    markers[rows, 0] = -1.0
    markers[rows, lengths - 1] = -1.0
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x1, x2 = values[rows, first], values[rows, second]
    inputs = torch.stack([values, markers], dim=-1)
    inputs[torch.arange(t_max).unsqueeze(0) >= lengths.unsqueeze(1)] = 0.0  # padding
    targets = 0.5 + (x1 + x2) / 4.0
    return SequenceTask(inputs, lengths, targets, dict(first=first, second=second, x1=x1, x2=x2))


def adding_wrong(predictions: Tensor, targets: Tensor) -> int:
    """How many sequences are wrong by the paper's criterion: absolute error >= 0.04."""
    return int(((predictions.reshape(-1) - targets.reshape(-1)).abs() >= 0.04).sum())


# --------------------------------------------------------------------------------------------
# Temporal order
# --------------------------------------------------------------------------------------------

TEMPORAL_ORDER_SYMBOLS = ("a", "b", "c", "d", "X", "Y", "B", "E")
_TEMPORAL_ORDER_POSITIONS = {  # 1-based positions, closed intervals, as in the paper
    "6a": ((10, 20), (50, 60)),
    "6b": ((10, 20), (33, 43), (66, 76)),
}


def temporal_order(
    n: int, variant: str = "6a", generator: torch.Generator | None = None
) -> SequenceTask:
    """``n`` sequences of the temporal order task ``"6a"`` (4 classes) or ``"6b"`` (8 classes).

    Inputs are one-hot ``(n, 110, 8)`` over :data:`TEMPORAL_ORDER_SYMBOLS`; targets are class
    indices: the X/Y string read as binary with X = 0 (6a: XX=0 "Q", XY=1 "R", YX=2 "S",
    YY=3 "U"; 6b: XXX=0 "Q" ... YYY=7 "C"). ``info["positions"]`` holds the 0-based positions.
    """
    if variant not in _TEMPORAL_ORDER_POSITIONS:
        raise ValueError(f"variant should be '6a' or '6b', got {variant!r}")
    g = generator or torch.Generator().manual_seed(0)
    windows = _TEMPORAL_ORDER_POSITIONS[variant]
    t_max = 110
    lengths = _randint(100, 110, (n,), g)
    symbols = _randint(0, 3, (n, t_max), g)  # distractors a, b, c, d
    rows = torch.arange(n)
    symbols[rows, 0] = TEMPORAL_ORDER_SYMBOLS.index("E")
    symbols[rows, lengths - 1] = TEMPORAL_ORDER_SYMBOLS.index("B")  # the trigger symbol
    positions, label = [], torch.zeros(n, dtype=torch.long)
    for low, high in windows:
        pos = _randint(low, high, (n,), g) - 1  # paper positions are 1-based
        is_y = _randint(0, 1, (n,), g)
        symbols[rows, pos] = TEMPORAL_ORDER_SYMBOLS.index("X") + is_y
        label = label * 2 + is_y
        positions.append(pos)
    inputs = torch.nn.functional.one_hot(symbols, len(TEMPORAL_ORDER_SYMBOLS)).float()
    inputs[torch.arange(t_max).unsqueeze(0) >= lengths.unsqueeze(1)] = 0.0
    return SequenceTask(inputs, lengths, label, dict(positions=torch.stack(positions, 1)))


def temporal_order_wrong(outputs: Tensor, labels: Tensor) -> int:
    """Wrong sequences by the paper's criterion: the final absolute error of *all* output units
    (activations in [0, 1] against the one-hot target) must be below 0.3."""
    target = torch.nn.functional.one_hot(labels, outputs.shape[-1]).to(outputs.dtype)
    return int(((outputs - target).abs() >= 0.3).any(dim=-1).sum())


# --------------------------------------------------------------------------------------------
# Embedded Reber grammar
# --------------------------------------------------------------------------------------------

REBER_SYMBOLS = ("B", "T", "P", "S", "X", "V", "E")
# The Reber grammar as a graph: state -> [(symbol, next state)], each taken with probability 1/2.
_REBER = {
    1: [("T", 2), ("P", 3)],
    2: [("S", 2), ("X", 4)],
    3: [("T", 3), ("V", 5)],
    4: [("X", 3), ("S", 6)],
    5: [("P", 4), ("V", 6)],
    6: [("E", None)],
}


def _reber_string(g: torch.Generator) -> tuple[list[str], list[set[str]]]:
    """One Reber string (without B) and, for each symbol, the set of legal next symbols."""
    state, out, legal_next = 1, [], []
    while state is not None:
        options = _REBER[state]
        legal_next.append({s for s, _ in options})
        symbol, state = options[int(torch.randint(len(options), (1,), generator=g))]
        out.append(symbol)
    return out, legal_next


def embedded_reber(n: int, generator: torch.Generator | None = None) -> SequenceTask:
    """``n`` strings of the embedded Reber grammar: ``B (T|P) <Reber string> (T|P) E`` with the two
    outer T/P equal. The task is next-symbol prediction: ``targets (n, T_max, 7)`` is the multi-hot
    set of legal next symbols after each input symbol (all of them are predictable but one: the
    symbol after the first B/T-or-P; only the second-to-last symbol needs the long-range memory).
    """
    g = generator or torch.Generator().manual_seed(0)
    strings, legal = [], []
    for _ in range(n):
        inner, inner_next = _reber_string(g)  # inner_next[k] = legal set for inner[k]
        outer = "T" if int(torch.randint(2, (1,), generator=g)) == 0 else "P"
        s = ["B", outer, "B", *inner, outer, "E"]
        # legal next symbol after each position of s (the last position, E, has none)
        nxt = [{"T", "P"}, {"B"}, *inner_next, {outer}, {"E"}]
        strings.append(s)
        legal.append(nxt)
    t_max = max(len(s) - 1 for s in strings)  # inputs are all symbols but the final E
    k = len(REBER_SYMBOLS)
    inputs = torch.zeros(n, t_max, k)
    targets = torch.zeros(n, t_max, k)
    lengths = torch.tensor([len(s) - 1 for s in strings])
    for row, (s, nxt) in enumerate(zip(strings, legal)):
        for t in range(len(s) - 1):
            inputs[row, t, REBER_SYMBOLS.index(s[t])] = 1.0
            for sym in nxt[t]:
                targets[row, t, REBER_SYMBOLS.index(sym)] = 1.0
    return SequenceTask(inputs, lengths, targets, dict(strings=["".join(s) for s in strings]))


def reber_wrong(outputs: Tensor, targets: Tensor, lengths: Tensor, threshold: float = 0.5) -> int:
    """Wrong strings: a string is right when at every step the outputs above ``threshold`` are
    exactly the legal next symbols."""
    predicted = outputs > threshold
    valid = torch.arange(outputs.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)  # (n, T)
    step_ok = (predicted == targets.bool()).all(dim=-1) | ~valid
    return int((~step_ok.all(dim=1)).sum())


# --------------------------------------------------------------------------------------------
# Copy task
# --------------------------------------------------------------------------------------------


def copy_task(
    n: int,
    delay: int,
    generator: torch.Generator | None = None,
    n_symbols: int = 8,
    length: int = 10,
) -> SequenceTask:
    """The copy task: ``length`` symbols from ``n_symbols`` categories, ``delay - 1`` blanks, a
    delimiter, then ``length`` blanks during which the symbols must be reproduced.

    Alphabet: ``0..n_symbols-1`` data, ``n_symbols`` blank, ``n_symbols + 1`` delimiter. Inputs are
    one-hot ``(n, delay + 2*length, n_symbols + 2)``; targets are class indices ``(n, T)``: blank
    everywhere except the last ``length`` steps. A memoryless model scores a cross-entropy of
    ``length * log(n_symbols) / (delay + 2*length)``.
    """
    g = generator or torch.Generator().manual_seed(0)
    blank, delim = n_symbols, n_symbols + 1
    T = delay + 2 * length
    data = _randint(0, n_symbols - 1, (n, length), g)
    seq = torch.full((n, T), blank, dtype=torch.long)
    seq[:, :length] = data
    seq[:, delay + length - 1] = delim
    targets = torch.full((n, T), blank, dtype=torch.long)
    targets[:, -length:] = data
    inputs = torch.nn.functional.one_hot(seq, n_symbols + 2).float()
    return SequenceTask(inputs, torch.full((n,), T), targets, dict(data=data))


# --------------------------------------------------------------------------------------------
# Sequential and permuted pixels
# --------------------------------------------------------------------------------------------


def pixel_sequences(
    images: Tensor, labels: Tensor, permute: bool = False, seed: int = 0
) -> SequenceTask:
    """Images ``(N, H, W)`` with values in [0, 1] read one pixel per step: inputs ``(N, H*W, 1)``.
    ``permute=True`` applies one fixed random permutation (from ``seed``) to the pixel order, which
    spreads local structure over long lags."""
    n = images.shape[0]
    x = images.reshape(n, -1, 1).float()
    perm = None
    if permute:
        perm = torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(seed))
        x = x[:, perm]
    return SequenceTask(x, torch.full((n,), x.shape[1]), labels.long(), dict(permutation=perm))


def load_digits_sequences(permute: bool = False, seed: int = 0) -> SequenceTask:
    """scikit-learn's 1,797 handwritten 8x8 digits as 64-step sequences (values scaled to [0, 1])."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32) / 16.0
    return pixel_sequences(images, torch.tensor(digits.target), permute, seed)


def load_fashion_mnist_sequences(
    directory: str | Path = "/usr/share/datasets/fashion-mnist",
    split: str = "train",
    permute: bool = False,
    seed: int = 0,
) -> SequenceTask:
    """Fashion-MNIST (Debian's ``dataset-fashion-mnist``) as 784-step sequences."""
    directory = Path(directory)
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"split should be 'train' or 'test', got {split!r}")
    images_file = directory / f"{prefix}-images-idx3-ubyte.gz"
    labels_file = directory / f"{prefix}-labels-idx1-ubyte.gz"
    for f in (images_file, labels_file):
        if not f.exists():
            raise FileNotFoundError(
                f"{f} not found: install Fashion-MNIST with 'apt-get install dataset-fashion-mnist'"
                " or pass directory="
            )
    import numpy as np

    images = np.frombuffer(gzip.open(images_file).read(), np.uint8, offset=16)
    labels = np.frombuffer(gzip.open(labels_file).read(), np.uint8, offset=8)
    images = torch.tensor(images.reshape(-1, 28, 28).copy(), dtype=torch.float32) / 255.0
    return pixel_sequences(images, torch.tensor(labels.copy()), permute, seed)
