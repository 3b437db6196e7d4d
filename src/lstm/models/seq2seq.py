"""Encoder-decoder translation models, and greedy and beam-search decoding written out here.

:class:`RecurrentSeq2Seq`, an LSTM (or GRU / RNN) encoder-decoder with global attention (Luong,
Pham and Manning 2015; the additive score is Bahdanau, Cho and Bengio 2014's)::

    source (B, S) ──> embedding ──> encoder: lstm.LSTM, L layers, optionally bidirectional
        ──> h̄_1..h̄_S (B, S, D·H)                    final states ──> decoder's initial states
    target in (B, T) = <s> y_1 .. y_{T-1} ──> embedding ──> decoder: lstm.LSTM, L layers, D·H wide
        ──> h_t (B, T, D·H) ──> attention over h̄ ──> h̃_t ──> W_s ──> logits (B, T, V)

The attention, for decoder state ``h_t`` and encoder outputs ``h̄_s`` (padding positions masked)::

    score(h_t, h̄_s) = h_tᵀ h̄_s                              "dot"
                     = h_tᵀ W_a h̄_s                          "general"
                     = v_aᵀ tanh(W_q h_t + W_k h̄_s)           "additive" (Bahdanau)
    a_t(s) = exp(score(h_t, h̄_s)) / Σ_{s' ≤ len} exp(score(h_t, h̄_s'))   (a_t(s) = 0 on padding)
    c_t    = Σ_s a_t(s) h̄_s                                   context vector
    h̃_t    = tanh(W_c [c_t; h_t])                             attentional state
    p(y_t | y_<t, x) = softmax(W_s h̃_t)

This is Luong's global attention without input feeding (``h̃_{t-1}`` is not fed back into the
decoder), so under teacher forcing the decoder reads the whole target in one call of the layer
(one input GEMM, the fused time loop) and the attention is three batched matrix products. The
decoder is ``D·H`` wide so that the encoder's final states (both directions concatenated) start it
with no extra projection, and the dot score needs none either.

:class:`TransformerSeq2Seq` is the baseline: ``torch.nn.Transformer`` (pre-norm, learned positions,
causal and padding masks) with the same embeddings and output layer, sized by the caller to about
the same number of parameters.

Both models offer one decoding interface, which :func:`greedy_decode` and :func:`beam_search` use:
``start(src, lengths) -> state``, ``step(tokens (k,), state) -> (log_probs (k, V), state,
attention (k, S) or None)`` and ``reorder(state, index)``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstm
from lstm.checkpoint import JsonConfig
from lstm.data.translation import BOS, EOS, PAD
from lstm.models.language_model import count_parameters  # re-exported for translate

__all__ = [
    "Attention",
    "RecurrentSeq2Seq",
    "Seq2SeqConfig",
    "TransformerSeq2Seq",
    "beam_search",
    "build_seq2seq",
    "count_parameters",
    "greedy_decode",
    "seq2seq_loss",
]

CELLS = ("lstm", "gru", "rnn", "transformer")
SCORES = ("dot", "general", "additive")


@dataclass
class Seq2SeqConfig(JsonConfig):
    """Hyperparameters of a translation model (stored as JSON in checkpoints)."""

    src_vocab: int
    tgt_vocab: int
    cell: str = "lstm"  # lstm | gru | rnn | transformer
    embed_size: int = 128
    hidden_size: int = 128  # encoder, per direction (the decoder is directions x this wide)
    num_layers: int = 1
    bidirectional: bool = True
    attention: str = "general"  # dot | general | additive
    dropout: float = 0.1
    backend: str = "auto"
    num_heads: int = 4  # transformer
    ff_size: int = 512  # transformer
    context: int = 256  # transformer: the longest sequence (learned positions)

    def __post_init__(self) -> None:
        self.check_one_of("cell", CELLS)
        self.check_one_of("attention", SCORES)
        self.check_at_least_one("src_vocab", "tgt_vocab", "embed_size", "hidden_size", "num_layers")
        self.check_rate("dropout")
        self.check_heads()


def padding_mask(lengths: Tensor, S: int, device: torch.device) -> Tensor:
    """``(B, S)`` True where a position is padding (``s >= length``)."""
    return torch.arange(S, device=device)[None, :] >= lengths.to(device)[:, None]


class Attention(nn.Module):
    """Global attention (see the module docstring): ``query (B, T, Hd)``, ``memory (B, S, He)``,
    ``pad (B, S)`` -> ``(h̃ (B, T, Hd), weights (B, T, S))``."""

    def __init__(self, query_size: int, memory_size: int, score: str = "general") -> None:
        super().__init__()
        if score not in SCORES:
            raise ValueError(f"score should be one of {', '.join(SCORES)}, got {score!r}")
        if score == "dot" and query_size != memory_size:
            raise ValueError(f"dot attention needs equal sizes, got {query_size} and {memory_size}")
        self.score_kind = score
        if score == "general":
            self.W_a = nn.Linear(memory_size, query_size, bias=False)
        elif score == "additive":
            self.W_q = nn.Linear(query_size, query_size, bias=False)
            self.W_k = nn.Linear(memory_size, query_size, bias=True)
            self.v_a = nn.Linear(query_size, 1, bias=False)
        self.W_c = nn.Linear(memory_size + query_size, query_size, bias=False)

    def keys(self, memory: Tensor) -> Tensor:
        """The part of the score that depends on the source alone, ``(B, S, Hd)``: ``h̄_s``
        (dot), ``W_a h̄_s`` (general), ``W_k h̄_s + b`` (additive). A decoder computes it once
        per source sentence, not once per output step."""
        if self.score_kind == "dot":
            return memory
        return self.W_a(memory) if self.score_kind == "general" else self.W_k(memory)

    def scores(self, query: Tensor, keys: Tensor) -> Tensor:
        """``score(h_t, h̄_s)`` for every t and s from :meth:`keys`: ``(B, T, S)``."""
        if self.score_kind in ("dot", "general"):
            return query @ keys.transpose(1, 2)
        q = self.W_q(query)  # (B, T, Hd)
        return self.v_a(torch.tanh(q.unsqueeze(2) + keys.unsqueeze(1))).squeeze(-1)  # (B, T, S)

    def forward(
        self, query: Tensor, memory: Tensor, pad: Tensor, keys: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        keys = self.keys(memory) if keys is None else keys
        scores = self.scores(query, keys).masked_fill(pad.unsqueeze(1), float("-inf"))
        weights = scores.softmax(-1)  # (B, T, S), rows sum to 1 over the real positions
        context = weights @ memory  # (B, T, He)
        return torch.tanh(self.W_c(torch.cat([context, query], -1))), weights


class RecurrentSeq2Seq(nn.Module):
    """See the module docstring."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = c = config
        kinds = {"lstm": lstm.LSTM, "gru": lstm.GRU, "rnn": lstm.RNN}
        D = 2 if c.bidirectional else 1
        inner = c.dropout if c.num_layers > 1 else 0.0
        self.src_embedding = nn.Embedding(c.src_vocab, c.embed_size, padding_idx=PAD)
        self.tgt_embedding = nn.Embedding(c.tgt_vocab, c.embed_size, padding_idx=PAD)
        self.encoder = kinds[c.cell](
            c.embed_size,
            c.hidden_size,
            c.num_layers,
            batch_first=True,
            dropout=inner,
            bidirectional=c.bidirectional,
            backend=c.backend,
        )
        self.decoder = kinds[c.cell](
            c.embed_size,
            D * c.hidden_size,
            c.num_layers,
            batch_first=True,
            dropout=inner,
            backend=c.backend,
        )
        self.attention = Attention(D * c.hidden_size, D * c.hidden_size, c.attention)
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Linear(D * c.hidden_size, c.tgt_vocab)

    # -- encoder ------------------------------------------------------------------------------

    def _bridge(self, h_n: Tensor) -> Tensor:
        """Encoder final states ``(L·D, B, H)`` -> the decoder's initial ``(L, B, D·H)``: the
        directions of each layer side by side."""
        if not self.config.bidirectional:
            return h_n
        L = self.config.num_layers
        h = h_n.view(L, 2, *h_n.shape[1:])  # (L, 2, B, H)
        return torch.cat([h[:, 0], h[:, 1]], -1).contiguous()

    def encode(self, src: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Any]:
        """``src (B, S)``, ``lengths (B,)`` -> memory ``(B, S, D·H)``, padding mask ``(B, S)``,
        the decoder's initial state."""
        x = self.drop(self.src_embedding(src))  # (B, S, E)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, state = self.encoder(packed)
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])
        if isinstance(state, tuple):
            state = (self._bridge(state[0]), self._bridge(state[1]))
        else:
            state = self._bridge(state)
        return memory, padding_mask(lengths, src.shape[1], src.device), state

    # -- teacher forcing ----------------------------------------------------------------------

    def forward(
        self, src: Tensor, lengths: Tensor, tgt_in: Tensor, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Logits ``(B, T, V)`` of every next token given the true previous ones (teacher
        forcing); with ``return_attention`` also the weights ``(B, T, S)``."""
        memory, pad, state = self.encode(src, lengths)
        h, _ = self.decoder(self.drop(self.tgt_embedding(tgt_in)), state)  # (B, T, D·H)
        h_tilde, weights = self.attention(h, memory, pad)
        logits = self.out(self.drop(h_tilde))
        return (logits, weights) if return_attention else logits

    # -- one step at a time (decoding) --------------------------------------------------------

    def start(self, src: Tensor, lengths: Tensor) -> dict:
        memory, pad, state = self.encode(src, lengths)
        return {"memory": memory, "keys": self.attention.keys(memory), "pad": pad, "rnn": state}

    def step(self, tokens: Tensor, state: dict) -> tuple[Tensor, dict, Tensor]:
        """``tokens (k,)`` the previous token of each hypothesis -> log-probabilities ``(k, V)``
        of the next, the new state, attention weights ``(k, S)``."""
        x = self.tgt_embedding(tokens).unsqueeze(1)  # (k, 1, E)
        h, rnn_state = self.decoder(x, state["rnn"])  # (k, 1, D·H)
        h_tilde, weights = self.attention(h, state["memory"], state["pad"], state["keys"])
        log_probs = self.out(h_tilde[:, 0]).log_softmax(-1)
        return log_probs, {**state, "rnn": rnn_state}, weights[:, 0]

    @staticmethod
    def reorder(state: dict, index: Tensor) -> dict:
        rnn = state["rnn"]
        if isinstance(rnn, tuple):
            rnn = tuple(s.index_select(1, index) for s in rnn)
        else:
            rnn = rnn.index_select(1, index)
        return {
            "memory": state["memory"].index_select(0, index),
            "keys": state["keys"].index_select(0, index),
            "pad": state["pad"].index_select(0, index),
            "rnn": rnn,
        }


class TransformerSeq2Seq(nn.Module):
    """``torch.nn.Transformer`` encoder-decoder (see the module docstring). Sequences longer
    than ``context`` are cut to it."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = c = config
        d = c.hidden_size
        self.src_embedding = nn.Embedding(c.src_vocab, d, padding_idx=PAD)
        self.tgt_embedding = nn.Embedding(c.tgt_vocab, d, padding_idx=PAD)
        self.src_position = nn.Embedding(c.context, d)
        self.tgt_position = nn.Embedding(c.context, d)
        self.drop = nn.Dropout(c.dropout)
        with warnings.catch_warnings():  # "enable_nested_tensor is True, but ... norm_first"
            warnings.simplefilter("ignore", UserWarning)
            self.transformer = nn.Transformer(
                d,
                c.num_heads,
                c.num_layers,
                c.num_layers,
                c.ff_size,
                c.dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
        self.out = nn.Linear(d, c.tgt_vocab)

    def _embed(self, tokens: Tensor, embedding: nn.Embedding, position: nn.Embedding) -> Tensor:
        T = tokens.shape[1]
        scale = math.sqrt(self.config.hidden_size)
        return self.drop(
            embedding(tokens) * scale + position(torch.arange(T, device=tokens.device))
        )

    def _memory(self, src: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        src = src[:, : self.config.context]
        pad = padding_mask(lengths.clamp(max=src.shape[1]), src.shape[1], src.device)
        x = self._embed(src, self.src_embedding, self.src_position)
        return self.transformer.encoder(x, src_key_padding_mask=pad), pad

    def _decode(self, tgt_in: Tensor, memory: Tensor, pad: Tensor) -> Tensor:
        tgt_in = tgt_in[:, -self.config.context :]
        T = tgt_in.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=tgt_in.device).triu(1)  # True: hidden
        y = self._embed(tgt_in, self.tgt_embedding, self.tgt_position)
        out = self.transformer.decoder(
            y,
            memory,
            tgt_mask=causal,
            tgt_is_causal=True,
            tgt_key_padding_mask=tgt_in == PAD,
            memory_key_padding_mask=pad,
        )
        return self.out(out)  # (B, T, V)

    def forward(self, src: Tensor, lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Logits ``(B, T, V)`` under teacher forcing."""
        memory, pad = self._memory(src, lengths)
        return self._decode(tgt_in[:, : self.config.context], memory, pad)

    def start(self, src: Tensor, lengths: Tensor) -> dict:
        memory, pad = self._memory(src, lengths)
        return {"memory": memory, "pad": pad, "prefix": src.new_zeros(len(src), 0)}

    def step(self, tokens: Tensor, state: dict) -> tuple[Tensor, dict, None]:
        """The whole prefix is decoded again at each step (no cache): simple, and fast enough for
        sentences of tens of tokens."""
        prefix = torch.cat([state["prefix"], tokens.unsqueeze(1)], 1)  # (k, t)
        logits = self._decode(prefix, state["memory"], state["pad"])[:, -1]
        return logits.log_softmax(-1), {**state, "prefix": prefix}, None

    @staticmethod
    def reorder(state: dict, index: Tensor) -> dict:
        return {k: v.index_select(0, index) for k, v in state.items()}


def build_seq2seq(config: Seq2SeqConfig) -> nn.Module:
    """A :class:`TransformerSeq2Seq` or :class:`RecurrentSeq2Seq` for ``config``."""
    if config.cell == "transformer":
        return TransformerSeq2Seq(config)
    return RecurrentSeq2Seq(config)


def seq2seq_loss(model: nn.Module, batch: tuple, state: Any) -> tuple[Tensor, None, int]:
    """The loss for :func:`lstm.training.fit`: mean cross-entropy per target token (``</s>``
    included, padding excluded) of ``batch = (src, lengths, tgt_in, tgt_out)``."""
    src, lengths, tgt_in, tgt_out = batch
    device = next(model.parameters()).device
    logits = model(src.to(device), lengths, tgt_in.to(device))
    tgt_out = tgt_out.to(device)[:, : logits.shape[1]]
    loss = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1), ignore_index=PAD
    )
    return loss, None, int((tgt_out != PAD).sum())


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def greedy_decode(
    model: nn.Module, src: Tensor, lengths: Tensor, max_len: int = 100
) -> tuple[list[list[int]], list[Tensor | None]]:
    """The most likely next token at every step, for a batch ``src (B, S)``: each sequence ends
    at its first ``</s>`` (not included) or after ``max_len`` tokens. Returns the token lists and,
    for a recurrent model, each sequence's attention weights ``(len+1, S)`` (rows: the output
    tokens and the ``</s>``)."""
    B = src.shape[0]
    state = model.start(src, lengths)
    tokens = torch.full((B,), BOS, dtype=torch.long, device=src.device)
    chosen, maps = [], []  # per step: (B,) tokens, (B, S) attention weights
    end = torch.full((B,), max_len, dtype=torch.long, device=src.device)  # tokens kept per row
    done = torch.zeros(B, dtype=torch.bool, device=src.device)
    for t in range(max_len + 1):
        log_probs, state, weights = model.step(tokens, state)
        tokens = log_probs.argmax(-1)
        chosen.append(tokens)
        if weights is not None:
            maps.append(weights)
        ends = ~done & (tokens == EOS)  # a sequence ends at its first </s>
        end = torch.where(ends, t, end)
        done |= ends
        if bool(done.all()):
            break
    ids = torch.stack(chosen, 1).cpu()  # (B, steps)
    end = end.tolist()
    outputs = [ids[b, : end[b]].tolist() for b in range(B)]
    if not maps:
        return outputs, [None] * B
    weights = torch.stack(maps, 1).cpu()  # (B, steps, S): rows for the tokens and the </s>
    return outputs, [weights[b, : end[b] + 1] for b in range(B)]


@torch.no_grad()
def beam_search(
    model: nn.Module,
    src: Tensor,
    lengths: Tensor,
    beam: int = 4,
    max_len: int = 100,
    alpha: float = 1.0,
) -> tuple[list[int], float]:
    """Beam search for one source sentence ``src (1, S)``.

    ``beam`` hypotheses are kept; each step extends every one by every token and ranks the
    extensions by total log-probability. An ``</s>`` ranked among the first ``beam`` finishes its
    hypothesis, scored with length normalization ``log p(y|x) / |y|^alpha`` (``|y|`` counts the
    ``</s>``; ``alpha = 0``: the raw log-probability, which favours short outputs); the best
    ``beam`` extensions that are not ``</s>`` live on. The search stops when the best finished
    score is at least every live hypothesis's score normalized at its current length, or after
    ``max_len`` tokens (live hypotheses then count as finished). With ``alpha = 0`` the stop is
    exact (a log-probability only falls, so no live hypothesis could still win); with
    ``alpha > 0`` it is the usual heuristic (Hugging Face's ``early_stopping=False``): a live
    hypothesis could still win only by raising its mean log-probability. With ``beam = 1`` this
    is greedy decoding.

    Returns the best token list (without ``</s>``) and its normalized score.
    """
    if beam < 1:
        raise ValueError(f"beam should be at least 1, got {beam}")
    if src.shape[0] != 1:
        raise ValueError(f"beam_search decodes one sentence; src has batch size {src.shape[0]}")
    state = model.start(src, lengths)
    device = src.device
    tokens = torch.full((1,), BOS, dtype=torch.long, device=device)
    scores = torch.zeros(1, device=device)  # total log-probability of each live hypothesis
    prefixes: list[list[int]] = [[]]
    finished: list[tuple[float, list[int]]] = []

    def normalized(score: float, length: int) -> float:
        return score / (length**alpha) if alpha else score

    for t in range(1, max_len + 1):
        log_probs, state, _ = model.step(tokens, state)  # (k, V)
        V = log_probs.shape[-1]
        total = (scores[:, None] + log_probs).view(-1)  # (k·V,)
        top_scores, top_index = total.topk(min(2 * beam, total.numel()))
        keep_rows, keep_tokens, keep_scores, new_prefixes = [], [], [], []
        for rank, (score, index) in enumerate(zip(top_scores.tolist(), top_index.tolist())):
            row, token = divmod(index, V)
            if token == EOS:
                if rank < beam:  # an </s> below the beam's best is not a hypothesis it keeps
                    finished.append((normalized(score, t), prefixes[row]))
            elif t < max_len:
                keep_rows.append(row)
                keep_tokens.append(token)
                keep_scores.append(score)
                new_prefixes.append([*prefixes[row], token])
            else:  # out of length: the hypothesis ends here unfinished
                finished.append((normalized(score, t), [*prefixes[row], token]))
            if len(keep_rows) == beam:
                break
        if not keep_rows:
            break
        if finished:
            best = max(f[0] for f in finished)
            if max(normalized(s, t) for s in keep_scores) <= best:
                break
        index = torch.tensor(keep_rows, device=device)
        state = model.reorder(state, index)
        tokens = torch.tensor(keep_tokens, device=device)
        scores = torch.tensor(keep_scores, device=device)
        prefixes = new_prefixes
    if not finished:  # (max_len reached with nothing finished is handled above)
        return prefixes[0], float(scores[0])
    best_score, best_tokens = max(finished, key=lambda f: f[0])
    return best_tokens, best_score
