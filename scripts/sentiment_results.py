"""The sentiment table of docs/results.md: LSTM, GRU, RNN and the Transformer baseline from
scratch, and the LSTM started from language models pre-trained on review text, beside TF-IDF with
logistic regression, on the fixed splits of IMDB and Rotten Tomatoes.

Each row is one `lstm train sentiment` command, run in a process of its own into runs/<name>
(skipped when runs/<name>/report.json exists, so the table can be built over several sessions:
delete the run to redo it); the script then writes docs/results/sentiment.json (every number)
and docs/results/sentiment.md (the table, with each row's command).

    .venv/bin/python scripts/sentiment_results.py                 # every row (hours on 2 cores)
    .venv/bin/python scripts/sentiment_results.py --only rt-lstm rt-gru
    .venv/bin/python scripts/sentiment_results.py --table         # only rewrite the table

The pre-training rows are budgeted in minutes, so their numbers depend on the machine's speed;
the others are budgeted in epochs. `--schedule constant` is what these rows were measured with:
until 2026-11-24 a run given only `--epochs` kept its peak learning rate throughout, whatever
the schedule (a bug, now fixed: the schedule spans the epochs).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from _runs import ROOT, arguments, run_unless_done, write_results

from lstm.tasks.sentiment import DATASET_NAMES

SCRATCH = "--embed 128 --hidden 128 --word-dropout 0.3 --dropout 0.5"
PRE = "--embed 128 --hidden 256 --word-dropout 0.1 --dropout 0.5 --lr 1e-3"
CELLS = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN", "transformer": "Transformer"}
EPOCHS = {"rt": 6, "imdb": 3}


def _scratch(data: str) -> dict[str, tuple[str, str, str]]:
    """One row per cell, trained from scratch (the Transformer with two layers)."""
    rows = {}
    for cell, label in CELLS.items():
        layers = " --layers 2" if cell == "transformer" else ""
        rows[f"{data}-{cell}"] = (
            data,
            label,
            f"--cell {cell}{layers} {SCRATCH} --epochs {EPOCHS[data]} --schedule constant",
        )
    return rows


# name -> (data set, method label, arguments). The language models that rt-lstm-pretrained trains
# on the IMDB training reviews can start an IMDB classifier too (--pretrained runs/rt-lstm-pretrained
# --embed 128 --hidden 256): not measured, as pre-training at this scale did not help (results.md).
ROWS = {
    **_scratch("rt"),
    "rt-lstm-pretrained": (
        "rt",
        "LSTM, LM pre-trained on IMDB reviews",
        f"--cell lstm {PRE} --pretrain-corpus imdb --pretrain-minutes 20 --epochs 4 "
        "--schedule constant",
    ),
    **_scratch("imdb"),
    "imdb-lstm-e6": (
        "imdb",
        "LSTM, 6 epochs",
        f"--cell lstm {SCRATCH} --epochs 6 --schedule constant",
    ),
    "imdb-lstm-cos6-l1000": (
        "imdb",
        "LSTM, 6 epochs, cosine schedule, reviews up to 1,000 words",
        f"--cell lstm {SCRATCH} --epochs 6 --max-len 1000",
    ),
    "imdb-lstm-h256-cos4-l1000": (
        "imdb",
        "LSTM of 256 per direction, 4 epochs, cosine, up to 1,000 words",
        "--cell lstm --embed 128 --hidden 256 --word-dropout 0.3 --dropout 0.5 --epochs 4 "
        "--max-len 1000",
    ),
    # after the IMDB rows: it starts from imdb-lstm-e6's classifier
    "rt-lstm-ft-imdb": (
        "rt",
        "LSTM fine-tuned from the IMDB classifier `imdb-lstm-e6`",
        f"--cell lstm {SCRATCH} --epochs 4 --lr 2e-3 --finetune runs/imdb-lstm-e6",
    ),
}


def command(name: str, threads: int) -> list[str]:
    data, _, args = ROWS[name]
    return ["lstm", "train", "sentiment", "--dataset", data, *args.split(), "--threads",
            str(threads), "--no-progress", "--out", f"runs/{name}"]  # fmt: skip


def table(out: Path) -> None:
    results, lines = {}, []
    for data in ("rt", "imdb"):
        lines += [f"**{DATASET_NAMES[data]}** (test part of the fixed split)", "",
                  "| method | accuracy | F1 | run | classifier training |",
                  "|---|---|---|---|---|"]  # fmt: skip
        baselines = {}
        for name, (d, label, _) in ROWS.items():
            report = ROOT / "runs" / name / "report.json"
            if d != data or not report.exists():
                continue
            rows = json.loads(report.read_text())
            ours = next(v for k, v in rows.items() if not k.startswith("TF-IDF"))
            for k, v in rows.items():  # every baseline met (a fine-tuned row brings its own)
                if k.startswith("TF-IDF"):
                    baselines.setdefault(k, v)
            # "(training N s)" in the report's title: the classifier's training, without any
            # language-model pre-training (which the command budgets in minutes).
            found = re.search(r"\(training (\d+) s\)", (report.parent / "report.md").read_text())
            seconds = int(found.group(1)) if found else None
            results[name] = {"data": data, "method": label, "command": " ".join(command(name, 1)),
                             "training_seconds": seconds, **ours}  # fmt: skip
            minutes = f"{seconds / 60:.1f} min" if seconds else ""
            lines.append(f"| {label} | {100 * ours['accuracy']:.2f}% | {ours['f1']:.4f} | "
                         f"`{name}` | {minutes} |")  # fmt: skip
        for i, (k, v) in enumerate(baselines.items()):
            lines.append(f"| {k} | {100 * v['accuracy']:.2f}% | {v['f1']:.4f} | | |")
            results[f"{data}-tfidf" + (f"-{i}" if i else "")] = {"data": data, "method": k, **v}
        lines.append("")
    lines += ["Commands (each with `--threads 1 --no-progress --out runs/<run>`):", "", "```"]
    lines += [f"{name}: lstm train sentiment --dataset {d} {a}" for name, (d, _, a) in ROWS.items()]
    lines += ["```", ""]
    write_results(out, "sentiment", results, lines, "runs")


def main() -> None:
    args = arguments(__doc__, ROWS)
    if not args.table:
        for name in args.only or ROWS:
            run_unless_done(command(name, args.threads), f"runs/{name}")
    table(ROOT / args.out)


if __name__ == "__main__":
    main()
