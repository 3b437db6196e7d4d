"""Speech models over feature frames: a keyword classifier and a CTC recognizer::

    frames (B, T, F), lengths (B,) ──> stack k frames (B, ⌈T/k⌉, k·F) ──> LSTM/GRU/RNN stack
        (bidirectional, L layers, packed) ──> (B, T', D·H) ──┬─> pooling ──> head (B, K)   keywords
                                                             └─> linear ──> log-softmax (T', B, V+1)
                                                                  CTC, blank = 0, tokens 1..V

Frame stacking concatenates ``k`` consecutive 10 ms frames into one step (a stride of ``k``): the
recurrent stack runs ``k`` times fewer steps, and a digit still spans several of them. Padding
frames never count: the stack runs on packed sequences (:class:`lstm.LSTM` and friends), pooling
masks them (:func:`lstm.models.classifier._pool`), and CTC reads each utterance's own length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstm
from lstm.checkpoint import JsonConfig
from lstm.models.classifier import POOLINGS, _pool

__all__ = [
    "CTCRecognizer",
    "KeywordSpotter",
    "SpeechConfig",
    "build_speech_model",
    "ctc_loss",
    "stack_frames",
]

CELLS = ("lstm", "gru", "rnn")
TASKS = ("keywords", "digits")


@dataclass
class SpeechConfig(JsonConfig):
    """Hyperparameters of a speech model (stored as JSON in checkpoints)."""

    task: str  # keywords (a class per clip) | digits (CTC transcription)
    num_features: int  # channels per frame
    num_classes: int  # keywords: the words; digits: the tokens, blank excluded
    cell: str = "lstm"
    hidden_size: int = 128  # per direction
    num_layers: int = 2
    bidirectional: bool = True
    stack: int = 4  # frames per recurrent step (40 ms)
    dropout: float = 0.1  # between layers and before the head
    pooling: str = "concat"  # keywords
    backend: str = "auto"

    def __post_init__(self) -> None:
        self.check_one_of("task", TASKS)
        self.check_one_of("cell", CELLS)
        self.check_one_of("pooling", POOLINGS)
        self.check_at_least_one("num_features", "num_classes", "hidden_size", "num_layers", "stack")
        self.check_rate("dropout")


def stack_frames(frames: Tensor, lengths: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``frames (B, T, F)`` -> ``(B, ⌈T/k⌉, k·F)``: each step is ``k`` consecutive frames
    concatenated (zero-padded at the end); ``lengths`` become ``⌈lengths / k⌉``."""
    if k == 1:
        return frames, lengths
    B, T, Fdim = frames.shape
    pad = (-T) % k
    if pad:
        frames = F.pad(frames, (0, 0, 0, pad))
    return frames.reshape(B, (T + pad) // k, k * Fdim), (lengths + k - 1) // k


class _Encoder(nn.Module):
    """Frame stacking, then the packed recurrent stack."""

    def __init__(self, c: SpeechConfig) -> None:
        super().__init__()
        self.config = c
        kinds = {"lstm": lstm.LSTM, "gru": lstm.GRU, "rnn": lstm.RNN}
        inner = c.dropout if c.num_layers > 1 else 0.0
        self.rnn = kinds[c.cell](c.num_features * c.stack, c.hidden_size, c.num_layers,
                                 batch_first=True, dropout=inner, bidirectional=c.bidirectional,
                                 backend=c.backend)  # fmt: skip
        self.width = c.hidden_size * (2 if c.bidirectional else 1)

    def forward(self, frames: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """-> outputs ``(B, T', D·H)``, their lengths ``(B,)``, the last states ``(B, D·H)``."""
        x, lengths = stack_frames(frames, lengths.cpu(), self.config.stack)  # (B, T', k·F)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, state = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        h_n = state[0] if isinstance(state, tuple) else state  # (L·D, B, H)
        D = 2 if self.config.bidirectional else 1
        last = torch.cat([h_n[-D + d] for d in range(D)], -1)  # (B, D·H): top layer
        return out, lengths, last


class KeywordSpotter(nn.Module):
    """Classifies a clip as one of ``num_classes`` words (see the module docstring)."""

    def __init__(self, config: SpeechConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = _Encoder(config)
        self.drop = nn.Dropout(config.dropout)
        pooled = self.encoder.width * (3 if config.pooling == "concat" else 1)
        self.head = nn.Linear(pooled, config.num_classes)

    def forward(self, frames: Tensor, lengths: Tensor) -> Tensor:
        """``frames (B, T, F)``, ``lengths (B,)`` -> logits ``(B, K)``."""
        out, steps, last = self.encoder(frames, lengths)
        return self.head(self.drop(_pool(out, steps, last, self.config.pooling)))


class CTCRecognizer(nn.Module):
    """Transcribes a clip into tokens with CTC (see the module docstring); blank is index 0."""

    blank = 0

    def __init__(self, config: SpeechConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = _Encoder(config)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(self.encoder.width, config.num_classes + 1)

    def forward(self, frames: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``frames (B, T, F)``, ``lengths (B,)`` -> log-probabilities ``(T', B, V+1)`` and the
        output lengths ``(B,)``."""
        out, steps, _ = self.encoder(frames, lengths)
        logits = self.head(self.drop(out))  # (B, T', V+1)
        return logits.float().log_softmax(-1).transpose(0, 1), steps


def build_speech_model(config: SpeechConfig) -> nn.Module:
    """A :class:`KeywordSpotter` or :class:`CTCRecognizer` for ``config.task``."""
    return KeywordSpotter(config) if config.task == "keywords" else CTCRecognizer(config)


def ctc_loss(model: nn.Module, batch: tuple, state: Any) -> tuple[Tensor, None, int]:
    """For :func:`lstm.training.fit`: ``torch.nn.functional.ctc_loss`` (blank 0, each
    utterance's loss divided by its target length, then the batch mean) of ``batch = (frames
    (B, T, F), lengths (B,), targets (B, S) padded with 0, target_lengths (B,))``."""
    frames, lengths, targets, target_lengths = batch
    log_probs, steps = model(frames, lengths)
    loss = F.ctc_loss(log_probs, targets, steps.to(log_probs.device), target_lengths, blank=0,
                      reduction="mean", zero_infinity=True)  # fmt: skip
    return loss, None, len(targets)
