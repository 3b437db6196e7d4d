"""Shared helpers for the test suite."""

from __future__ import annotations

import os

import pytest
import torch

# The Triton kernels are tested on the CPU under Triton's interpreter, and Triton reads
# TRITON_INTERPRET when it is first imported, which other parts of the suite (and torch itself)
# may do first: so it is set for the whole session, before any test runs. With a GPU the kernels
# are compiled and tested for real.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one thread is faster than two, and fair to a shared machine. A module opts in
    with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# float32 and float64 tolerances of the issue: max abs error against torch.nn.
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def max_abs_diff(a, b) -> float:
    """Max abs difference over tensors, tuples/lists of tensors, or PackedSequences."""
    if isinstance(a, torch.nn.utils.rnn.PackedSequence):
        assert torch.equal(a.batch_sizes, b.batch_sizes)
        return max_abs_diff(a.data, b.data)
    if isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        return max((max_abs_diff(x, y) for x, y in zip(a, b)), default=0.0)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert a.dtype == b.dtype
    return (a - b).abs().max().item() if a.numel() else 0.0


def flat_tensors(out) -> list[torch.Tensor]:
    """All tensors in a layer's output ``(output, hidden)`` as a flat list."""
    if isinstance(out, torch.nn.utils.rnn.PackedSequence):
        return [out.data]
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for item in out for t in flat_tensors(item)]


def grad_error(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """Max abs difference of gradients, relative to their scale (the largest magnitude, at least
    1). A float32 weight gradient sums T·B terms and can reach tens, where one rounding step is
    already ~4e-6: an absolute bar would test rounding order, not correctness."""
    scale = max([1.0] + [t.abs().max().item() for t in b if t.numel()])
    return max_abs_diff(a, b) / scale
