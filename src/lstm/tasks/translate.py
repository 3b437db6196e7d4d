"""Machine translation end to end: parallel data -> tokenizers (trained on the training part) ->
encoder-decoder -> training (:func:`lstm.training.fit`) -> held-out exact match or BLEU -> an
attention heat map. ``lstm train translate`` and ``lstm translate`` are thin shells over these.

Metrics (:func:`score_translations`): exact match (the whole output equals the reference, the
numbers task's measure), and sacrebleu's corpus BLEU and chrF (default settings: 13a tokenizer,
case-sensitive). The copy-source baseline scores the untranslated source as the hypothesis: what
BLEU gives for names, numbers and punctuation that pass through unchanged.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lstm import checkpoint as ckpt
from lstm.data.translation import (
    UNK,
    PairBatches,
    ParallelSplit,
    TranslationTokenizer,
    bible_pairs,
    number_pairs,
    pad,
    read_parallel_tsv,
)
from lstm.models.seq2seq import (
    Seq2SeqConfig,
    beam_search,
    build_seq2seq,
    count_parameters,
    greedy_decode,
    seq2seq_loss,
)

__all__ = [
    "bleu",
    "exact_match",
    "load_translation_data",
    "load_translation_model",
    "plot_attention",
    "score_translations",
    "train_translation",
    "translate_texts",
]

TASK = "translate"


# --------------------------------------------------------------------------------------------
# Data and metrics
# --------------------------------------------------------------------------------------------


def load_translation_data(
    task: str = "numbers",
    *,
    lang: str = "es",
    max_number: int = 999_999,
    train_size: int = 100_000,
    tsv: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
) -> ParallelSplit:
    """The pairs of ``task``: ``numbers`` (num2words in ``lang``), ``bible`` (KJV -> RV 1909,
    held-out books) or ``tsv`` (the user's ``source<TAB>target`` file ``tsv``)."""
    if task == "numbers":
        return number_pairs(lang, max_number, train_size)
    if task == "bible":
        return bible_pairs(cache)
    if task == "tsv":
        if tsv is None:
            raise ValueError("task 'tsv' needs a file: give tsv=PATH")
        return read_parallel_tsv(tsv)
    raise ValueError(f"task should be numbers, bible or tsv, got {task!r}")


def exact_match(hypotheses: list[str], references: list[str]) -> float:
    """The share of hypotheses equal to their reference (whitespace-normalized)."""
    if len(hypotheses) != len(references) or not references:
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    same = sum(" ".join(h.split()) == " ".join(r.split()) for h, r in zip(hypotheses, references))
    return same / len(references)


def bleu(hypotheses: list[str], references: list[str]) -> float:
    """sacrebleu's corpus BLEU (0..100) of ``hypotheses`` against one reference each."""
    import sacrebleu

    if len(hypotheses) != len(references) or not references:
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    return float(sacrebleu.corpus_bleu(hypotheses, [references]).score)


def score_translations(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Exact match (as a fraction), BLEU and chrF (0..100)."""
    import sacrebleu

    return {
        "exact_match": exact_match(hypotheses, references),
        "bleu": bleu(hypotheses, references),
        "chrf": float(sacrebleu.corpus_chrf(hypotheses, [references]).score),
        "count": len(references),
    }


# --------------------------------------------------------------------------------------------
# Translation with a trained model
# --------------------------------------------------------------------------------------------


def _max_len(src_len: int, limit: int) -> int:
    return min(limit, 2 * src_len + 10)


@torch.no_grad()
def translate_texts(
    model: torch.nn.Module,
    src_tok: TranslationTokenizer,
    tgt_tok: TranslationTokenizer,
    texts: list[str],
    beam: int = 1,
    alpha: float = 1.0,
    batch_size: int = 64,
    max_len: int = 200,
    max_src_len: int | None = None,
) -> list[str]:
    """Translations of ``texts``, in order: batched greedy decoding (``beam=1``) or beam search
    one sentence at a time."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    encoded = [(src_tok.encode(t) or [3])[:max_src_len] for t in texts]
    out: list[str] = [""] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
    for start in range(0, len(order), batch_size if beam == 1 else 1):
        index = order[start : start + (batch_size if beam == 1 else 1)]
        src = pad([encoded[i] for i in index]).to(device)
        lengths = torch.tensor([len(encoded[i]) for i in index])
        limit = _max_len(int(lengths.max()), max_len)
        if beam == 1:
            ids, _ = greedy_decode(model, src, lengths, limit)
        else:
            ids = [beam_search(model, src, lengths, beam, limit, alpha)[0]]
        for i, tokens in zip(index, ids):
            out[i] = tgt_tok.decode(tokens)
    model.train(was_training)
    return out


def plot_attention(
    weights: np.ndarray,
    src_tokens: list[str],
    tgt_tokens: list[str],
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """A heat map of attention weights ``(len(tgt_tokens), len(src_tokens))`` (rows: output
    tokens, columns: source tokens) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lstm.viz import save_figure

    weights = np.asarray(weights)
    if weights.shape != (len(tgt_tokens), len(src_tokens)):
        raise ValueError(
            f"weights have shape {weights.shape}, expected "
            f"({len(tgt_tokens)}, {len(src_tokens)}) for the tokens given"
        )
    h, w = weights.shape
    size = (min(18, max(6, 2.5 + 0.32 * w)), min(18, max(3.5, 2 + 0.3 * h)))
    fig, ax = plt.subplots(figsize=size, dpi=110)
    image = ax.imshow(
        weights, cmap="viridis", vmin=0, vmax=max(1e-9, float(weights.max())), aspect="auto"
    )
    ax.set_xticks(range(w), src_tokens, rotation=70, fontsize=8)
    ax.set_yticks(range(h), tgt_tokens, fontsize=8)
    ax.set_xlabel("source token")
    ax.set_ylabel("output token")
    if title:
        ax.set_title("\n".join(textwrap.wrap(title, 70)), fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02, label="attention weight")
    fig.tight_layout()
    return save_figure(fig, path)


def attention_map(
    model: torch.nn.Module,
    src_tok: TranslationTokenizer,
    tgt_tok: TranslationTokenizer,
    text: str,
    path: str | os.PathLike,
    max_len: int = 200,
) -> tuple[str, Path]:
    """Greedy translation of ``text`` and its attention heat map at ``path`` (recurrent models)."""
    if not hasattr(model, "attention"):
        raise ValueError("attention maps need a recurrent model with attention (not transformer)")
    model.eval()
    ids = src_tok.encode(text) or [3]
    src = pad([ids]).to(next(model.parameters()).device)
    tokens, maps = greedy_decode(model, src, torch.tensor([len(ids)]), _max_len(len(ids), max_len))
    src_labels = [src_tok.id_to_token(i) for i in ids]
    tgt_labels = [tgt_tok.id_to_token(i) for i in tokens[0]] + ["</s>"]
    translation = tgt_tok.decode(tokens[0])
    png = plot_attention(
        maps[0].numpy(), src_labels, tgt_labels, path, f"{text[:100]}  ->  {translation[:100]}"
    )
    return translation, png


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

TOKENIZERS = {"numbers": ("char", "word"), "bible": ("bpe", "bpe"), "tsv": ("bpe", "bpe")}


def build_tokenizers(
    split: ParallelSplit, task: str, vocab_size: int = 4000
) -> tuple[TranslationTokenizer, TranslationTokenizer]:
    """Source and target tokenizers learned from the training pairs only."""
    src_kind, tgt_kind = TOKENIZERS[task]
    src = TranslationTokenizer.build([s for s, _ in split.train], src_kind, vocab_size)
    tgt = TranslationTokenizer.build([t for _, t in split.train], tgt_kind, vocab_size)
    return src, tgt


def _batches(src_tok, tgt_tok, pairs, batch_size, shuffle, seed=0, max_len=None) -> PairBatches:
    src = src_tok.encode_batch([s for s, _ in pairs])
    tgt = tgt_tok.encode_batch([t for _, t in pairs])
    return PairBatches(src, tgt, batch_size, shuffle, seed, max_len)


def train_translation(
    split: ParallelSplit,
    model_options: dict[str, Any],
    train_config,
    *,
    task: str = "numbers",
    vocab_size: int = 4000,
    batch_size: int = 64,
    max_len: int | None = 100,
    eval_sentences: int = 200,
    beam: int = 4,
    beam_sentences: int | None = None,
    alpha: float = 1.0,
    copy_baseline: bool = True,
    attention_text: str | None = None,
    out_dir: str | os.PathLike | None = None,
    log=print,
) -> dict[str, Any]:
    """Trains a translation model on ``split.train`` (keeping the weights of the best validation
    loss) and scores it on the test pairs: greedy decoding of all of them, beam search (width
    ``beam``, length normalization ``alpha``) of the first ``beam_sentences`` (all when
    ``None``, none when 0). ``model_options`` holds :class:`Seq2SeqConfig` fields except the
    vocabulary sizes. Validation during training: loss, and exact match/BLEU of greedy
    translations of the first ``eval_sentences`` validation pairs. Returns the summary (also
    ``out/results.json``)."""
    from lstm.training import fit

    t_start = time.perf_counter()
    src_tok, tgt_tok = build_tokenizers(split, task, vocab_size)
    config = Seq2SeqConfig(src_vocab=len(src_tok), tgt_vocab=len(tgt_tok), **model_options)
    torch.manual_seed(train_config.seed)
    model = build_seq2seq(config).to(train_config.device)
    n_params = count_parameters(model)
    train_batches = _batches(
        src_tok, tgt_tok, split.train, batch_size, True, train_config.seed, max_len
    )
    val_batches = _batches(src_tok, tgt_tok, split.val, 64, False, max_len=max_len)
    val_head = split.val[:eval_sentences]
    log(
        f"[translate] {task}: {len(split.train):,} / {len(split.val):,} / {len(split.test):,} "
        f"pairs train/val/test; vocabularies {len(src_tok):,} ({src_tok.kind}) -> "
        f"{len(tgt_tok):,} ({tgt_tok.kind}); model {config.cell} {config.num_layers}x"
        f"{config.hidden_size}, {n_params:,} parameters; {len(train_batches):,} batches of "
        f"{batch_size} per epoch"
    )
    with torch.no_grad():  # a compiled kernel backend is built on first use: now, untimed
        src, lengths, tgt_in, _ = train_batches.batch([0])
        model(src.to(train_config.device), lengths, tgt_in.to(train_config.device))

    def eval_fn(m):
        from lstm.training import evaluate_loss

        loss = evaluate_loss(m, val_batches, seq2seq_loss, carry_state=False)["loss"]
        hyps = translate_texts(
            m,
            src_tok,
            tgt_tok,
            [s for s, _ in val_head],
            max_len=max_len or 200,
            max_src_len=max_len,
        )
        scores = score_translations(hyps, [t for _, t in val_head])
        return {"loss": loss, "exact_match": scores["exact_match"], "bleu": scores["bleu"]}

    extra = {
        "task": TASK,
        "model": config.to_json(),
        "src_tokenizer": src_tok.to_json(),
        "tgt_tokenizer": tgt_tok.to_json(),
        "max_len": max_len,
        "data": split.source,
        "parameters": n_params,
    }
    result = fit(
        model,
        train_batches,
        seq2seq_loss,
        train_config,
        eval_fn=eval_fn,
        out_dir=out_dir,
        extra=extra,
        restore_best=True,
    )

    t0 = time.perf_counter()
    sources, references = [s for s, _ in split.test], [t for _, t in split.test]
    limit = max_len or 200
    greedy = translate_texts(model, src_tok, tgt_tok, sources, max_len=limit, max_src_len=max_len)
    summary: dict[str, Any] = {
        "task": task,
        "data": split.source,
        "pairs": {"train": len(split.train), "val": len(split.val), "test": len(split.test)},
        "model": config.to_json(),
        "parameters": n_params,
        "steps": result.step,
        "epochs": result.step / len(train_batches),
        "train_seconds": result.train_seconds,
        "stopped": result.stopped,
        "best_val_loss": result.best_val_loss,
        "test_greedy": score_translations(greedy, references),
        "threads": torch.get_num_threads(),
    }
    n_beam = len(sources) if beam_sentences is None else min(beam_sentences, len(sources))
    if beam > 1 and n_beam:
        beamed = translate_texts(
            model,
            src_tok,
            tgt_tok,
            sources[:n_beam],
            beam,
            alpha,
            max_len=limit,
            max_src_len=max_len,
        )
        summary[f"test_beam{beam}"] = {
            **score_translations(beamed, references[:n_beam]),
            "alpha": alpha,
            "greedy_on_same": score_translations(greedy[:n_beam], references[:n_beam]),
        }
    if copy_baseline:
        summary["test_copy_source"] = score_translations(sources, references)
    summary["examples"] = [
        {"source": s, "reference": r, "greedy": h}
        for s, r, h in list(zip(sources, references, greedy))[:8]
    ]
    summary["eval_seconds"] = time.perf_counter() - t0
    if out_dir is not None:
        out = Path(out_dir)
        ckpt.write_final(out, model, extra, train_config)
        for name, tok in (("src", src_tok), ("tgt", tgt_tok)):
            ckpt.atomic_write_text(out / f"{name}_tokenizer.json", tok.tokenizer.to_str())
        if config.cell != "transformer":
            text = attention_text or sources[0]
            translation, png = attention_map(
                model, src_tok, tgt_tok, text, out / "attention.png", limit
            )
            summary["attention_plot"] = {
                "source": text,
                "translation": translation,
                "png": str(png),
            }
        summary["checkpoint"] = str(out / "checkpoints" / "final")
        summary["curves"] = str(out / "curves.png")
        ckpt.atomic_write_text(
            out / "results.json", json.dumps(summary, indent=1, ensure_ascii=False) + "\n"
        )
    summary["total_seconds"] = time.perf_counter() - t_start
    return summary


def load_translation_model(
    path: str | os.PathLike, backend: str | None = None
) -> tuple[torch.nn.Module, TranslationTokenizer, TranslationTokenizer, dict]:
    """A trained translation model, its source and target tokenizers and checkpoint config (the
    run's ``BEST`` checkpoint, else ``LATEST``)."""
    _, meta, weights = ckpt.load_task_checkpoint(path, TASK, "a translation model")
    config = Seq2SeqConfig.from_json(meta["model"])
    if backend is not None:
        config.backend = backend
    model = build_seq2seq(config)
    model.load_state_dict(weights)
    model.eval()
    src_tok = TranslationTokenizer.from_json(meta["src_tokenizer"])
    tgt_tok = TranslationTokenizer.from_json(meta["tgt_tokenizer"])
    return model, src_tok, tgt_tok, meta


# --------------------------------------------------------------------------------------------
# Command line (registered in lstm.cli)
# --------------------------------------------------------------------------------------------


def add_train_arguments(p) -> None:
    """Options of ``lstm train translate``."""
    from lstm.cli import add_training_arguments, dropout_rate, non_negative_float, positive_int

    d = p.add_argument_group("data")
    d.add_argument(
        "--task",
        choices=["numbers", "bible", "tsv"],
        default=None,
        help="numbers to words (num2words; the default), KJV -> Reina-Valera 1909 verses, or "
        "your own --tsv",
    )
    d.add_argument("--tsv", help="with --task tsv: a UTF-8 file of 'source<TAB>target' lines")
    d.add_argument("--lang", default="es", help="numbers: num2words language")
    d.add_argument(
        "--max-number", type=positive_int, default=999_999, help="numbers: drawn from 0..N"
    )
    d.add_argument(
        "--train-size", type=positive_int, default=100_000, help="numbers: training pairs"
    )
    d.add_argument("--cache", help="bible: where the aligned corpus is cached")
    d.add_argument("--vocab-size", type=positive_int, default=4000, help="BPE vocabulary")
    d.add_argument("--max-len", type=positive_int, default=100, help="tokens kept per sentence")
    d.add_argument("--batch", type=positive_int, default=64)
    m = p.add_argument_group("model")
    m.add_argument("--cell", choices=["lstm", "gru", "rnn", "transformer"], default="lstm")
    m.add_argument("--attention", choices=["dot", "general", "additive"], default="general")
    m.add_argument("--backend", default="auto")
    m.add_argument("--embed", type=positive_int, default=128)
    m.add_argument(
        "--hidden",
        type=positive_int,
        default=128,
        help="encoder, per direction; the transformer's d_model",
    )
    m.add_argument("--layers", type=positive_int, default=1)
    m.add_argument("--unidirectional", action="store_true", help="one-way encoder")
    m.add_argument("--dropout", type=dropout_rate, default=0.1)
    m.add_argument("--heads", type=positive_int, default=4, help="transformer")
    m.add_argument("--ff", type=positive_int, default=512, help="transformer feed-forward size")
    r = p.add_argument_group("report")
    r.add_argument("--beam", type=positive_int, default=4, help="beam width for the test report")
    r.add_argument(
        "--beam-sentences",
        type=positive_int,
        default=None,
        help="test sentences decoded with beam search (default: all)",
    )
    r.add_argument("--alpha", type=non_negative_float, default=1.0, help="length normalization")
    r.add_argument(
        "--eval-sentences",
        type=positive_int,
        default=200,
        help="validation sentences translated at each evaluation",
    )
    r.add_argument("--attention-text", help="the sentence of the attention plot")
    add_training_arguments(p)
    p.set_defaults(out=None, lr=2e-3)


def run_train(args) -> int:
    """``lstm train translate``."""
    from lstm.cli import UsageError, train_config_from

    if args.steps is None and args.minutes is None and args.epochs is None:
        args.minutes = 5.0
    if args.resume:
        raise UsageError("argument --resume: translation runs cannot be resumed yet; start anew")
    if args.task == "tsv" and not args.tsv:
        raise UsageError("argument --tsv: --task tsv needs a file")
    if args.tsv and args.task not in (None, "tsv"):
        raise UsageError(f"argument --tsv: reads your own pairs, not --task {args.task}; drop one")
    args.task = args.task or ("tsv" if args.tsv else "numbers")
    if args.threads:
        torch.set_num_threads(args.threads)
    split = load_translation_data(
        args.task,
        lang=args.lang,
        max_number=args.max_number,
        train_size=args.train_size,
        tsv=args.tsv,
        cache=args.cache,
    )
    train_config = train_config_from(args)
    train_config.carry_state = False
    if train_config.eval_every is None:
        train_config.eval_every = 500
    out = args.out or os.path.join("runs", f"translate-{args.task}-{args.cell}")
    options = dict(
        cell=args.cell,
        embed_size=args.embed,
        hidden_size=args.hidden,
        num_layers=args.layers,
        bidirectional=not args.unidirectional,
        attention=args.attention,
        dropout=args.dropout,
        backend=args.backend,
        num_heads=args.heads,
        ff_size=args.ff,
    )
    s = train_translation(
        split,
        options,
        train_config,
        task=args.task,
        vocab_size=args.vocab_size,
        batch_size=args.batch,
        max_len=args.max_len,
        eval_sentences=args.eval_sentences,
        beam=args.beam,
        beam_sentences=args.beam_sentences,
        alpha=args.alpha,
        copy_baseline=args.task != "numbers",
        attention_text=args.attention_text,
        out_dir=out,
    )
    g = s["test_greedy"]
    print(
        f"\n[translate] trained {s['steps']:,} steps ({s['epochs']:.2f} epochs) in "
        f"{s['train_seconds']:.0f} s ({s['stopped']}); {s['parameters']:,} parameters"
    )
    print(
        f"[translate] test, greedy: exact match {g['exact_match']:.2%}, BLEU {g['bleu']:.2f}, "
        f"chrF {g['chrf']:.2f} ({g['count']:,} pairs)"
    )
    key = f"test_beam{args.beam}"
    if key in s:
        b = s[key]
        print(
            f"[translate] test, beam {args.beam} (alpha {args.alpha}): exact match "
            f"{b['exact_match']:.2%}, BLEU {b['bleu']:.2f} ({b['count']:,} pairs; greedy on "
            f"the same: {b['greedy_on_same']['exact_match']:.2%}, "
            f"BLEU {b['greedy_on_same']['bleu']:.2f})"
        )
    if "test_copy_source" in s:
        c = s["test_copy_source"]
        print(f"[translate] copy-source baseline: BLEU {c['bleu']:.2f}, chrF {c['chrf']:.2f}")
    for ex in s["examples"][:3]:
        print(f"  {ex['source']!r}\n    -> {ex['greedy']!r}\n    (reference {ex['reference']!r})")
    if "attention_plot" in s:
        print(f"[translate] attention plot: {s['attention_plot']['png']}")
    print(
        f"[translate] checkpoint: {s['checkpoint']}  results: {os.path.join(out, 'results.json')}"
    )
    return 0


def add_translate_arguments(p) -> None:
    """Options of ``lstm translate``."""
    from lstm.cli import non_negative_float, positive_int

    p.add_argument("checkpoint", help="a run directory (e.g. runs/translate-numbers-lstm)")
    p.add_argument("text", nargs="+", help="text(s) to translate")
    p.add_argument("--beam", type=positive_int, default=1, help="beam width (1: greedy)")
    p.add_argument("--alpha", type=non_negative_float, default=1.0, help="length normalization")
    p.add_argument("--attention", metavar="PNG", help="write the attention heat map (first text)")
    p.add_argument("--backend", default=None, help="kernel backend (default: the stored one)")


def check_source_texts(texts: list[str], src_tok: TranslationTokenizer, data: dict) -> list[str]:
    """Raises :class:`ValueError` for a text the model cannot read (a numbers model given
    anything but digits in its range); returns notes on characters unknown to the vocabulary."""
    if data.get("task") == "numbers":
        top = data.get("max_number")
        for text in texts:
            if not text.isascii() or not text.isdigit():
                raise ValueError(f"argument text: a numbers model reads digits 0-9, got {text!r}")
            if top is not None and int(text) > top:
                raise ValueError(
                    f"argument text: this model learned the numbers 0..{top}, got {text}"
                )
        return []
    notes = []
    for text in texts:
        unknown = sum(1 for i in src_tok.encode(text) if i == UNK)
        if unknown:
            notes.append(f"note: {unknown} token(s) of {text[:40]!r} are unknown to the model")
    return notes


def run_translate(args) -> int:
    """``lstm translate``."""
    from lstm.cli import UsageError

    texts = [t.strip() for t in args.text]
    if not all(texts):
        raise UsageError("argument text: an empty text has nothing to translate")
    model, src_tok, tgt_tok, meta = load_translation_model(args.checkpoint, args.backend)
    if args.attention and meta["model"]["cell"] == "transformer":
        raise UsageError("argument --attention: a transformer checkpoint has no attention map")
    for note in check_source_texts(texts, src_tok, meta.get("data", {})):
        print(note, file=sys.stderr)
    limit = meta.get("max_len") or 200
    outputs = translate_texts(
        model,
        src_tok,
        tgt_tok,
        texts,
        args.beam,
        args.alpha,
        max_len=limit,
        max_src_len=meta.get("max_len"),
    )
    for out in outputs:
        print(out)
    if args.attention:
        _, png = attention_map(model, src_tok, tgt_tok, texts[0], args.attention, limit)
        print(f"attention plot: {png}", file=sys.stderr)
    return 0
