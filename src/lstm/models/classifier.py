"""Sequence classifiers: a recurrent stack over packed variable-length sequences, or a Transformer
encoder baseline, each with a linear head::

    tokens (B, T), lengths (B,) ──> embedding ──> dropout ──> pack ──> LSTM/GRU/RNN stack
        (bidirectional, L layers) ──> unpack (B, T, D·H) ──> pooling ──> dropout ──> head (B, K)

Pooling (``ClassifierConfig.pooling``), over each sequence's own steps only (padding never counts):

- ``"last"``: the final state of each direction (the forward direction's state after the last real
  token, the backward direction's after the first);
- ``"max"`` / ``"mean"``: element-wise max / mean of the outputs over time;
- ``"concat"``: last, max and mean together (ULMFiT's concat pooling).

The recurrent stack is :class:`lstm.LSTM`, :class:`lstm.GRU` or :class:`lstm.RNN` (their
PackedSequence path: padding steps carry the state unchanged). :func:`init_from_language_model`
copies a language model's embedding and recurrent weights (the engine's
:class:`lstm.models.language_model.RecurrentLM`) into the forward direction, and a second model
trained on reversed text into the backward direction: the pre-train-then-fine-tune route of Dai and
Le (2015) and ULMFiT. :func:`discriminative_groups` gives the layers learning rates that fall from
the head down and thaws them one epoch at a time (ULMFiT's discriminative fine-tuning and gradual
unfreezing), for :func:`lstm.training.fit`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstm
from lstm.checkpoint import JsonConfig

__all__ = [
    "ClassifierConfig",
    "RecurrentClassifier",
    "TransformerClassifier",
    "adversarial_loss",
    "build_classifier",
    "classification_loss",
    "discriminative_groups",
    "init_from_language_model",
    "predict_proba",
]

CELLS = ("lstm", "gru", "rnn", "transformer")
POOLINGS = ("last", "max", "mean", "concat")


@dataclass
class ClassifierConfig(JsonConfig):
    """Hyperparameters of a classifier (stored as JSON in checkpoints)."""

    vocab_size: int
    num_classes: int = 2
    cell: str = "lstm"  # lstm | gru | rnn | transformer
    embed_size: int = 128
    hidden_size: int = 128  # per direction; the Transformer's d_model
    num_layers: int = 1
    bidirectional: bool = True
    pooling: str = "concat"
    dropout: float = 0.3  # on embeddings and before the head
    embed_dropout: float = 0.0  # whole words dropped (their embedding zeroed) in training
    backend: str = "auto"
    num_heads: int = 4  # Transformer
    ff_mult: int = 4  # Transformer
    context: int = 512  # Transformer: the longest sequence (learned positions)

    def __post_init__(self) -> None:
        self.check_one_of("cell", CELLS)
        self.check_one_of("pooling", POOLINGS)
        self.check_at_least_one("vocab_size", "embed_size", "hidden_size", "num_layers")
        if self.num_classes < 2:
            raise ValueError(f"num_classes should be at least 2, got {self.num_classes}")
        self.check_rate("dropout", "embed_dropout")
        self.check_heads()


def _word_dropout(x: Tensor, tokens: Tensor, p: float, training: bool) -> Tensor:
    """Zeroes the embedding of each distinct word of a sequence with probability ``p`` (all its
    occurrences: the same word drops everywhere in the batch), scaled by ``1/(1-p)``."""
    if not training or p == 0:
        return x
    keep = torch.rand(int(tokens.max()) + 1, device=x.device) >= p  # (V',)
    return x * keep[tokens].unsqueeze(-1).to(x.dtype) / (1 - p)


def _pool(out: Tensor, lengths: Tensor, last: Tensor | None, how: str) -> Tensor:
    """``out (B, T, D)`` with each row valid up to ``lengths (B,)`` -> ``(B, D·k)``."""
    T = out.shape[1]
    valid = torch.arange(T, device=out.device)[None, :] < lengths.to(out.device)[:, None]  # (B, T)
    parts = []
    if how in ("last", "concat"):
        parts.append(last)
    if how in ("max", "concat"):
        parts.append(out.masked_fill(~valid.unsqueeze(-1), float("-inf")).amax(1))
    if how in ("mean", "concat"):
        total = (out * valid.unsqueeze(-1)).sum(1)
        parts.append(total / lengths.to(out.device, out.dtype).unsqueeze(-1))
    return torch.cat(parts, -1)


class RecurrentClassifier(nn.Module):
    """See the module docstring."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embedding = nn.Embedding(c.vocab_size, c.embed_size)
        kinds = {"lstm": lstm.LSTM, "gru": lstm.GRU, "rnn": lstm.RNN}
        inner = c.dropout if c.num_layers > 1 else 0.0
        self.rnn = kinds[c.cell](c.embed_size, c.hidden_size, c.num_layers, batch_first=True,
                                 dropout=inner, bidirectional=c.bidirectional,
                                 backend=c.backend)  # fmt: skip
        self.drop = nn.Dropout(c.dropout)
        width = c.hidden_size * (2 if c.bidirectional else 1)
        self.head = nn.Linear(width * (3 if c.pooling == "concat" else 1), c.num_classes)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """``tokens (B, T)`` padded, ``lengths (B,)`` -> logits ``(B, K)``."""
        return self.classify(self.embedding(tokens), tokens, lengths)

    def classify(self, x: Tensor, tokens: Tensor, lengths: Tensor) -> Tensor:
        """Logits ``(B, K)`` from the embedded tokens ``x (B, T, E)``: everything above the
        embedding (adversarial training perturbs ``x``: :func:`adversarial_loss`)."""
        x = self.drop(_word_dropout(x, tokens, self.config.embed_dropout, self.training))
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, state = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])
        h_n = state[0] if isinstance(state, tuple) else state  # (L·D, B, H)
        D = 2 if self.config.bidirectional else 1
        last = torch.cat([h_n[-D + d] for d in range(D)], -1)  # (B, D·H): top layer
        return self.head(self.drop(_pool(out, lengths, last, self.config.pooling)))


class TransformerClassifier(nn.Module):
    """A Transformer encoder from ``torch.nn`` (pre-norm, GELU, learned positions, padding mask)
    with the same pooling and head, the baseline the recurrent classifiers are compared with.
    Sequences longer than ``context`` are cut to their first ``context`` tokens."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        d = config.hidden_size
        self.embedding = nn.Embedding(config.vocab_size, d)
        self.position = nn.Embedding(config.context, d)
        self.drop = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(d, config.num_heads, config.ff_mult * d,
                                           config.dropout, activation="gelu", batch_first=True,
                                           norm_first=True)  # fmt: skip
        self.blocks = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        pooled = d * (3 if config.pooling == "concat" else 1)
        self.head = nn.Linear(pooled, config.num_classes)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """``tokens (B, T)`` padded, ``lengths (B,)`` -> logits ``(B, K)``."""
        T = min(tokens.shape[1], self.config.context)
        tokens, lengths = tokens[:, :T], lengths.clamp(max=T)
        x = self.embedding(tokens)
        x = _word_dropout(x, tokens, self.config.embed_dropout, self.training)
        x = self.drop(x + self.position(torch.arange(T, device=tokens.device)))  # (B, T, d)
        pad = torch.arange(T, device=tokens.device)[None, :] >= lengths.to(tokens.device)[:, None]
        out = self.norm(self.blocks(x, src_key_padding_mask=pad))  # (B, T, d)
        last = out[torch.arange(len(lengths)), lengths.to(tokens.device) - 1]  # (B, d)
        return self.head(self.drop(_pool(out, lengths, last, self.config.pooling)))


def build_classifier(config: ClassifierConfig) -> nn.Module:
    """A :class:`RecurrentClassifier` or :class:`TransformerClassifier` for ``config``."""
    if config.cell == "transformer":
        return TransformerClassifier(config)
    return RecurrentClassifier(config)


def layer_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """The classifier's parameters by depth, bottom to top: the embedding (with the positions of a
    Transformer), then each recurrent layer (both directions) or encoder block, then the head
    (with the Transformer's final norm)."""
    depth = model.config.num_layers
    groups: list[list[nn.Parameter]] = [[] for _ in range(depth + 2)]
    for name, p in model.named_parameters():
        if name.startswith(("embedding.", "position.")):
            groups[0].append(p)
        elif name.startswith(("head.", "norm.")):
            groups[-1].append(p)
        else:  # rnn.weight_ih_l1_reverse, blocks.layers.1.linear1.weight, ...
            found = re.search(r"_l(\d+)(?:_reverse)?$", name) or re.match(
                r"blocks\.layers\.(\d+)\.", name
            )
            if found is None:
                raise ValueError(f"{name!r}: not a parameter of a known layer")
            groups[1 + int(found.group(1))].append(p)
    return groups


def discriminative_groups(
    model: nn.Module, lr_decay: float = 2.6, gradual: bool = False
) -> list[dict[str, Any]]:
    """Parameter groups for :func:`lstm.training.fit` (ULMFiT, Howard and Ruder 2018): the head
    trains at the full learning rate and each group below it (:func:`layer_groups`) at the rate of
    the one above divided by ``lr_decay``; with ``gradual``, the head alone trains in the first
    epoch, the layer below it joins in the second, and so on down to the embedding, so that what
    pre-training learned is not overwritten while the head is still random."""
    if not lr_decay >= 1:
        raise ValueError(f"lr_decay should be at least 1, got {lr_decay}")
    groups = layer_groups(model)
    top = len(groups) - 1
    return [{"params": params, "lr_scale": lr_decay ** -(top - k),
             "frozen_epochs": (top - k) if gradual else 0}
            for k, params in enumerate(groups)]  # fmt: skip


def classification_loss(model: nn.Module, batch: tuple, state: Any) -> tuple[Tensor, None, int]:
    """The loss for :func:`lstm.training.fit`: mean cross-entropy of ``batch = (tokens (B, T) or
    frames (B, T, F), lengths (B,), labels (B,))``; no state is carried between batches. The
    sentiment classifier and the keyword spotter both train on it."""
    tokens, lengths, labels = batch
    device = next(model.parameters()).device
    logits = model(tokens.to(device), lengths)
    return F.cross_entropy(logits, labels.to(device)), None, len(labels)


def adversarial_loss(epsilon: float):
    """A loss for :func:`lstm.training.fit` that adds adversarial training on the embeddings
    (Goodfellow et al. 2015; Miyato et al. 2017, for text classifiers) to
    :func:`classification_loss`::

        g     = ∇_x CE(f(x), y)                 x: the embedded tokens of one review (T, E)
        r_adv = ε · g / ‖g‖₂                    ‖·‖₂ over the whole review
        loss  = CE(f(x), y) + CE(f(x + r_adv), y)

    the worst perturbation of norm ``epsilon`` to first order, on each review's embeddings (its
    padding steps have no gradient, so they stay unperturbed). ``r_adv`` is a constant: no
    gradient flows through it. It costs about 2.5 times a plain step (one more forward pass and
    two more backward passes). Recurrent classifiers only (:meth:`RecurrentClassifier.classify`);
    in evaluation it is the plain loss."""
    if not epsilon > 0:
        raise ValueError(f"epsilon should be positive, got {epsilon}")

    def loss_fn(model: nn.Module, batch: tuple, state: Any) -> tuple[Tensor, None, int]:
        if not isinstance(model, RecurrentClassifier):
            raise TypeError(f"adversarial training needs a RecurrentClassifier, not "
                            f"{type(model).__name__}")  # fmt: skip
        tokens, lengths, labels = batch
        device = next(model.parameters()).device
        tokens, labels = tokens.to(device), labels.to(device)
        x = model.embedding(tokens)  # (B, T, E)
        loss = F.cross_entropy(model.classify(x, tokens, lengths), labels)
        if not (model.training and torch.is_grad_enabled()):
            return loss, None, len(labels)
        (g,) = torch.autograd.grad(loss, x, retain_graph=True)
        norm = g.flatten(1).norm(dim=1).clamp_min(1e-12)  # (B,)
        r_adv = epsilon * g / norm[:, None, None]
        adv = F.cross_entropy(model.classify(x + r_adv, tokens, lengths), labels)
        return loss + adv, None, len(labels)

    return loss_fn


@torch.no_grad()
def predict_proba(model: nn.Module, batches) -> tuple[Tensor, Tensor, float]:
    """Class probabilities ``(N, K)``, labels ``(N,)`` (in the batches' order) and the mean
    cross-entropy over ``batches`` of ``(tokens, lengths, labels)``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    probs, labels, total = [], [], 0.0
    for tokens, lengths, y in batches:
        logits = model(tokens.to(device), lengths).float().cpu()
        total += float(F.cross_entropy(logits, y, reduction="sum"))
        probs.append(logits.softmax(-1))
        labels.append(y)
    model.train(was_training)
    p, y = torch.cat(probs), torch.cat(labels)
    return p, y, total / len(y)


def init_from_language_model(
    classifier: RecurrentClassifier,
    forward_lm: Mapping[str, Tensor],
    backward_lm: Mapping[str, Tensor] | None = None,
) -> list[str]:
    """Copies pre-trained weights into ``classifier``: the embedding and the recurrent weights of
    ``forward_lm`` (a :class:`~lstm.models.language_model.RecurrentLM` state dict) into the forward
    direction, and of ``backward_lm`` (a model of the reversed text, which must have read the
    forward model's embedding, frozen: each LSTM learned to read one embedding and the classifier
    has one) into the backward direction. The language models must share the classifier's
    vocabulary, cell, embedding size, hidden size and layer count. In a bidirectional stack the
    input weights of layers above the first read both directions (``2H`` wide, not ``H``): those
    stay as initialized. Returns the names of the copied tensors."""
    if not isinstance(classifier, RecurrentClassifier):
        raise TypeError("only a recurrent classifier can start from a recurrent language model")
    own = classifier.state_dict()
    copied, updates = [], {}

    def take(lm: Mapping[str, Tensor], suffix: str, which: str) -> None:
        for name, value in lm.items():
            if not name.startswith("rnn."):
                continue
            target = name + suffix
            if target not in own:
                raise ValueError(
                    f"{which} language model has {name!r}, the classifier has no {target!r}: "
                    f"build it with the language model's cell and layer count"
                )
            if own[target].shape != value.shape:
                deeper_input = name.startswith("rnn.weight_ih_l") and not name.endswith("_l0")
                if deeper_input and classifier.config.bidirectional:
                    continue  # reads both directions in the classifier
                raise ValueError(
                    f"{which} language model's {name!r} is {tuple(value.shape)}, the classifier's "
                    f"{target!r} is {tuple(own[target].shape)}: build the classifier with the "
                    f"language model's sizes"
                )
            updates[target] = value
            copied.append(target)

    for which, lm in (("forward", forward_lm), ("backward", backward_lm)):
        if lm is None:
            continue
        if lm["embedding.weight"].shape != own["embedding.weight"].shape:
            raise ValueError(
                f"{which} language model's embedding is {tuple(lm['embedding.weight'].shape)}, the "
                f"classifier's {tuple(own['embedding.weight'].shape)}: the vocabularies must match"
            )
    if backward_lm is not None and not classifier.config.bidirectional:
        raise ValueError("a backward language model needs a bidirectional classifier")
    if backward_lm is not None and not torch.equal(
        backward_lm["embedding.weight"], forward_lm["embedding.weight"]
    ):
        # Each direction's LSTM learned to read its own model's embedding; the classifier has one.
        raise ValueError(
            "the backward language model has an embedding of its own: pre-train it reading the "
            "forward model's (pretrain_language_model(..., embedding=...)), so that one embedding "
            "serves both directions"
        )
    take(forward_lm, "", "forward")
    if backward_lm is not None:
        take(backward_lm, "_reverse", "backward")
    updates["embedding.weight"] = forward_lm["embedding.weight"]
    copied.append("embedding.weight")
    classifier.load_state_dict({**own, **updates})
    return copied
