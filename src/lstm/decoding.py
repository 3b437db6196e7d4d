"""CTC decoding (greedy and prefix beam search) and the edit distance that scores it.

A CTC model emits, at each frame ``t``, log-probabilities over the tokens and a *blank*. A path
(one symbol per frame) maps to a labeling by collapsing repeats, then removing blanks
(``a a - a b b -> a a b``); the probability of a labeling is the sum over all its paths.

- :func:`ctc_greedy`: the most probable *path* (argmax per frame), collapsed. Fast, but the most
  probable path need not belong to the most probable labeling.
- :func:`ctc_prefix_beam_search`: keeps the ``beam`` most probable labeling prefixes, each with two
  probabilities, of its paths ending in a blank (:math:`p_b`) and in its last token
  (:math:`p_{nb}`). At frame ``t`` with log-probabilities :math:`y_t`, prefix :math:`\\ell` of
  total :math:`p = p_b + p_{nb}` goes to

  - :math:`\\ell` via blank: :math:`p_b(\\ell) \\mathrel{+}= p \\cdot y_t(\\text{blank})`;
  - :math:`\\ell` via its last token repeated: :math:`p_{nb}(\\ell) \\mathrel{+}= p_{nb} \\cdot
    y_t(\\ell_{-1})`;
  - :math:`\\ell + c`: :math:`p_{nb}(\\ell + c) \\mathrel{+}= p \\cdot y_t(c)`, except for
    :math:`c = \\ell_{-1}`, which only paths ending in a blank can extend
    (:math:`p_b \\cdot y_t(c)`).

  Computed in log space. With a beam wide enough to keep every prefix, the score of the result
  is exactly the labeling's log-probability (what ``torch.nn.CTCLoss`` negates).
- :func:`edit_distance`: Levenshtein distance between token sequences (substitutions, insertions
  and deletions each cost 1); :func:`token_error_rate` sums it over a corpus and divides by the
  number of reference tokens.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

from torch import Tensor

__all__ = [
    "ctc_greedy",
    "ctc_prefix_beam_search",
    "edit_distance",
    "token_error_rate",
]

_NEG_INF = float("-inf")


def _logaddexp(a: float, b: float) -> float:
    if a == _NEG_INF:
        return b
    if b == _NEG_INF:
        return a
    top = max(a, b)
    return top + math.log1p(math.exp(-abs(a - b)))


def _check(log_probs: Tensor, blank: int) -> Tensor:
    if log_probs.dim() != 2:
        raise ValueError(f"log_probs should be (T, V), got shape {tuple(log_probs.shape)}")
    if not 0 <= blank < log_probs.shape[1]:
        raise ValueError(f"blank should be in [0, {log_probs.shape[1]}), got {blank}")
    return log_probs.detach().double().cpu()


def ctc_greedy(log_probs: Tensor, blank: int = 0) -> list[int]:
    """The best path's labeling: argmax per frame of ``log_probs (T, V)``, repeats collapsed,
    blanks removed."""
    best = _check(log_probs, blank).argmax(1).tolist()
    out, previous = [], None
    for token in best:
        if token != previous and token != blank:
            out.append(token)
        previous = token
    return out


def ctc_prefix_beam_search(
    log_probs: Tensor, beam: int = 8, blank: int = 0, prune: float | None = None
) -> tuple[list[int], float]:
    """The most probable labeling that prefix beam search finds in ``log_probs (T, V)`` (log
    softmax outputs), and its log-probability. ``beam``: prefixes kept per frame; ``prune``: skip
    tokens whose log-probability at a frame is below it (``None``: try every token)."""
    if beam < 1:
        raise ValueError(f"beam should be at least 1, got {beam}")
    lp = _check(log_probs, blank).tolist()
    V = len(lp[0]) if lp else 0
    beams: dict[tuple, tuple[float, float]] = {(): (0.0, _NEG_INF)}  # prefix -> (log p_b, log p_nb)
    for frame in lp:
        nxt: dict[tuple, list[float]] = {}

        def add(prefix: tuple, which: int, value: float, nxt=nxt) -> None:
            entry = nxt.setdefault(prefix, [_NEG_INF, _NEG_INF])
            entry[which] = _logaddexp(entry[which], value)

        tokens = [c for c in range(V) if c != blank and (prune is None or frame[c] >= prune)]
        for prefix, (pb, pnb) in beams.items():
            total = _logaddexp(pb, pnb)
            add(prefix, 0, total + frame[blank])
            last = prefix[-1] if prefix else None
            for c in tokens:
                if c == last:
                    add(prefix, 1, pnb + frame[c])  # the repeat collapses into the prefix
                    add((*prefix, c), 1, pb + frame[c])  # a blank separates the two
                else:
                    add((*prefix, c), 1, total + frame[c])
        ranked = sorted(nxt.items(), key=lambda kv: _logaddexp(*kv[1]), reverse=True)
        beams = {prefix: (pb, pnb) for prefix, (pb, pnb) in ranked[:beam]}
    prefix, (pb, pnb) = max(beams.items(), key=lambda kv: _logaddexp(*kv[1]))
    return list(prefix), _logaddexp(pb, pnb)


def edit_distance(reference: Sequence[Hashable], hypothesis: Sequence[Hashable]) -> int:
    """Levenshtein distance: the fewest substitutions, insertions and deletions turning
    ``hypothesis`` into ``reference`` (dynamic programming, one row at a time)."""
    previous = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, 1):
        current = [i]
        for j, h in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1]


def token_error_rate(
    references: Sequence[Sequence[Hashable]], hypotheses: Sequence[Sequence[Hashable]]
) -> float:
    """``Σ edit_distance(ref, hyp) / Σ len(ref)`` over a corpus (word or digit error rate)."""
    if len(references) != len(hypotheses):
        raise ValueError(
            f"{len(references)} references but {len(hypotheses)} hypotheses: they should pair up"
        )
    words = sum(len(r) for r in references)
    if words == 0:
        raise ValueError("the references hold no tokens: the error rate is undefined")
    return sum(edit_distance(r, h) for r, h in zip(references, hypotheses)) / words
