"""Language models: a recurrent stack (LSTM, GRU, RNN) or a GPT-style Transformer baseline.

Both map token ids ``(B, T)`` and a state to next-token logits ``(B, T, V)`` and the next state::

    tokens ──> embedding ──> dropout ──> LSTM/GRU/RNN stack ──> dropout ──> [projection] ──> head
    (B, T)      (B, T, E)                  (B, T, H), state                   (B, T, E)      (B, T, V)

The recurrent stack is :class:`lstm.LSTM`, :class:`lstm.GRU` or :class:`lstm.RNN` with the kernel
backend of ``config.backend``; ``backend="torch"`` uses ``torch.nn``'s own layer instead, as the
peer to compare against. With ``tie_weights`` the head shares the embedding matrix (a projection
``H -> E`` is added when the sizes differ). With ``adaptive_cutoffs`` (word vocabularies of tens
of thousands) the head is torch's adaptive softmax (Grave et al. 2017): the frequent words in a
full softmax with one entry per rarer cluster, each cluster's words scored only for the tokens
that belong to it, through narrower projections; training then never forms the ``(B, T, V)``
logits (:func:`lm_loss`), which makes a 30,000-word model several times faster on the CPU
(:func:`adaptive_cutoffs` picks the clusters). Its ``forward`` still returns full
log-probabilities, which every consumer of logits accepts (the softmax of log-probabilities is
the same distribution). The Transformer carries no state: its ``state`` is always ``None`` and it
sees at most ``config.context`` tokens.

Metrics (:func:`evaluate_stream`): cross-entropy in nats per token, perplexity ``exp(CE)``, and
bits per character ``CE · tokens / (chars · ln 2)`` (for a character model, bits per token).
Sampling (:func:`generate`) takes a temperature, top-k and top-p; :func:`next_tokens` and
:func:`next_words` list the most likely continuations of a prompt with their probabilities.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import lstm
from lstm.checkpoint import JsonConfig
from lstm.data.text import Vocab, WordVocab

__all__ = [
    "LMConfig",
    "RecurrentLM",
    "TransformerLM",
    "adaptive_cutoffs",
    "build_language_model",
    "evaluate_dynamic",
    "evaluate_stream",
    "filter_logits",
    "generate",
    "lm_loss",
    "load_language_model",
    "next_tokens",
    "next_words",
    "transformer_matching",
]

CELLS = ("lstm", "gru", "rnn", "transformer")
INITS = ("torch", "keras")


@dataclass
class LMConfig(JsonConfig):
    """Hyperparameters of a language model (stored as JSON in checkpoints)."""

    vocab_size: int
    cell: str = "lstm"  # lstm | gru | rnn | transformer
    embed_size: int = 64
    hidden_size: int = 384  # the recurrent state size; the Transformer's d_model
    num_layers: int = 1
    dropout: float = 0.0
    tie_weights: bool = False
    backend: str = "auto"  # a lstm.kernels backend, or "torch" for torch.nn's layer
    num_heads: int = 4  # Transformer only
    context: int = 128  # Transformer only: the longest sequence it attends over
    ff_mult: int = 4  # Transformer only: feed-forward width = ff_mult * hidden_size
    adaptive_cutoffs: list[int] | None = None  # recurrent only: adaptive-softmax cluster bounds
    init: str = "torch"  # recurrent only: "torch" (U(-1/sqrt(H), 1/sqrt(H))) or "keras"

    def __post_init__(self) -> None:
        self.check_one_of("cell", CELLS)
        self.check_one_of("init", INITS)
        self.check_at_least_one("vocab_size", "embed_size", "hidden_size", "num_layers")
        self.check_rate("dropout")
        self.check_heads()
        if self.adaptive_cutoffs is not None:
            cuts = list(self.adaptive_cutoffs)
            if not cuts or cuts != sorted(set(cuts)) or cuts[0] < 1 or cuts[-1] >= self.vocab_size:
                raise ValueError(
                    f"adaptive_cutoffs should rise strictly from 1 to below vocab_size "
                    f"{self.vocab_size}, got {self.adaptive_cutoffs!r}"
                )
            if self.tie_weights or self.cell == "transformer":
                raise ValueError("adaptive_cutoffs works with an untied recurrent model only")
        if self.init != "torch" and self.cell == "transformer":
            raise ValueError(f"init {self.init!r} is for the recurrent cells; the transformer "
                             f"keeps torch's initialisation (init 'torch')")  # fmt: skip
        backends = ["torch", "auto", *lstm.available_backends()]
        if self.cell != "transformer" and self.backend not in backends:
            raise ValueError(
                f"backend should be one of {', '.join(backends)}, got {self.backend!r}"
            )


def adaptive_cutoffs(vocab_size: int) -> list[int] | None:
    """Adaptive-softmax clusters for a word vocabulary: the 2,000 most frequent words in the head,
    the next 8,000 and the rest in two tails (none below 4,000 words: a full softmax is cheap)."""
    if vocab_size <= 4000:
        return None
    return [c for c in (2000, 10000) if c < vocab_size]


class RecurrentLM(nn.Module):
    """Embedding, a stack of LSTM/GRU/RNN layers, and a softmax head (see the module docstring)."""

    is_recurrent = True

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.config = config
        V, E, H, L = config.vocab_size, config.embed_size, config.hidden_size, config.num_layers
        self.embedding = nn.Embedding(V, E)
        kinds = {"lstm": (lstm.LSTM, nn.LSTM), "gru": (lstm.GRU, nn.GRU), "rnn": (lstm.RNN, nn.RNN)}
        ours, theirs = kinds[config.cell]
        inner_dropout = config.dropout if L > 1 else 0.0
        if config.backend == "torch":
            self.rnn = theirs(E, H, L, batch_first=True, dropout=inner_dropout)
        else:
            self.rnn = ours(
                E, H, L, batch_first=True, dropout=inner_dropout, backend=config.backend
            )
        if config.init == "keras":
            lstm.keras_init_(self.rnn)
        self.drop = nn.Dropout(config.dropout)
        self.project = nn.Linear(H, E, bias=False) if config.tie_weights and H != E else None
        self.head: nn.Module
        if config.adaptive_cutoffs:
            self.head = nn.AdaptiveLogSoftmaxWithLoss(H, V, list(config.adaptive_cutoffs), 4.0)
        else:
            self.head = nn.Linear(E if config.tie_weights else H, V)
            if config.tie_weights:
                self.head.weight = self.embedding.weight

    def forward(self, tokens: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """``tokens (B, T)`` int64, ``state`` from the previous call or ``None`` ->
        ``(logits (B, T, V), state)``."""
        out, state = self.features(tokens, state)
        if isinstance(self.head, nn.AdaptiveLogSoftmaxWithLoss):
            return self.head.log_prob(out.flatten(0, 1)).unflatten(0, out.shape[:2]), state
        return self.head(out), state

    def features(self, tokens: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """What the head reads: ``(B, T, H)`` (or ``(B, T, E)`` after the projection), and the
        next state."""
        x = self.drop(self.embedding(tokens))  # (B, T, E)
        out, state = self.rnn(x, state)  # (B, T, H)
        out = self.drop(out)
        if self.project is not None:
            out = self.project(out)  # (B, T, E)
        return out, state


class TransformerLM(nn.Module):
    """A GPT-style decoder-only Transformer from ``torch.nn`` (pre-norm, GELU, learned positions,
    causal mask), the baseline the recurrent models are compared with. Stateless."""

    is_recurrent = False

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.config = config
        d, V = config.hidden_size, config.vocab_size
        self.embedding = nn.Embedding(V, d)
        self.position = nn.Embedding(config.context, d)
        self.drop = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            d,
            config.num_heads,
            dim_feedforward=config.ff_mult * d,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, V)
        if config.tie_weights:
            self.head.weight = self.embedding.weight

    def forward(self, tokens: Tensor, state: Any = None) -> tuple[Tensor, None]:
        """``tokens (B, T)`` with ``T <= context`` -> ``(logits (B, T, V), None)``."""
        T = tokens.shape[1]
        if T > self.config.context:
            raise ValueError(
                f"sequence of {T} tokens is longer than the context {self.config.context}"
            )
        positions = torch.arange(T, device=tokens.device)
        x = self.drop(self.embedding(tokens) + self.position(positions))  # (B, T, d)
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=tokens.device)
        x = self.blocks(x, mask=mask, is_causal=True)
        return self.head(self.norm(x)), None


def build_language_model(config: LMConfig) -> nn.Module:
    """A :class:`RecurrentLM` or :class:`TransformerLM` for ``config``."""
    return TransformerLM(config) if config.cell == "transformer" else RecurrentLM(config)


def count_parameters(model: nn.Module) -> int:
    """Distinct trainable parameters (a tied matrix counts once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def transformer_matching(target_params: int, base: LMConfig) -> LMConfig:
    """A Transformer config like ``base`` (layers, heads, context, dropout, tying) whose width is
    chosen so its parameter count is as close as possible to ``target_params``."""
    best, best_gap = None, None
    step = base.num_heads * 2
    for d in range(step, 2049, step):
        cfg = LMConfig(**{**base.to_json(), "cell": "transformer", "hidden_size": d})
        n = count_parameters(TransformerLM(cfg))
        gap = abs(n - target_params)
        if best_gap is None or gap < best_gap:
            best, best_gap = cfg, gap
        if n > target_params:
            break
    return best


# --------------------------------------------------------------------------------------------
# Loss and evaluation
# --------------------------------------------------------------------------------------------


def lm_loss(model: nn.Module, batch: tuple[Tensor, Tensor], state: Any) -> tuple[Tensor, Any, int]:
    """The training step's loss for :func:`lstm.training.fit`: mean cross-entropy (nats per token)
    of ``batch = (inputs (B, T), targets (B, T))``, the next state, and the token count."""
    inputs, targets = batch
    if isinstance(getattr(model, "head", None), nn.AdaptiveLogSoftmaxWithLoss):
        out, state = model.features(inputs, state)  # (B, T, H): no (B, T, V) logits
        loss = model.head(out.flatten(0, 1), targets.reshape(-1)).loss
        return loss, state, targets.numel()
    logits, state = model(inputs, state)  # (B, T, V)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    return loss, state, targets.numel()


@torch.no_grad()
def evaluate_stream(
    model: nn.Module,
    ids: Tensor,
    batch_size: int = 16,
    seq_len: int = 256,
    chars: int | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Cross-entropy of a model on a token stream, with the recurrent state carried through it.

    The stream is cut into ``batch_size`` contiguous rows, each read from start to end with its
    state carried across windows of ``seq_len`` (so every token but a row's first sees all the
    text before it in its row). A Transformer reads overlapping windows of its context with a
    stride of half of it, scoring only tokens that saw at least half a context (all tokens of the
    first window). ``chars`` is the number of characters the tokens stand for (bits per character
    of word/BPE models); by default, one per token.

    Returns ``{"loss" (nats/token), "perplexity", "bpc", "tokens"}``.
    """
    from lstm.data.text import StreamBatches

    was_training = model.training
    model.eval()
    batches = StreamBatches(ids, batch_size, 1 << 30)  # one window: the whole rows
    inputs, targets = next(iter(batches))  # (B, N)
    inputs, targets = inputs.to(device), targets.to(device)
    total, count = 0.0, 0
    if getattr(model, "is_recurrent", True):
        state = None
        for start in range(0, inputs.shape[1], seq_len):
            x, y = inputs[:, start : start + seq_len], targets[:, start : start + seq_len]
            logits, state = model(x, state)
            total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
            count += y.numel()
    else:
        context = model.config.context
        stride = max(1, context // 2)
        N = inputs.shape[1]
        start = 0
        while True:
            hi = min(N, start + stride) if start else min(N, context)
            lo = max(0, hi - context)
            logits, _ = model(inputs[:, lo:hi])
            keep = hi - start  # the new tokens of this window
            scored = logits[:, -keep:]
            y = targets[:, start:hi]
            total += F.cross_entropy(scored.flatten(0, 1), y.flatten(), reduction="sum").item()
            count += y.numel()
            start = hi
            if start >= N:
                break
    model.train(was_training)
    loss = total / count
    per_char = len(ids) / chars if chars else 1.0  # tokens per character of this text
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "bpc": loss * per_char / math.log(2),
        "tokens": count,
    }


DYNAMIC_SEQ_LEN = 64  # tokens per step of dynamic evaluation, by default


def evaluate_dynamic(
    model: nn.Module,
    ids: Tensor,
    seq_len: int = DYNAMIC_SEQ_LEN,
    lr: float = 0.03,
    decay: float = 0.0,
    chars: int | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict[str, float]:
    """Cross-entropy of a recurrent model on a token stream with *dynamic evaluation* (Krause et
    al. 2018): the model reads the stream once, in order, as one row with its state carried,
    and after scoring each segment of ``seq_len`` tokens it takes one gradient step on that
    segment's loss, so later text is predicted by a model adapted to the text already read.
    Every token is scored before any step has seen it. The update, for every weight θ with
    θ₀ its value before the stream:

        θ ← θ − lr · ∇L(segment) + decay · (θ₀ − θ)

    (plain SGD on the segment's mean loss per token, pulled back toward θ₀ by ``decay``).
    Dropout is off, as in :func:`evaluate_stream`; ``model`` itself is left unchanged (a copy
    adapts). ``lr=0`` gives the static score of the same single row.

    Returns ``{"loss" (nats/token), "perplexity", "bpc", "tokens"}`` as
    :func:`evaluate_stream`.
    """
    import copy

    from lstm.training import detach_state

    if not getattr(model, "is_recurrent", True):
        raise ValueError("dynamic evaluation here carries a recurrent state: not for a Transformer")
    if seq_len < 1:
        raise ValueError(f"seq_len should be at least 1, got {seq_len}")
    if lr < 0 or not 0 <= decay < 1:
        raise ValueError(f"lr should be >= 0 and decay in [0, 1), got lr={lr}, decay={decay}")
    adapted = copy.deepcopy(model).to(device).eval()
    params = [p for p in adapted.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]  # θ₀
    stream = ids.to(device)
    inputs, targets = stream[:-1].unsqueeze(0), stream[1:].unsqueeze(0)  # (1, N)
    total, count, state = 0.0, 0, None
    steps = range(0, inputs.shape[1], seq_len)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, unit="segment", dynamic_ncols=True, desc="dynamic evaluation")
    for i in steps:
        x, y = inputs[:, i : i + seq_len], targets[:, i : i + seq_len]
        with torch.enable_grad():
            logits, state = adapted(x, state)
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
            total += float(loss.detach()) * y.numel()  # scored before the step below
            count += y.numel()
            if lr > 0:
                grads = torch.autograd.grad(loss, params, allow_unused=True)
        state = detach_state(state)
        if lr > 0:
            with torch.no_grad():
                for p, g, p0 in zip(params, grads, start):
                    if g is not None:
                        p.add_(g, alpha=-lr)
                    if decay:
                        p.add_(p0 - p, alpha=decay)
    loss = total / count
    per_char = len(ids) / chars if chars else 1.0
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "bpc": loss * per_char / math.log(2),
        "tokens": count,
    }


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """``logits (..., V)`` with everything outside the ``top_k`` most likely tokens, and outside the
    smallest set whose probability reaches ``top_p`` (nucleus), set to ``-inf``. Tokens tied
    with the ``k``-th most likely one are kept too."""
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k should be at least 1, got {top_k}")
        if top_k < logits.shape[-1]:
            kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (..., 1)
            logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p should be in (0, 1], got {top_p}")
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        before = probs.cumsum(-1) - probs  # mass of the tokens ranked above each one
        drop_sorted = before >= top_p  # keep a token while the mass above it is below top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _encode_prompt(vocab: Vocab, prompt: str) -> Tensor:
    ids = vocab.encode(prompt)
    if len(ids) == 0:  # an empty prompt: start as after a line break
        ids = vocab.encode("\n")
        if len(ids) == 0:
            ids = torch.zeros(1, dtype=torch.long)
    return ids


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _prime(model: nn.Module, ids: Tensor) -> tuple[Tensor, Any]:
    """Runs the prompt ``ids (N,)``; returns the last logits ``(V,)`` and the state."""
    x = ids.to(_device(model)).unsqueeze(0)  # (1, N)
    if not getattr(model, "is_recurrent", True):
        logits, _ = model(x[:, -model.config.context :])
        return logits[0, -1], None
    logits, state = model(x)
    return logits[0, -1], state


@torch.no_grad()
def generate(
    model: nn.Module,
    vocab: Vocab,
    prompt: str = "",
    length: int = 200,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> str:
    """``length`` tokens sampled after ``prompt`` (returned without the prompt).

    ``temperature`` divides the logits (0 means greedy: always the most likely token); ``top_k``
    and ``top_p`` restrict sampling as in :func:`filter_logits`.
    """
    if temperature < 0:
        raise ValueError(f"temperature should be >= 0, got {temperature}")
    if length < 0:
        raise ValueError(f"length should be >= 0, got {length}")
    was_training = model.training
    model.eval()
    ids = _encode_prompt(vocab, prompt)
    logits, state = _prime(model, ids)
    history = ids.tolist()
    out = []
    for _ in range(length):
        if temperature == 0:
            token = int(logits.argmax())
        else:
            probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(-1)
            token = int(torch.multinomial(probs.cpu(), 1, generator=generator))
        out.append(token)
        history.append(token)
        x = torch.tensor([[token]], device=_device(model))
        if getattr(model, "is_recurrent", True):
            step_logits, state = model(x, state)
            logits = step_logits[0, -1]
        else:
            logits, _ = _prime(model, torch.tensor(history))
    model.train(was_training)
    return vocab.decode(out)


@torch.no_grad()
def next_tokens(
    model: nn.Module, vocab: Vocab, prompt: str, k: int = 10
) -> list[tuple[str, float]]:
    """The ``k`` most likely next tokens after ``prompt``, with their probabilities."""
    was_training = model.training
    model.eval()
    logits, _ = _prime(model, _encode_prompt(vocab, prompt))
    probs = logits.float().softmax(-1)
    top = torch.topk(probs, min(k, probs.numel()))
    model.train(was_training)
    return [(vocab.decode([i]), float(p)) for p, i in zip(top.values, top.indices)]


def _is_word_char(c: str) -> bool:
    return c != "" and (c.isalnum() or c in "'-")


@torch.no_grad()
def next_words(
    model: nn.Module,
    vocab: Vocab,
    prompt: str,
    k: int = 10,
    beam: int = 64,
    max_tokens: int = 24,
    branch: int = 100,
) -> list[tuple[str, float]]:
    """The ``k`` most likely next *words* after ``prompt``, with their probabilities.

    For a word vocabulary these are the next tokens. For characters or BPE pieces, a beam search
    spells words out: the probability of a word is that of the tokens that write it (after any
    spaces) up to and including the one that ends it, so for a character model ``P("mat")`` is
    ``P(" mat" + a non-letter)``. A punctuation mark that comes first is a word of its own. When
    the prompt ends inside a word ("... on the"), the next word is a new one (" mat", not "m"). The
    ``beam`` most likely open hypotheses are kept, each extended by its ``branch`` most likely
    tokens (all of a character vocabulary's): exact for a small vocabulary and a wide beam.
    """
    if isinstance(vocab, WordVocab):
        return next_tokens(model, vocab, prompt, k)
    was_training = model.training
    model.eval()
    history = _encode_prompt(vocab, prompt).tolist()
    logits, state = _prime(model, torch.tensor(history))
    recurrent = getattr(model, "is_recurrent", True)
    pieces = [vocab.decode([t]) for t in range(len(vocab))]
    mid_word = _is_word_char(prompt[-1:])
    # Open hypotheses: (text so far, log-probability, tokens so far); row h of logp and state.
    hyps: list[tuple[str, float, list[int]]] = [("", 0.0, [])]
    logp = logits.float().log_softmax(-1).unsqueeze(0)  # (1, V)
    finished: dict[str, float] = {}
    for _ in range(max_tokens):
        candidates = []  # (text, log-probability, tokens, parent row)
        top = torch.topk(logp, min(branch, logp.shape[-1]), dim=-1)
        for h, (text, lp, tokens) in enumerate(hyps):
            for value, token in zip(top.values[h].tolist(), top.indices[h].tolist()):
                if value == float("-inf"):
                    continue
                if not text and mid_word and _is_word_char(pieces[token][:1]):
                    continue  # that would go on with the prompt's last word, not start one
                total = lp + value
                new = (text + pieces[token]).lstrip(" \n")
                run = next((i for i, c in enumerate(new) if not _is_word_char(c)), len(new))
                if new and run == 0:  # a punctuation mark first: a word of its own
                    finished[new[0]] = finished.get(new[0], 0.0) + math.exp(total)
                elif new and run < len(new):  # the word ended within this token
                    finished[new[:run]] = finished.get(new[:run], 0.0) + math.exp(total)
                else:
                    candidates.append((text + pieces[token], total, [*tokens, token], h))
        if not candidates:
            break
        candidates.sort(key=lambda item: -item[1])
        candidates = candidates[:beam]
        # Stop when no open hypothesis can beat the k-th finished word.
        ranked = sorted(finished.values(), reverse=True)
        if len(ranked) >= k and math.exp(candidates[0][1]) < ranked[k - 1]:
            break
        device = _device(model)
        if recurrent:
            state = _select_state(state, torch.tensor([c[3] for c in candidates]))
            step = torch.tensor([[c[2][-1]] for c in candidates], device=device)  # (beam, 1)
            step_logits, state = model(step, state)
        else:
            rows = torch.tensor([history + c[2] for c in candidates], device=device)
            step_logits, _ = model(rows[:, -model.config.context :])
        logp = step_logits[:, -1].float().log_softmax(-1)  # (beam, V)
        hyps = [(c[0], c[1], c[2]) for c in candidates]
    model.train(was_training)
    return sorted(finished.items(), key=lambda kv: -kv[1])[:k]


def _select_state(state: Any, index: Tensor) -> Any:
    """Rows ``index`` of a recurrent state (batch on dimension 1 of each ``(L, B, H)`` tensor)."""
    if state is None:
        return None
    if torch.is_tensor(state):
        return state.index_select(1, index.to(state.device))
    return type(state)(_select_state(s, index) for s in state)


# --------------------------------------------------------------------------------------------
# Loading from a checkpoint
# --------------------------------------------------------------------------------------------


def load_language_model(
    path: str | os.PathLike, backend: str | None = None, device: str = "cpu"
) -> tuple[nn.Module, Vocab, dict]:
    """The model, vocabulary and ``config.json`` of a checkpoint written by ``lstm train lm``
    (a checkpoint directory or a run directory; see :func:`lstm.checkpoint.find_checkpoint`).
    ``backend`` overrides the stored one (``None``: the stored one if it runs here, else
    ``"auto"``). Only safetensors and JSON are read: nothing is unpickled."""
    from lstm.checkpoint import (
        CheckpointError,
        find_checkpoint,
        load_json,
        load_tensors,
        runnable_backend,
    )
    from lstm.data.text import vocab_from_json

    where = find_checkpoint(path)
    meta = load_json(where / "config.json")
    if "model" not in meta or "vocab" not in meta:
        raise CheckpointError(f"{str(path)!r} is not a language-model checkpoint")
    config = LMConfig.from_json(meta["model"])
    config.backend = backend or runnable_backend(config.backend, path)
    config.__post_init__()
    vocab = vocab_from_json(meta["vocab"])
    model = build_language_model(config)
    weights, _ = load_tensors(where / "model.safetensors")
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(f"the weights in {str(where)!r} do not fit its config: {e}") from None
    meta["checkpoint"] = str(where)
    return model.to(device).eval(), vocab, meta
