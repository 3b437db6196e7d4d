"""The ``lstm`` command: ``lstm train <task>``, ``lstm generate``, ``lstm evaluate``,
``lstm next-word``, and the commands other parts of the toolkit add.

Thin glue: every command parses its arguments and calls functions usable from Python. To add a
training task, register it in :data:`TRAIN_TASKS` (``name -> (help, add_arguments, run)``); to add a
command (``bench``, ``viz``, ``export`` ...), register it in :data:`COMMANDS`. Each ``run(args)``
returns an exit status. A user's mistake (a missing, empty, binary or non-UTF-8 file, a path that
is not a checkpoint, an invalid option) prints one line to stderr and exits with status 2, never a
traceback (set ``LSTM_DEBUG=1`` to see one).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["COMMANDS", "TRAIN_TASKS", "build_parser", "main"]

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """A mistake in how the command was called; reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (usage is one ``--help`` away)."""

    def error(self, message: str):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


# -- argument types that say what they want ---------------------------------------------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"should be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"should be a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"should be a positive number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"should be a positive number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"should be a number >= 0, got {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"should be a number >= 0, got {text!r}")
    return value


def probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"should be a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"should be a number in (0, 1], got {text!r}")
    return value


def dropout_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"should be a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"should be a number in [0, 1), got {text!r}")
    return value


def _backend_names() -> list[str]:
    from lstm.kernels import available_backends

    return ["auto", "torch", *available_backends()]


def add_training_arguments(p: argparse.ArgumentParser) -> None:
    """The options of :class:`lstm.training.TrainConfig`, shared by every ``train`` task."""
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=positive_int, help="optimizer steps (default: --minutes)")
    g.add_argument("--minutes", type=positive_float, help="training time budget in minutes")
    g.add_argument("--epochs", type=positive_int, help="passes over the training data")
    g.add_argument("--optimizer", choices=["adam", "adamw", "sgd", "rmsprop"], default="adam")
    g.add_argument("--lr", type=positive_float, default=2e-3, help="peak learning rate")
    g.add_argument("--schedule", choices=["constant", "linear", "cosine"], default="cosine")
    g.add_argument("--warmup", type=int, default=0, metavar="STEPS", help="linear warmup steps")
    g.add_argument("--min-lr-ratio", type=non_negative_float, default=0.0)
    g.add_argument("--weight-decay", type=non_negative_float, default=0.0)
    g.add_argument("--clip", type=non_negative_float, default=1.0,
                   help="gradient-norm clipping (0: none)")  # fmt: skip
    g.add_argument("--average", choices=["swa", "ema"],
                   help="average the weights over the end of the run: swa (equal weights) or "
                   "ema (exponential); evaluations and checkpoints use the average")  # fmt: skip
    g.add_argument("--average-start", type=non_negative_float, default=0.5, metavar="FRACTION",
                   help="fraction of the run before --average starts (default 0.5)")  # fmt: skip
    g.add_argument("--ema-decay", type=positive_float, default=0.999)
    g.add_argument("--eval-every", type=positive_int, metavar="STEPS")
    g.add_argument("--patience", type=positive_int, help="early stopping after N evaluations")
    g.add_argument("--checkpoint-every", type=positive_int, metavar="STEPS")
    g.add_argument("--log-every", type=positive_int, default=10, metavar="STEPS")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    g.add_argument("--threads", type=positive_int, help="torch CPU threads")
    g.add_argument("--out", default=None, help="run directory (checkpoints, metrics, plots)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def train_config_from(args: argparse.Namespace):
    """A :class:`lstm.training.TrainConfig` from :func:`add_training_arguments`' options."""
    from lstm.training import TrainConfig

    if args.warmup < 0:
        raise UsageError(f"argument --warmup: should be >= 0, got {args.warmup}")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UsageError(
                f"argument --device: {args.device!r} asked for, but CUDA is not available"
            )
    elif args.device != "cpu":
        raise UsageError(f"argument --device: should be cpu or cuda[:N], got {args.device!r}")
    if not args.average_start < 1:
        raise UsageError(f"argument --average-start: should be below 1, got {args.average_start}")
    if not args.ema_decay < 1:
        raise UsageError(f"argument --ema-decay: should be below 1, got {args.ema_decay}")
    return TrainConfig(
        steps=args.steps,
        epochs=args.epochs,
        minutes=args.minutes,
        optimizer=args.optimizer,
        lr=args.lr,
        schedule=args.schedule,
        warmup_steps=args.warmup,
        min_lr_ratio=args.min_lr_ratio,
        weight_decay=args.weight_decay,
        clip_norm=args.clip or None,
        eval_every=args.eval_every,
        patience=args.patience,
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
        seed=args.seed,
        progress=not args.no_progress,
        device=args.device,
        average=args.average,
        average_start=args.average_start,
        ema_decay=args.ema_decay,
    )


# -- lstm train lm ----------------------------------------------------------------------------


def _add_train_lm(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("data")
    d.add_argument("--text", help="a UTF-8 text file (default: the complete works of Shakespeare)")
    d.add_argument("--level", choices=["char", "word", "bpe"], default="char")
    d.add_argument("--min-count", type=positive_int, default=2, help="word level: rarer -> <unk>")
    d.add_argument("--vocab-size", type=positive_int, default=2000, help="bpe level")
    d.add_argument("--batch", type=positive_int, default=32, help="rows per batch")
    d.add_argument("--seq-len", type=positive_int, default=128, help="BPTT length (tokens)")
    d.add_argument("--eval-chars", type=positive_int, default=60_000,
                   help="validation characters read at each --eval-every")  # fmt: skip
    m = p.add_argument_group("model")
    m.add_argument("--cell", choices=["lstm", "gru", "rnn", "transformer"], default="lstm")
    m.add_argument("--backend", default="auto",
                   help="kernel backend: auto, torch (torch.nn's layer) or a name from "
                        "lstm.available_backends()")  # fmt: skip
    m.add_argument("--embed", type=positive_int, default=64)
    m.add_argument("--hidden", type=positive_int, default=384, help="state size (d_model)")
    m.add_argument("--layers", type=positive_int, default=1)
    m.add_argument("--dropout", type=dropout_rate, default=0.0)
    m.add_argument("--tie", action="store_true", help="tie the output layer to the embedding")
    m.add_argument("--init", choices=["torch", "keras"], default="torch",
                   help="recurrent weights: torch's uniform, or Keras's (Glorot, orthogonal, "
                        "forget-gate bias 1)")  # fmt: skip
    m.add_argument("--heads", type=positive_int, default=4, help="transformer")
    m.add_argument("--context", type=positive_int, default=128, help="transformer")
    s = p.add_argument_group("report")
    s.add_argument("--samples", type=int, default=2, help="samples printed at the end")
    s.add_argument("--sample-length", type=positive_int, default=300)
    s.add_argument("--temperature", type=non_negative_float, default=0.8)
    s.add_argument("--dynamic", action="store_true",
                   help="also score the test part with dynamic evaluation (see `lstm evaluate "
                   "--dynamic`)")  # fmt: skip
    s.add_argument("--dynamic-lr", type=non_negative_float, default=0.3,
                   help="its step size (default 0.3)")  # fmt: skip
    add_training_arguments(p)


def _run_train_lm(args: argparse.Namespace) -> int:
    from lstm.tasks.lm import load_lm_data, train_language_model

    if args.backend not in _backend_names():
        raise UsageError(
            f"argument --backend: should be one of {', '.join(_backend_names())}, "
            f"got {args.backend!r}"
        )
    if args.steps is None and args.minutes is None and args.epochs is None:
        args.minutes = 5.0
    if args.cell == "transformer" and args.seq_len > args.context:
        raise UsageError(
            f"argument --seq-len: {args.seq_len} is longer than the transformer's --context "
            f"{args.context}"
        )
    if args.dynamic and args.cell == "transformer":
        raise UsageError("argument --dynamic: for recurrent language models, not a Transformer")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    train_config = train_config_from(args)
    data = load_lm_data(args.text)
    out = args.out or os.path.join("runs", f"lm-{args.cell}")
    options = {"min_count": args.min_count} if args.level == "word" else {}
    if args.level == "bpe":
        options = {"vocab_size": args.vocab_size}
    summary = train_language_model(
        data,
        dict(
            cell=args.cell,
            embed_size=args.embed,
            hidden_size=args.hidden,
            num_layers=args.layers,
            dropout=args.dropout,
            tie_weights=args.tie,
            init=args.init,
            backend=args.backend,
            num_heads=args.heads,
            context=args.context,
        ),
        train_config,
        level=args.level,
        vocab_options=options,
        batch_size=args.batch,
        seq_len=args.seq_len,
        eval_chars=args.eval_chars,
        out_dir=out,
        resume=args.resume,
        samples=max(0, args.samples),
        sample_length=args.sample_length,
        temperature=args.temperature,
        dynamic_lr=args.dynamic_lr if args.dynamic else None,
    )
    if not summary:  # not rank 0
        return 0
    per = "character" if args.level == "char" else "character (via tokens)"
    how = f"state carried through {summary['eval_rows']} streams"
    if args.cell == "transformer":
        how = f"windows of {args.context} tokens, stride {max(1, args.context // 2)}"
    print(
        f"\n[lm] trained {summary['steps']:,} steps ({summary['epochs']:.2f} epochs) in "
        f"{summary['train_seconds']:.0f} s ({summary['stopped']})"
    )
    print(
        f"[lm] held-out bits per {per}, {how}: "
        f"test {summary['test_bpc']:.3f}  (validation, first {summary['val_chars']:,} "
        f"characters: {summary['val_bpc']:.3f}; "
        f"test perplexity {summary['test_perplexity']:.2f} per token)"
    )
    if summary["dynamic_evaluation"]:
        d = summary["dynamic_evaluation"]
        print(f"[lm] test with dynamic evaluation (one stream, a step of lr {d['lr']:g} after "
              f"each {d['seq_len']} tokens, Krause et al. 2018): {d['bpc']:.3f} bits per "
              f"{per} ({d['seconds']:.0f} s)")  # fmt: skip
    for k, text in enumerate(summary["samples"]):
        print(f"\n[lm] sample {k + 1} (temperature {args.temperature}):\n{text}")
    words = summary["next_words"]["The cat sat on the"]
    shown = ", ".join(f"{w!r} {p:.3f}" for w, p in words)
    print(f"\n[lm] next word after 'The cat sat on the': {shown}")
    print(f"\n[lm] checkpoint: {summary['checkpoint']}")
    print(f"[lm] training curves: {summary['curves']}  metrics: {summary['metrics']}")
    print(f"[lm] results: {os.path.join(out, 'results.json')}")
    return 0


# -- generate / evaluate / next-word ----------------------------------------------------------


def _add_checkpoint_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a run directory (e.g. runs/lm-lstm) or a checkpoint in it")
    p.add_argument("--backend", default=None, help="kernel backend (default: the stored one)")


def _load(args: argparse.Namespace):
    from lstm.models.language_model import load_language_model

    if args.backend is not None and args.backend not in _backend_names():
        raise UsageError(
            f"argument --backend: should be one of {', '.join(_backend_names())}, "
            f"got {args.backend!r}"
        )
    return load_language_model(args.checkpoint, backend=args.backend)


def _add_generate(p: argparse.ArgumentParser) -> None:
    _add_checkpoint_argument(p)
    p.add_argument("--prompt", default="", help="text to continue")
    p.add_argument("--length", type=positive_int, default=300, help="tokens to generate")
    p.add_argument("--temperature", type=non_negative_float, default=0.8, help="0: greedy")
    p.add_argument("--top-k", type=positive_int)
    p.add_argument("--top-p", type=probability)
    p.add_argument("--samples", type=positive_int, default=1)
    p.add_argument("--seed", type=int, default=0)


def _run_generate(args: argparse.Namespace) -> int:
    import torch

    from lstm.models.language_model import generate

    model, vocab, _ = _load(args)
    gen = torch.Generator().manual_seed(args.seed)
    for k in range(args.samples):
        if k:
            print("\n" + "-" * 40)
        text = generate(model, vocab, args.prompt, args.length, args.temperature, args.top_k,
                        args.top_p, generator=gen)  # fmt: skip
        print(args.prompt + text)
    return 0


def _add_evaluate(p: argparse.ArgumentParser) -> None:
    _add_checkpoint_argument(p)
    apps = p.add_argument_group("sentiment and forecast checkpoints")
    apps.add_argument("--csv", help="labelled texts / a series (default: the run's own test part)")
    apps.add_argument("--text-col", default="text")
    apps.add_argument("--label-col", default="label")
    apps.add_argument("--fill", choices=["interpolate", "ffill", "zero"])
    apps.add_argument("--out", help="where plots and reports go (default: the run directory)")
    apps.add_argument("--ensemble", nargs="+", metavar="RUN",
                      help="sentiment: average the class probabilities of these classifiers' "
                           "with the checkpoint's (an ensemble; same labels)")  # fmt: skip
    speech = p.add_argument_group("speech checkpoints: other voices or noise than the run's")
    speech.add_argument("--accents", nargs="+", metavar="ACCENT")
    speech.add_argument("--variants", nargs="+", metavar="VARIANT")
    speech.add_argument("--noise-db", type=float, nargs=2, metavar=("LOW", "HIGH"))
    speech.add_argument("--clean", action="store_true", help="no added noise")
    p.add_argument("--text", help="a UTF-8 text file (default: the run's own test part)")
    p.add_argument("--split", choices=["train", "val", "test"], default="test",
                   help="without --text: which part of the run's data")  # fmt: skip
    p.add_argument("--seq-len", type=positive_int, default=256)
    dyn = p.add_argument_group("language models: dynamic evaluation (Krause et al. 2018)")
    dyn.add_argument("--dynamic", action="store_true",
                     help="also score the text with dynamic evaluation: one stream, a gradient "
                     "step on each segment after scoring it")  # fmt: skip
    dyn.add_argument("--dynamic-lr", type=non_negative_float, default=0.3,
                     help="SGD step size on each segment's mean loss (default 0.3)")  # fmt: skip
    dyn.add_argument("--dynamic-decay", type=non_negative_float, default=0.0,
                     help="pull toward the trained weights per segment, in [0, 1)")  # fmt: skip
    dyn.add_argument("--dynamic-seq-len", type=positive_int, default=64, metavar="TOKENS",
                     help="segment length (default 64)")  # fmt: skip
    dyn.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run_evaluate(args: argparse.Namespace) -> int:
    from lstm.checkpoint import CONFIG, find_checkpoint, load_json

    task = load_json(find_checkpoint(args.checkpoint) / CONFIG).get("task")
    # the applications evaluate their own checkpoints
    if getattr(args, "out", None):  # plots and reports go there: it need not exist yet
        Path(args.out).mkdir(parents=True, exist_ok=True)
    if getattr(args, "ensemble", None) and task != "sentiment":
        raise UsageError(f"argument --ensemble: for sentiment checkpoints; this one is {task!r}")
    if task in ("sentiment", "forecast", "speech"):
        if args.dynamic:
            raise UsageError(f"argument --dynamic: for language models; this one is {task!r}")
        return _task(task, "evaluate_checkpoint")(args)
    if args.dynamic and not args.dynamic_decay < 1:
        raise UsageError(f"argument --dynamic-decay: should be below 1, got {args.dynamic_decay}")
    from lstm.data.text import read_text_file
    from lstm.models.language_model import evaluate_dynamic, evaluate_stream
    from lstm.tasks.lm import load_lm_data

    model, vocab, meta = _load(args)
    if args.text is not None:
        text, what = read_text_file(args.text), args.text
    else:
        source = meta.get("data", {}).get("source")
        if source is None:
            raise UsageError("this checkpoint does not say what it trained on: give --text FILE")
        data = load_lm_data(None if source == "shakespeare" else source)
        text, what = getattr(data, args.split), f"{source} ({args.split} part)"
    encoded = vocab.encode_counted(text)
    if len(encoded.ids) < 2:
        raise UsageError(f"{what} has fewer than 2 tokens: nothing to evaluate")
    if not getattr(model, "is_recurrent", True):
        if args.dynamic:
            raise UsageError("argument --dynamic: for recurrent language models, not a Transformer")
        args.seq_len = model.config.context
    rows = max(1, min(16, (len(encoded.ids) - 1) // 64))
    result = evaluate_stream(model, encoded.ids, rows, args.seq_len, chars=len(text))
    print(
        f"{what}: {len(text):,} characters, {result['tokens']:,} tokens scored "
        f"({rows} streams, state carried)"
    )
    if encoded.unknown:
        print(
            f"  note: {encoded.unknown:,} tokens were unknown to the vocabulary (scored as <unk>)"
        )
    print(f"  cross-entropy {result['loss']:.4f} nats/token, perplexity {result['perplexity']:.3f}")
    print(f"  bits per character {result['bpc']:.4f}")
    if args.dynamic:
        dynamic = evaluate_dynamic(model, encoded.ids, args.dynamic_seq_len, args.dynamic_lr,
                                   args.dynamic_decay, chars=len(text),
                                   progress=not args.no_progress)  # fmt: skip
        print(f"  dynamic evaluation (one stream, a step of lr {args.dynamic_lr:g} after each "
              f"{args.dynamic_seq_len} tokens, decay {args.dynamic_decay:g}): cross-entropy "
              f"{dynamic['loss']:.4f} nats/token, bits per character {dynamic['bpc']:.4f}")  # fmt: skip
    return 0


def _add_next_word(p: argparse.ArgumentParser) -> None:
    _add_checkpoint_argument(p)
    p.add_argument("--prompt", default="The cat sat on the")
    p.add_argument("--top", type=positive_int, default=10, help="how many words")


def _run_next_word(args: argparse.Namespace) -> int:
    from lstm.models.language_model import next_words

    model, vocab, _ = _load(args)
    print(f"after {args.prompt!r}:")
    for word, p in next_words(model, vocab, args.prompt, args.top):
        bar = "#" * max(1, round(p * 40))
        print(f"  {word!r:>16} {p:7.4f} {bar}")
    return 0


# -- the registries and main ------------------------------------------------------------------


def _task(module: str, name: str) -> Callable:
    """``lstm.tasks.<module>.<name>``, imported when first called (a fast ``--help``)."""

    def call(*args):
        import importlib

        return getattr(importlib.import_module(f"lstm.tasks.{module}"), name)(*args)

    return call


TRAIN_TASKS: dict[str, tuple[str, AddArguments, Run]] = {
    "lm": (
        "a character/word language model (Shakespeare or --text FILE)",
        _add_train_lm,
        _run_train_lm,
    ),
    "sentiment": (
        "a sentiment classifier (IMDB, Rotten Tomatoes, --csv or --aclimdb) beside TF-IDF",
        _task("sentiment", "add_train_arguments"),
        _task("sentiment", "run_train"),
    ),
    "forecast": (
        "a forecaster (electricity demand, CO2, Seattle or --csv) beside its baselines",
        _task("forecast", "add_train_arguments"),
        _task("forecast", "run_train"),
    ),
    "speech": (
        "speech recognition on synthesized voices: keyword spotting or CTC digit strings",
        _task("speech", "add_train_arguments"),
        _task("speech", "run_train"),
    ),
    "translate": (
        "an encoder-decoder with attention: numbers to words, KJV -> Reina-Valera verses, or --tsv",
        _task("translate", "add_train_arguments"),
        _task("translate", "run_train"),
    ),
}

COMMANDS: dict[str, tuple[str, AddArguments, Run]] = {
    "generate": ("sample text from a trained language model", _add_generate, _run_generate),
    "evaluate": (
        "evaluate a trained model: a language model's bits per character, a classifier's accuracy, "
        "a forecaster's errors beside its baselines",
        _add_evaluate,
        _run_evaluate,
    ),
    "next-word": ("the most likely next words after a prompt", _add_next_word, _run_next_word),
    "predict": (
        "the label and its probability for texts, from a sentiment classifier",
        _task("sentiment", "add_predict_arguments"),
        _task("sentiment", "run_predict"),
    ),
    "forecast": (
        "forecast a CSV with a trained forecaster (writes CSV)",
        _task("forecast", "add_forecast_arguments"),
        _task("forecast", "run_forecast"),
    ),
    "transcribe": (
        "what a trained speech model hears in 16 kHz mono WAV files",
        _task("speech", "add_transcribe_arguments"),
        _task("speech", "run_transcribe"),
    ),
    "translate": (
        "translate text with a trained translation model (greedy or --beam N; --attention PNG)",
        _task("translate", "add_translate_arguments"),
        _task("translate", "run_translate"),
    ),
}


def _lazy(module: str, add: str, run: str) -> tuple[AddArguments, Run]:
    """Argument adders and runners that live in a task module, imported when first used."""
    import importlib

    return (lambda p: getattr(importlib.import_module(module), add)(p),
            lambda a: getattr(importlib.import_module(module), run)(a))  # fmt: skip


COMMANDS["lab"] = (
    "long-time-lag experiments (adding, temporal order, Reber, copy, pixels) judged as the papers do",
    *_lazy("lstm.tasks.lab", "add_lab_arguments", "run_lab_command"),
)


def _add_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", nargs="?", choices=["cpu", "gpu"], default="cpu",
                   help="cpu: fused CPU kernels vs oneDNN/ONNX Runtime; gpu: Triton vs cuDNN")  # fmt: skip
    p.add_argument("options", nargs=argparse.REMAINDER, help="passed to the benchmark script")


def _run_bench(args: argparse.Namespace) -> int:
    import importlib
    from pathlib import Path

    name = {"cpu": "benchmarks.cpu_lstm", "gpu": "benchmarks.gpu_lstm"}[args.suite]
    # The benchmarks are scripts of the repository, not of the package: look for them in the
    # current directory and in the checkout this package was installed from (editable install).
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (root / "benchmarks" / "__init__.py").is_file() and str(root) not in sys.path:
            sys.path.insert(0, str(root))
            break
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError:
        raise UsageError(
            f"{name} is not importable: the benchmarks live in the repository's benchmarks/ "
            "folder; run `lstm bench` from a checkout's root"
        ) from None
    return int(module.main(args.options) or 0)


COMMANDS["bench"] = ("benchmarks: ours against the best peers, measured in one run", _add_bench,
                     _run_bench)  # fmt: skip
COMMANDS["viz"] = (
    "see inside: gradient flow over lags, gate and cell activations of a language model",
    *_lazy("lstm.tasks.inside", "add_viz_arguments", "run_viz"),
)


def build_parser() -> argparse.ArgumentParser:
    """The full parser: ``train <task>`` and every registered command."""
    parser = _Parser(prog="lstm", description="LSTM networks from their equations.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    train = sub.add_parser("train", help="train a model for a task")
    tasks = train.add_subparsers(dest="task", metavar="TASK", parser_class=_Parser)
    for name, (help, add, run) in TRAIN_TASKS.items():
        p = tasks.add_parser(name, help=help, description=help)
        add(p)
        p.set_defaults(run=run)
    for name, (help, add, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help, description=help)
        add(p)
        p.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The console script. Returns the exit status (2 for a user's mistake)."""
    from lstm.checkpoint import CheckpointError
    from lstm.data.text import TextFileError

    debug = os.environ.get("LSTM_DEBUG") == "1"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if getattr(args, "run", None) is None:
            missing = "TASK" if args.command == "train" else "COMMAND"
            choices = TRAIN_TASKS if args.command == "train" else {**COMMANDS, "train": 0}
            raise UsageError(f"give a {missing}: one of {', '.join(choices)} (see `lstm --help`)")
        status = int(args.run(args) or 0)
        from lstm.training import finish_distributed  # under torchrun: the ranks leave together

        finish_distributed()
        return status
    except (UsageError, TextFileError, CheckpointError) as e:
        if debug:
            raise
        print(f"lstm: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError, FloatingPointError) as e:
        if debug:
            raise
        print(f"lstm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lstm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
