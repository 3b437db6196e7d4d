"""Speech recognition end to end: synthesized clips -> features -> a keyword classifier or a CTC
recognizer -> held-out-voice accuracy and confusion matrix, or digit error rate with greedy and
beam decoding. ``lstm train speech``, ``lstm transcribe`` and ``lstm evaluate`` are thin shells
over these functions.

The data (:mod:`lstm.data.audio`) is synthesized with espeak-ng (no package ships recorded human
speech) and split by voice: validation and test speakers are never heard in training. The best
weights by validation score (keywords: loss; digits: greedy digit error rate, then loss) are the
final checkpoint (``checkpoints/final``, pointed at by ``BEST``).
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lstm import checkpoint as ckpt
from lstm import metrics
from lstm.data.audio import (
    ACCENTS,
    DIGIT_WORDS,
    KEYWORDS,
    VARIANTS,
    SpeechDataset,
    build_digits,
    build_keywords,
    read_wav,
    trim_silence,
    voice_split,
    voices,
)
from lstm.data.features import FeatureConfig, extract, normalize
from lstm.decoding import ctc_greedy, ctc_prefix_beam_search, edit_distance, token_error_rate
from lstm.models.classifier import classification_loss
from lstm.models.speech import SpeechConfig, build_speech_model, ctc_loss
from lstm.viz import plot_confusion

__all__ = [
    "FrameBatches",
    "SpeechData",
    "build_dataset",
    "evaluate_model",
    "load_speech_model",
    "prepare",
    "train_speech",
    "transcribe",
]

TASK = "speech"


# --------------------------------------------------------------------------------------------
# Data: clips -> feature frames and targets
# --------------------------------------------------------------------------------------------


def build_dataset(task: str, root=None, **options) -> SpeechDataset:
    """The keyword or digit-string data set (:func:`lstm.data.audio.build_keywords` /
    :func:`~lstm.data.audio.build_digits`, cached on disk)."""
    if task == "keywords":
        return build_keywords(root, **options)
    if task == "digits":
        return build_digits(root, **options)
    raise ValueError(f"task should be 'keywords' or 'digits', got {task!r}")


@dataclass
class SpeechData:
    """Feature frames and targets per split. ``labels``: the class names (keywords) or the token
    names, token ``i + 1`` being ``labels[i]`` (digits; 0 is CTC's blank)."""

    task: str
    features: FeatureConfig
    labels: list[str]
    frames: dict[str, list[Tensor]]  # split -> [(T, F)]
    targets: dict[str, list]  # split -> class index (keywords) or token ids (digits)
    texts: dict[str, list[str]]
    source: dict


def encode_text(task: str, labels: Sequence[str], text: str):
    """A clip's target: the class index of the word, or the token ids of the digit words."""
    if task == "keywords":
        return labels.index(text)
    return [labels.index(w) + 1 for w in text.split()]


def prepare(
    dataset: SpeechDataset,
    task: str,
    features: FeatureConfig | None = None,
    progress: bool = False,
    splits: Sequence[str] | None = None,
) -> SpeechData:
    """Reads every clip (of ``splits`` only, when given), computes its features and encodes its
    words. Global normalization uses the statistics ``features`` holds (a trained model's), else
    measures them on the training part."""
    features = copy.deepcopy(features or FeatureConfig())
    needs_train = features.norm == "global" and features.mean is None
    if splits is not None and needs_train and "train" not in splits:
        raise ValueError("global normalization without statistics needs the train split")
    labels = list(dataset.spec["words"]) if task == "keywords" else list(DIGIT_WORDS)
    frames, targets, texts = {}, {}, {}
    clips = [c for c in dataset.clips if splits is None or c.split in splits]
    if progress:
        from tqdm.auto import tqdm

        clips = tqdm(clips, unit="clip", desc="features")
    raw = {}
    for clip in clips:
        x = extract(read_wav(dataset.path(clip)), features, norm=False)
        raw.setdefault(clip.split, []).append(x)
        targets.setdefault(clip.split, []).append(encode_text(task, labels, clip.text))
        texts.setdefault(clip.split, []).append(clip.text)
    if needs_train:
        train = torch.cat(raw["train"])
        features.mean = train.mean(0).tolist()
        features.std = train.std(0).tolist()
    for split, xs in raw.items():
        frames[split] = [normalize(x, features) for x in xs]
    return SpeechData(task, features, labels, frames, targets, texts, dict(dataset.spec))


def collate(frames: Sequence[Tensor], targets: Sequence, ctc: bool) -> tuple:
    """Pads a batch: ``(frames (B, T, F), lengths (B,), labels (B,))``, or for CTC ``(frames,
    lengths, targets (B, S) padded with 0, target_lengths (B,))``."""
    lengths = torch.tensor([len(x) for x in frames])
    padded = torch.nn.utils.rnn.pad_sequence(list(frames), batch_first=True)  # (B, T, F)
    if not ctc:
        return padded, lengths, torch.tensor(list(targets))
    target_lengths = torch.tensor([len(t) for t in targets])
    out = torch.zeros(len(targets), int(target_lengths.max()), dtype=torch.long)
    for i, t in enumerate(targets):
        out[i, : len(t)] = torch.tensor(t)
    return padded, lengths, out, target_lengths


class FrameBatches:
    """Batches of similar-length clips: each epoch shuffles (seeded by ``seed + epoch``), sorts
    windows of 20 batches by length (less padding), and shuffles the batches' order."""

    def __init__(self, frames, targets, batch_size: int, shuffle: bool, ctc: bool, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size should be at least 1, got {batch_size}")
        if not frames:
            raise ValueError("no clips to batch")
        self.frames, self.targets, self.batch_size = frames, targets, batch_size
        self.shuffle, self.ctc, self.seed, self.epoch = shuffle, ctc, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.frames) // self.batch_size)

    def order(self) -> list[np.ndarray]:
        """The clip indices of each batch, in the order they are served."""
        n, size = len(self.frames), self.batch_size
        lengths = np.array([len(x) for x in self.frames])
        if not self.shuffle:
            idx = np.argsort(lengths, kind="stable")
            return [idx[i : i + size] for i in range(0, n, size)]
        rng = np.random.default_rng(self.seed + self.epoch)
        idx = rng.permutation(n)
        window = size * 20
        for i in range(0, n, window):
            part = idx[i : i + window]
            idx[i : i + window] = part[np.argsort(lengths[part], kind="stable")]
        batches = [idx[i : i + size] for i in range(0, n, size)]
        return [batches[k] for k in rng.permutation(len(batches))]

    def __iter__(self):
        for b in self.order():
            yield collate([self.frames[i] for i in b], [self.targets[i] for i in b], self.ctc)


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def _outputs(model, frames: list[Tensor], batch_size: int = 64) -> list[Tensor]:
    """Per clip: logits ``(K,)`` (keywords) or log-probabilities ``(T', V+1)`` (CTC), in order."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ctc = model.config.task == "digits"
    batches = FrameBatches(frames, [0] * len(frames), batch_size, shuffle=False, ctc=False)
    out: list[Tensor | None] = [None] * len(frames)
    for idx in batches.order():
        x, lengths, _ = collate([frames[i] for i in idx], [0] * len(idx), False)
        if ctc:
            log_probs, steps = model(x.to(device), lengths)
            log_probs = log_probs.cpu()
            for j, i in enumerate(idx):
                out[i] = log_probs[: int(steps[j]), j]
        else:
            logits = model(x.to(device), lengths).float().cpu()
            for j, i in enumerate(idx):
                out[i] = logits[j]
    model.train(was_training)
    return out


def evaluate_model(
    model, frames: list[Tensor], targets: list, labels: Sequence[str], beam: int = 0
) -> dict:
    """Keywords: loss, accuracy and confusion matrix. Digits: CTC loss, greedy digit error rate,
    utterance error rate, and with ``beam > 0`` the same for prefix beam search."""
    outputs = _outputs(model, frames)
    if model.config.task == "keywords":
        logits = torch.stack(outputs)  # (N, K)
        y = torch.tensor(targets)
        pred = logits.argmax(1).numpy()
        loss = float(torch.nn.functional.cross_entropy(logits, y))
        return {"loss": loss, "accuracy": metrics.accuracy(y.numpy(), pred),
                "confusion": metrics.confusion_matrix(y.numpy(), pred, len(labels)).tolist(),
                "count": len(targets)}  # fmt: skip
    losses = []
    for lp, t in zip(outputs, targets):
        loss = torch.nn.functional.ctc_loss(lp, torch.tensor(t), (len(lp),), (len(t),), blank=0,
                                            reduction="sum", zero_infinity=True)  # fmt: skip
        losses.append(float(loss) / len(t))
    result = {"loss": float(np.mean(losses)), "count": len(targets)}
    decoders = {"greedy": ctc_greedy}
    if beam > 0:
        decoders["beam"] = lambda lp: ctc_prefix_beam_search(lp, beam)[0]
    for name, decode in decoders.items():
        hyps = [decode(lp) for lp in outputs]
        result[f"{name}_ter"] = token_error_rate(targets, hyps)
        result[f"{name}_utterance_errors"] = float(np.mean([h != t for h, t in zip(hyps, targets)]))
        if name == "greedy":
            result["examples"] = [
                {"truth": " ".join(labels[i - 1] for i in t),
                 "heard": " ".join(labels[i - 1] for i in h), "errors": edit_distance(t, h)}
                for t, h in list(zip(targets, hyps))[:8]
            ]  # fmt: skip
    return result


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def train_speech(
    data: SpeechData,
    config: SpeechConfig,
    train_config,
    *,
    batch_size: int = 32,
    beam: int = 8,
    out_dir: str | os.PathLike | None = None,
    augment: float = 0.0,
) -> dict:
    """Trains on ``data``'s training part with :func:`lstm.training.fit`, keeps the weights of
    the best validation score, scores validation and test, and (with ``out_dir``) writes the
    final checkpoint, ``results.json``, ``report.md`` and a confusion matrix PNG (keywords).
    ``augment``: the largest fraction of channels and of time zeroed in training (SpecAugment-like
    masks, one band and one span per clip; 0: none)."""
    from lstm.training import fit

    ctc = config.task == "digits"
    torch.manual_seed(train_config.seed)
    model = build_speech_model(config)
    train = FrameBatches(data.frames["train"], data.targets["train"], batch_size, True, ctc,
                         train_config.seed)  # fmt: skip
    val_part = "val" if data.frames.get("val") else "train"
    loss_fn = ctc_loss if ctc else classification_loss
    if augment > 0:
        loss_fn = _masked(loss_fn, augment)

    def eval_fn(m):
        r = evaluate_model(m, data.frames[val_part], data.targets[val_part], data.labels)
        keep = ("loss", "greedy_ter", "greedy_utterance_errors") if ctc else ("loss", "accuracy")
        return {k: r[k] for k in keep}

    extra = {"task": TASK, "speech_task": config.task, "model": config.to_json(),
             "features": data.features.to_json(), "labels": data.labels, "data": data.source,
             "beam": beam}  # fmt: skip
    backend = _warm_up(model, data.frames["train"][:2], train_config.device)
    t0 = time.perf_counter()
    # CTC keeps the weights of the lowest validation token error rate (loss breaks ties)
    best_key = (lambda r: (r["greedy_ter"], r["loss"])) if ctc else None
    result = fit(model, train, loss_fn, train_config, eval_fn=eval_fn, out_dir=out_dir,
                 extra=extra, restore_best=True, best_key=best_key)  # fmt: skip
    scores = {}
    for split in ("val", "test"):
        if data.frames.get(split):
            scores[split] = evaluate_model(model, data.frames[split], data.targets[split],
                                           data.labels, beam if split == "test" else 0)  # fmt: skip
    summary = {"task": config.task, "cell": config.cell, "backend": backend,
               "threads": torch.get_num_threads(), "steps": result.step,
               "epochs": result.epoch, "train_seconds": result.train_seconds,
               "wall_seconds": time.perf_counter() - t0, "stopped": result.stopped,
               "parameters": sum(p.numel() for p in model.parameters()),
               "clips": {k: len(v) for k, v in data.frames.items()}, "beam": beam,
               **scores}  # fmt: skip
    summary["model"] = model
    if out_dir is not None:
        out = Path(out_dir)
        summary["checkpoint"] = str(ckpt.write_final(out, model, extra, train_config))
        if not ctc and "test" in scores:
            summary["confusion_png"] = str(plot_confusion(
                scores["test"]["confusion"], data.labels, out / "confusion.png",
                f"keywords, held-out voices: accuracy {scores['test']['accuracy']:.2%}",
                compact=True))  # fmt: skip
        public = {k: v for k, v in summary.items() if k != "model"}
        ckpt.atomic_write_text(out / "results.json", json.dumps(public, indent=2) + "\n")
        ckpt.atomic_write_text(out / "report.md", report(public))
    return summary


def _warm_up(model, frames: list[Tensor], device: str) -> str:
    """One forward pass before the timed training (a compiled kernel backend is built or loaded
    on first use); returns the name of the backend the recurrent stack runs."""
    from lstm.kernels import describe

    x, lengths, _ = collate(frames, [0] * len(frames), False)
    with torch.no_grad():
        model.to(device)(x.to(device), lengths)
    return describe(model.config.backend, device)


def _masked(loss_fn, fraction: float):
    """``loss_fn`` on frames with one random band of channels and one span of frames zeroed per
    clip (at most ``fraction`` of each), in training only."""

    def masked(model, batch, state):
        if not model.training:
            return loss_fn(model, batch, state)
        frames, lengths = batch[0].clone(), batch[1]
        B, _, C = frames.shape
        for b in range(B):
            width = int(torch.randint(0, max(1, int(fraction * C)) + 1, ()))
            start = int(torch.randint(0, C - width + 1, ()))
            frames[b, :, start : start + width] = 0
            span = int(torch.randint(0, max(1, int(fraction * int(lengths[b]))) + 1, ()))
            at = int(torch.randint(0, max(1, int(lengths[b]) - span + 1), ()))
            frames[b, at : at + span] = 0
        return loss_fn(model, (frames, *batch[1:]), state)

    return masked


def report(summary: dict) -> str:
    """A markdown table of the run's held-out scores."""
    lines = [f"speech ({summary['task']}), {summary['cell'].upper()} (backend "
             f"{summary.get('backend', '?')}, {summary.get('threads', '?')} threads), "
             f"{summary['parameters']:,} parameters, {summary['steps']:,} steps in "
             f"{summary['train_seconds']:.0f} s; clips: {summary['clips']}\n"]  # fmt: skip
    if summary["task"] == "keywords":
        lines += ["| split | accuracy | loss | clips |", "|---|---|---|---|"]
        for split in ("val", "test"):
            if split in summary:
                r = summary[split]
                lines.append(f"| {split} | {r['accuracy']:.2%} | {r['loss']:.4f} | {r['count']} |")
    else:
        lines += ["| split | decoding | digit error rate | utterances wrong | clips |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for split in ("val", "test"):
            r = summary.get(split)
            for name in ("greedy", "beam"):
                if r and f"{name}_ter" in r:
                    how = name if name == "greedy" else f"beam {summary['beam']}"
                    lines.append(f"| {split} | {how} | {r[f'{name}_ter']:.2%} | "
                                 f"{r[f'{name}_utterance_errors']:.2%} | {r['count']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Loading and transcribing
# --------------------------------------------------------------------------------------------


def load_speech_model(path: str | os.PathLike) -> tuple[torch.nn.Module, dict]:
    """A trained speech model and its checkpoint config (``BEST``, else ``LATEST``)."""
    _, meta, weights = ckpt.load_task_checkpoint(path, TASK, "a speech model")
    model = build_speech_model(SpeechConfig.from_json(meta["model"]))
    model.load_state_dict(weights)
    model.eval()
    return model, meta


@torch.no_grad()
def transcribe(
    model, meta: dict, path: str | os.PathLike, beam: int | None = None, trim: bool = True
) -> dict:
    """What ``model`` hears in a 16 kHz mono 16-bit WAV file: ``{"text", "score"}`` (the word and
    its probability, or the transcript and its log-probability under CTC). ``trim``: cut the
    silence at both ends first, as the training clips were (:func:`lstm.data.audio.trim_silence`);
    the models never heard leading or trailing silence."""
    features = FeatureConfig.from_json(meta["features"])
    samples = read_wav(path, features.sample_rate)
    if trim:
        samples = trim_silence(samples, sample_rate=features.sample_rate)
    frames = extract(samples, features)  # (T, F)
    labels = meta["labels"]
    out = _outputs(model, [frames])[0]
    if model.config.task == "keywords":
        p = out.softmax(-1)
        k = int(p.argmax())
        return {"text": labels[k], "score": float(p[k])}
    width = meta.get("beam", 8) if beam is None else beam
    if width > 0:
        ids, score = ctc_prefix_beam_search(out, width)
    else:
        ids = ctc_greedy(out)
        score = float(out.max(1).values.sum())  # the best path's log-probability
    return {"text": " ".join(labels[i - 1] for i in ids), "score": score}


# --------------------------------------------------------------------------------------------
# Command line (registered in lstm.cli)
# --------------------------------------------------------------------------------------------


def add_train_arguments(p) -> None:
    """Options of ``lstm train speech``."""
    from lstm.cli import add_training_arguments, dropout_rate, non_negative_float, positive_int

    d = p.add_argument_group("data (synthesized with espeak-ng, cached on disk)")
    d.add_argument("--task", choices=["keywords", "digits"], default="digits",
                   help="keywords: classify a spoken word; digits: transcribe digit strings")  # fmt: skip
    d.add_argument("--data-dir", help="cache folder (default: $LSTM_SPEECH_CACHE or "
                   "~/.cache/lstm/speech)")  # fmt: skip
    d.add_argument("--accents", nargs="+", default=list(ACCENTS), metavar="ACCENT")
    d.add_argument("--variants", nargs="+", default=list(VARIANTS), metavar="VARIANT",
                   help="speaker variants; m6, f4 are validation and m7, f5 test voices")  # fmt: skip
    d.add_argument("--words", nargs="+", default=list(KEYWORDS), help="keywords")
    d.add_argument("--renditions", type=positive_int, default=3,
                   help="keywords: clips per word and voice")  # fmt: skip
    d.add_argument("--per-voice", type=positive_int, default=50,
                   help="digits: strings per voice")  # fmt: skip
    d.add_argument("--min-digits", type=positive_int, default=3)
    d.add_argument("--max-digits", type=positive_int, default=7)
    d.add_argument("--noise-db", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="add white noise at an SNR drawn from [LOW, HIGH] dB")  # fmt: skip
    d.add_argument("--data-seed", type=int, default=0)
    d.add_argument("--workers", type=positive_int, help="synthesis processes at once")
    f = p.add_argument_group("features")
    f.add_argument("--features", choices=["logmel", "mfcc"], default="logmel")
    f.add_argument("--mels", type=positive_int, default=40)
    f.add_argument("--mfcc", type=positive_int, default=13)
    f.add_argument("--norm", choices=["utterance", "global", "none"], default="utterance")
    m = p.add_argument_group("model")
    m.add_argument("--cell", choices=["lstm", "gru", "rnn"], default="lstm")
    m.add_argument("--backend", default="auto")
    m.add_argument("--hidden", type=positive_int, default=128, help="per direction")
    m.add_argument("--layers", type=positive_int, default=2)
    m.add_argument("--unidirectional", action="store_true")
    m.add_argument("--stack", type=positive_int, default=4, help="frames per recurrent step")
    m.add_argument("--dropout", type=dropout_rate, default=0.1)
    m.add_argument("--pooling", choices=["last", "max", "mean", "concat"], default="concat")
    m.add_argument("--augment", type=non_negative_float, default=0.15,
                   help="largest fraction of channels and time masked per clip in training")  # fmt: skip
    m.add_argument("--batch", type=positive_int, default=32)
    m.add_argument("--beam", type=int, default=8, help="digits: beam width of the test (0: none)")
    add_training_arguments(p)
    p.set_defaults(lr=3e-3, warmup=50)


def _dataset_from(args) -> SpeechDataset:
    options = dict(voice_names=voices(args.accents, args.variants), seed=args.data_seed,
                   noise_db=tuple(args.noise_db) if args.noise_db else None,
                   workers=args.workers, progress=not args.no_progress)  # fmt: skip
    if args.task == "keywords":
        options.update(words=args.words, renditions=args.renditions)
    else:
        options.update(per_voice=args.per_voice, min_digits=args.min_digits,
                       max_digits=args.max_digits)  # fmt: skip
    return build_dataset(args.task, args.data_dir, **options)


def run_train(args) -> int:
    """``lstm train speech``."""
    from lstm.cli import UsageError, train_config_from

    if args.steps is None and args.minutes is None and args.epochs is None:
        args.minutes = 5.0
    if args.threads:
        torch.set_num_threads(args.threads)
    bad = [a for a in args.accents if a not in ACCENTS]
    if bad:
        raise UsageError(f"argument --accents: {bad[0]!r} is not one of {', '.join(ACCENTS)}")
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad:
        raise UsageError(f"argument --variants: {bad[0]!r} is not one of {', '.join(VARIANTS)}")
    if all(voice_split(v) != "train" for v in voices(args.accents, args.variants)):
        raise UsageError(
            "argument --variants: no training voices; give some besides m6, f4, m7, f5"
        )
    if args.beam < 0:
        raise UsageError(f"argument --beam: should be >= 0, got {args.beam}")
    if args.resume:  # refused, not ignored: a fresh run would overwrite the run being resumed
        raise UsageError("argument --resume: speech runs cannot be resumed yet; start anew")
    train_config = train_config_from(args)
    train_config.carry_state = False
    t0 = time.perf_counter()
    dataset = _dataset_from(args)
    features = FeatureConfig(kind=args.features, n_mels=args.mels, n_mfcc=args.mfcc,
                             norm=args.norm)  # fmt: skip
    data = prepare(dataset, args.task, features, progress=not args.no_progress)
    counts = {k: len(v) for k, v in data.frames.items()}
    print(f"[speech] {args.task}: {len(dataset.clips):,} clips from {len(dataset.spec['voices'])} "
          f"voices in {dataset.folder} ({time.perf_counter() - t0:.0f} s with features); "
          f"clips per split {counts}")  # fmt: skip
    if train_config.eval_every is None:
        train_config.eval_every = max(1, len(data.frames["train"]) // args.batch)
    config = SpeechConfig(task=args.task, num_features=features.size,
                          num_classes=len(data.labels), cell=args.cell, hidden_size=args.hidden,
                          num_layers=args.layers, bidirectional=not args.unidirectional,
                          stack=args.stack, dropout=args.dropout, pooling=args.pooling,
                          backend=args.backend)  # fmt: skip
    out = Path(args.out or f"runs/speech-{args.task}")
    summary = train_speech(data, config, train_config, batch_size=args.batch, beam=args.beam,
                           out_dir=out, augment=args.augment)  # fmt: skip
    print()
    print(report({k: v for k, v in summary.items() if k != "model"}))
    test = summary.get("test", {})
    for e in test.get("examples", [])[:4]:
        print(f"[speech] said {e['truth']!r}, heard {e['heard']!r}")
    if "confusion_png" in summary:
        print(f"[speech] confusion matrix: {summary['confusion_png']}")
    print(f"[speech] checkpoint {summary['checkpoint']}; report {out / 'report.md'}")
    return 0


def add_transcribe_arguments(p) -> None:
    """Options of ``lstm transcribe``."""
    p.add_argument("checkpoint", help="a run directory of `lstm train speech` or a checkpoint")
    p.add_argument("wav", nargs="+", help="16 kHz mono 16-bit WAV files")
    p.add_argument("--beam", type=int, help="digits: beam width (0: greedy; default: the run's)")
    p.add_argument("--no-trim", action="store_true",
                   help="keep the silence at both ends (trimmed by default, as in training)")  # fmt: skip


def run_transcribe(args) -> int:
    """``lstm transcribe CHECKPOINT file.wav ...``: one line per file."""
    if args.beam is not None and args.beam < 0:
        raise ValueError(f"argument --beam: should be >= 0, got {args.beam}")
    model, meta = load_speech_model(args.checkpoint)
    for path in args.wav:  # read them all first: a bad file fails before any output
        read_wav(path, meta["features"]["sample_rate"])
    for path in args.wav:
        r = transcribe(model, meta, path, args.beam, trim=not args.no_trim)
        what = "p" if model.config.task == "keywords" else "log p"
        print(f"{path}\t{r['text']}\t({what} {r['score']:.3f})")
    return 0


def evaluate_checkpoint(args) -> int:
    """``lstm evaluate`` of a speech checkpoint: the ``--split`` voices of the run's own data
    (found in the cache, or rebuilt from the run's spec), or, with ``--accents``, ``--variants``,
    ``--noise-db`` or ``--clean``, a new set of the ``--split`` voices under those conditions."""
    model, meta = load_speech_model(args.checkpoint)
    task = meta["speech_task"]
    spec = dict(meta["data"])
    options = {k: v for k, v in spec.items() if k not in ("kind", "voices", "format")}
    names = spec["voices"]
    accents, variants = getattr(args, "accents", None), getattr(args, "variants", None)
    noise, clean = getattr(args, "noise_db", None), getattr(args, "clean", False)
    if noise and clean:
        raise ValueError("give --noise-db or --clean, not both")
    changed = bool(accents or variants or noise or clean)
    for name, given, known in (("accents", accents, ACCENTS), ("variants", variants, VARIANTS)):
        bad = [g for g in given or [] if g not in known]
        if bad:
            raise ValueError(f"argument --{name}: {bad[0]!r} is not one of {', '.join(known)}")
    if changed:
        names = [v for v in voices(accents or ACCENTS, variants or VARIANTS)
                 if voice_split(v) == args.split]  # fmt: skip
        if not names:
            raise ValueError(f"none of those voices is a {args.split} voice (see --variants)")
        if noise or clean:
            options["noise_db"] = noise or None
    if options.get("noise_db") is not None:
        options["noise_db"] = tuple(options["noise_db"])
    dataset = build_dataset(task, None, voice_names=names, **options)
    features = FeatureConfig.from_json(meta["features"])
    split = args.split
    # global normalization: the run's own statistics; only the split asked for is read
    data = prepare(dataset, task, features, splits=(split,))
    r = evaluate_model(model, data.frames[split], data.targets[split], meta["labels"],
                       meta.get("beam", 8))  # fmt: skip
    conditions = ""
    if changed:
        snr = options["noise_db"]
        conditions = (f", accents {accents or 'all'}, variants {variants or 'all'}, "
                      + (f"noise {snr[0]:g}-{snr[1]:g} dB SNR" if snr else "no noise"))  # fmt: skip
    what = f"{task} ({split} voices{conditions}, {r['count']:,} clips)"
    if task == "keywords":
        out = Path(getattr(args, "out", None) or args.checkpoint)
        png = plot_confusion(r["confusion"], meta["labels"], out / "confusion-evaluate.png", what,
                             compact=True)  # fmt: skip
        print(f"{what}: accuracy {r['accuracy']:.2%}, loss {r['loss']:.4f}")
        print(f"plot: {png}")
    else:
        print(f"{what}: digit error rate greedy {r['greedy_ter']:.2%}, beam "
              f"{r.get('beam_ter', float('nan')):.2%}; utterances wrong greedy "
              f"{r['greedy_utterance_errors']:.2%}")  # fmt: skip
    return 0
