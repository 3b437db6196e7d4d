"""The language-model task end to end: text -> vocabulary -> model -> training -> test bits per
character -> samples. ``lstm train lm`` is a thin shell over :func:`train_language_model`.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lstm.checkpoint import atomic_write_text, find_checkpoint, load_json
from lstm.data.text import (
    SHAKESPEARE_SPLIT,
    StreamBatches,
    build_vocab,
    read_text_file,
    shakespeare_text,
    split_text,
    vocab_from_json,
)
from lstm.models.language_model import (
    DYNAMIC_SEQ_LEN,
    LMConfig,
    build_language_model,
    count_parameters,
    evaluate_dynamic,
    evaluate_stream,
    generate,
    lm_loss,
    next_words,
)
from lstm.training import FitResult, TrainConfig, fit, init_distributed, plot_curves

__all__ = ["LMData", "load_lm_data", "train_language_model"]


@dataclass
class LMData:
    """A text split into train/validation/test by characters, and where it came from."""

    source: str  # "shakespeare" or a file path
    train: str
    val: str
    test: str


def load_lm_data(text_file: str | os.PathLike | None = None) -> LMData:
    """The user's UTF-8 ``text_file`` or, by default, the Shakespeare corpus, split 90/5/5."""
    if text_file is None:
        text, source = shakespeare_text(), "shakespeare"
    else:
        text, source = read_text_file(text_file), str(text_file)
    train, val, test = split_text(text, SHAKESPEARE_SPLIT)
    if len(val) < 2 or len(test) < 2:
        raise ValueError(
            f"text file {source!r} is too short ({len(text)} characters) to split 90/5/5 into "
            "train, validation and test"
        )
    return LMData(source, train, val, test)


def _resolve_backend(model: torch.nn.Module, sample: str, vocab) -> str:
    """Which kernel backend the model's recurrent layers run (``"auto"`` resolved), after one
    small forward pass: a compiled backend is built on first use, before the timed training."""
    config = model.config
    if config.cell == "transformer":
        return "torch.nn (Transformer)"
    with torch.no_grad():
        model(vocab.encode(sample).view(1, -1))
    if config.backend == "torch":
        return "torch (torch.nn)"
    from lstm.kernels import describe

    return describe(config.backend)


def _plot_bits(history: list[dict], out: Path) -> None:
    plot_curves(history, out / "curves.png", scale=1 / math.log(2), ylabel="bits per token")


def train_language_model(
    data: LMData,
    model_config: dict[str, Any],
    train_config: TrainConfig,
    *,
    level: str = "char",
    vocab_options: dict[str, Any] | None = None,
    batch_size: int = 32,
    seq_len: int = 128,
    eval_chars: int = 60_000,
    out_dir: str | os.PathLike = "runs/lm",
    resume: bool = False,
    samples: int = 2,
    sample_length: int = 300,
    temperature: float = 0.8,
    prompt: str = "\n",
    dynamic_lr: float | None = None,
    log=print,
) -> dict[str, Any]:
    """Trains a language model and reports on it; returns (and writes to ``out/results.json``)
    the numbers: test/validation bits per character, parameters, steps, time and samples.

    ``model_config`` holds :class:`LMConfig` fields except ``vocab_size``. Validation reads the
    first ``eval_chars`` characters of the validation part (``0``: all of it), during training
    and at its end; the test part is read whole, once, at the end, with the state carried
    through it (in up to 16 contiguous streams). With ``dynamic_lr``, the test part is also
    scored by dynamic evaluation (:func:`lstm.models.language_model.evaluate_dynamic`, segments
    of 64 tokens, that step size): ``test_bpc_dynamic``.
    """
    rank, world = init_distributed()
    out = Path(out_dir)
    if resume and (out / "checkpoints" / "LATEST").exists():
        meta = load_json(find_checkpoint(out) / "config.json")
        vocab = vocab_from_json(meta["vocab"])  # the run's own: the same ids as before
        config = LMConfig.from_json(meta["model"])
        config.backend = model_config.get("backend", config.backend)
        if meta.get("data", {}).get("source") != data.source:
            raise ValueError(
                f"--resume: the run in {str(out)!r} trained on {meta['data']['source']!r}, "
                f"not {data.source!r}"
            )
    else:
        vocab = build_vocab(data.train, level, **(vocab_options or {}))
        config = LMConfig(vocab_size=len(vocab), **model_config)
    torch.manual_seed(train_config.seed)  # the initial weights
    model = build_language_model(config)
    n_params = count_parameters(model)
    backend = _resolve_backend(model, data.train[:2], vocab)  # builds a compiled one now, untimed

    encoded = {name: vocab.encode_counted(getattr(data, name)) for name in ("train", "test")}
    train_ids = encoded["train"].ids
    test_ids = encoded["test"].ids
    val_head = vocab.encode(data.val[:eval_chars] if eval_chars else data.val)
    val_head_chars = min(eval_chars, len(data.val)) if eval_chars else len(data.val)
    eval_rows = lambda ids: max(1, min(16, (len(ids) - 1) // 64))  # noqa: E731
    batches = StreamBatches(train_ids, batch_size, seq_len, shard=(rank, world))
    if rank == 0:
        log(
            f"[lm] data: {data.source} ({len(data.train):,} / {len(data.val):,} / "
            f"{len(data.test):,} characters train/val/test); vocabulary: {level}, {len(vocab):,} "
            f"tokens; model: {config.cell} {config.num_layers}x{config.hidden_size} "
            f"(embedding {config.embed_size}, backend {backend}), {n_params:,} parameters; "
            f"{len(batches):,} batches of {batch_size}x{seq_len} per epoch"
            + (f"; {world} processes" if world > 1 else "")
        )

    def eval_fn(m):
        return evaluate_stream(m, val_head, eval_rows(val_head), 256, chars=val_head_chars,
                               device=train_config.device)  # fmt: skip

    extra = {
        "task": "lm",
        "model": config.to_json(),
        "vocab": vocab.to_json(),
        "data": {
            "source": data.source,
            "split": list(SHAKESPEARE_SPLIT),
            "level": level,
            "batch_size": batch_size,
            "seq_len": seq_len,
        },
        "parameters": n_params,
    }
    result: FitResult = fit(
        model,
        batches,
        lm_loss,
        train_config,
        eval_fn=eval_fn,
        out_dir=out,
        resume=resume,
        extra=extra,
        plot=_plot_bits,
    )
    if rank != 0:
        return {}

    t0 = time.perf_counter()
    dev = train_config.device
    # Validation: the last evaluation of training (its first eval_chars characters); the test
    # part is read whole, once, here.
    val = result.val if result.val is not None else eval_fn(model)
    test = evaluate_stream(model, test_ids, eval_rows(test_ids), 256, len(data.test), dev)
    eval_seconds = time.perf_counter() - t0
    dynamic = None
    if dynamic_lr is not None:
        t0 = time.perf_counter()
        scored = evaluate_dynamic(model, test_ids, DYNAMIC_SEQ_LEN, dynamic_lr, 0.0,
                                  len(data.test), dev, progress=train_config.progress)  # fmt: skip
        dynamic = {"bpc": scored["bpc"], "lr": dynamic_lr, "seq_len": DYNAMIC_SEQ_LEN,
                   "decay": 0.0, "seconds": time.perf_counter() - t0}  # fmt: skip
    gen = torch.Generator().manual_seed(train_config.seed)
    texts = [generate(model, vocab, prompt, sample_length, temperature, generator=gen)
             for _ in range(samples)]  # fmt: skip
    cat = next_words(model, vocab, "The cat sat on the", k=5)
    summary = {
        "data": data.source,
        "level": level,
        "model": config.to_json(),
        "parameters": n_params,
        "steps": result.step,
        "epochs": result.step / len(batches),
        "train_seconds": result.train_seconds,
        "stopped": result.stopped,
        "train_bpc_last": None
        if result.train_loss is None
        else result.train_loss * len(train_ids) / len(data.train) / math.log(2),
        "val_bpc": val["bpc"],
        "val_chars": val_head_chars,
        "test_bpc": test["bpc"],
        "test_loss_nats_per_token": test["loss"],
        "test_perplexity": test["perplexity"],
        "test_bpc_dynamic": dynamic["bpc"] if dynamic else None,
        "dynamic_evaluation": dynamic,
        "test_tokens": test["tokens"],
        "test_unknown_tokens": encoded["test"].unknown,
        "eval_rows": eval_rows(test_ids),
        "eval_seconds": eval_seconds,
        "samples": texts,
        "next_words": {"The cat sat on the": cat},
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
        "metrics": str(result.metrics),
        "curves": str(out / "curves.png"),
        "processes": world,
        "threads": torch.get_num_threads(),
    }
    atomic_write_text(out / "results.json", json.dumps(summary, indent=1, ensure_ascii=False))
    return summary
