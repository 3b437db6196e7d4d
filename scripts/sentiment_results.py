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

A row whose run is gone from runs/ (runs do not outlive a machine) keeps the numbers stored for it
in docs/results/sentiment.json. The ensembles (ENSEMBLES) average the class probabilities of rows
already run, as `lstm evaluate RUN --ensemble RUN ...` does.

The pre-training rows are budgeted in minutes, so their numbers depend on the machine's speed;
the others are budgeted in epochs. `--schedule constant` is what these rows were measured with:
until 2026-11-24 a run given only `--epochs` kept its peak learning rate throughout, whatever
the schedule (a bug, now fixed: the schedule spans the epochs).
"""

from __future__ import annotations

import functools
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
    **{
        f"imdb-lstm-e6-ht{suffix}": (
            "imdb",
            f"LSTM, 6 epochs, each review's first 100 and last 300 words{label}",
            f"--cell lstm {SCRATCH} --epochs 6 --schedule constant --keep-head 100{seed}",
        )
        for suffix, label, seed in [("", "", "")]
        + [(f"-s{k}", f", seed {k}", f" --seed {k}") for k in (1, 2, 3)]
        + [(f"-s{k}", f", seed {k}", f" --seed {k} --no-baseline") for k in (4, 5)]
    },
    # the same recipe with the GRU (2026-11-25, later): members of a more diverse ensemble
    **{
        f"imdb-gru-e6-ht-s{k}": (
            "imdb",
            f"GRU, 6 epochs, each review's first 100 and last 300 words, seed {k}",
            f"--cell gru {SCRATCH} --epochs 6 --schedule constant --keep-head 100 --seed {k}"
            + (" --no-baseline" if k == 2 else ""),
        )
        for k in (0, 1, 2)
    },
    # the head-and-tail recipe with stochastic weight averaging over its last three epochs
    # (--average swa, 2026-11-25, thirteenth session): seeds 0 and 1, against the rows above
    **{
        f"imdb-lstm-e6-ht-swa{suffix}": (
            "imdb",
            f"LSTM, head and tail, 6 epochs, weights averaged over the last 3{label}",
            f"--cell lstm {SCRATCH} --epochs 6 --schedule constant --keep-head 100{seed} "
            "--no-baseline --average swa --average-start 0.5",
        )
        for suffix, label, seed in [("", "", ""), ("-s1", ", seed 1", " --seed 1")]
    },
    "imdb-lstm-e6-ht800": (
        "imdb",
        "LSTM, 6 epochs, each review's first 200 and last 600 words",
        f"--cell lstm {SCRATCH} --epochs 6 --schedule constant --max-len 800 --keep-head 200",
    ),
    "imdb-lstm-e512-ht": (
        "imdb",
        "LSTM, embedding 512, 6 epochs, first 100 and last 300 words",
        "--cell lstm --embed 512 --hidden 128 --word-dropout 0.3 --dropout 0.5 --epochs 6 "
        "--schedule constant --keep-head 100",
    ),
    # the head-and-tail recipe with the embedding started from word2vec (--word2vec 5: skip-gram,
    # five passes over the training reviews), and with adversarial training on top (--adversarial
    # 5, Miyato et al. 2017): 2026-12-08
    **{
        f"imdb-lstm-e6-ht-w2v{adv}-s{k}": (
            "imdb",
            f"LSTM, head and tail, 6 epochs, word2vec embedding{label}, seed {k}",
            f"--cell lstm {SCRATCH} --epochs 6 --schedule constant --keep-head 100 --seed {k} "
            f"--word2vec 5{option} --no-baseline",
        )
        for adv, label, option, seeds in [
            ("", "", "", (0, 1)),
            ("-adv5", ", adversarial training (ε 5)", " --adversarial 5", (0, 1, 2, 3)),
        ]
        for k in seeds
    },
    # after the IMDB rows: they start from IMDB classifiers
    "rt-lstm-ft-imdb": (
        "rt",
        "LSTM fine-tuned from the IMDB classifier `imdb-lstm-e6`",
        f"--cell lstm {SCRATCH} --epochs 4 --lr 2e-3 --finetune runs/imdb-lstm-e6",
    ),
    **{
        f"rt-lstm-ft-imdb-ht{suffix}": (
            "rt",
            f"LSTM fine-tuned from the IMDB classifier `imdb-lstm-e6-ht{suffix}`",
            f"--cell lstm {SCRATCH} --epochs 4 --lr 2e-3 --schedule constant "
            f"--finetune runs/imdb-lstm-e6-ht{suffix}",
        )
        for suffix in ["", "-s1", "-s2", "-s3"]
    },
    **{
        f"rt-{cell}-ft-imdb-ht-s{k}": (
            "rt",
            f"{CELLS[cell]} fine-tuned from the IMDB classifier `imdb-{cell}-e6-ht-s{k}`",
            f"--cell {cell} {SCRATCH} --epochs 4 --lr 2e-3 --schedule constant "
            f"--finetune runs/imdb-{cell}-e6-ht-s{k} --no-baseline",
        )
        for cell, k in [("lstm", 4), ("lstm", 5), ("gru", 0), ("gru", 1), ("gru", 2)]
    },
    **{
        f"rt-lstm-ft-imdb-w2v{adv}-s{k}": (
            "rt",
            f"LSTM fine-tuned from the IMDB classifier `imdb-lstm-e6-ht-w2v{adv}-s{k}`",
            f"--cell lstm {SCRATCH} --epochs 4 --lr 2e-3 --schedule constant "
            f"--finetune runs/imdb-lstm-e6-ht-w2v{adv}-s{k}",
        )
        for adv, seeds in [("", (0, 1)), ("-adv5", (0, 1, 2, 3))]
        for k in seeds
    },
    # language models pre-trained for 25 minutes per direction on a faster machine than
    # rt-lstm-pretrained's 20; then the same classifier started from them with ULMFiT's
    # discriminative rates and gradual unfreezing
    "rt-lstm-pt25": (
        "rt",
        "LSTM, LM pre-trained on IMDB reviews (25 min per direction)",
        f"--cell lstm {PRE} --pretrain-corpus imdb --pretrain-minutes 25 --epochs 4 "
        "--schedule constant",
    ),
    "rt-lstm-pt25-gu": (
        "rt",
        "LSTM from `rt-lstm-pt25`'s language models, gradual unfreezing, rates / 2.6 per layer",
        "--cell lstm --embed 128 --hidden 256 --word-dropout 0.1 --dropout 0.5 --lr 4e-3 "
        "--pretrained runs/rt-lstm-pt25 --gradual-unfreeze --lr-decay 2.6 --epochs 6 "
        "--schedule constant",
    ),
}


# The head-and-tail seeds (0 unnamed, 1-5) and every IMDB LSTM that pools by concatenation.
IMDB_HT_SEEDS = ["imdb-lstm-e6-ht", *(f"imdb-lstm-e6-ht-s{k}" for k in range(1, 6))]
IMDB_LSTMS = [*IMDB_HT_SEEDS, "imdb-lstm-e6-ht800", "imdb-lstm-e512-ht", "imdb-lstm-e6"]
RT_HT_SEEDS = ["rt-lstm-ft-imdb-ht", *(f"rt-lstm-ft-imdb-ht-s{k}" for k in range(1, 6))]
# word2vec embeddings (two seeds) and word2vec with adversarial training (four seeds), 2026-12-08
IMDB_ADV = [f"imdb-lstm-e6-ht-w2v-adv5-s{k}" for k in range(4)]
IMDB_W2V = ["imdb-lstm-e6-ht-w2v-s0", "imdb-lstm-e6-ht-w2v-s1", *IMDB_ADV]
RT_ADV = [f"rt-lstm-ft-imdb-w2v-adv5-s{k}" for k in range(4)]
RT_W2V = ["rt-lstm-ft-imdb-w2v-s0", "rt-lstm-ft-imdb-w2v-s1", *RT_ADV]

# name -> (data set, method label, the rows whose classifiers are averaged)
ENSEMBLES: dict[str, tuple[str, str, list[str]]] = {
    "imdb-ensemble-ht": (
        "imdb",
        "ensemble: mean probabilities of the four `imdb-lstm-e6-ht*` seeds",
        ["imdb-lstm-e6-ht", "imdb-lstm-e6-ht-s1", "imdb-lstm-e6-ht-s2", "imdb-lstm-e6-ht-s3"],
    ),
    "imdb-ensemble-7": (
        "imdb",
        "ensemble: the four seeds, `imdb-lstm-e6-ht800`, `imdb-lstm-e512-ht` and `imdb-lstm-e6`",
        [
            "imdb-lstm-e6-ht",
            "imdb-lstm-e6-ht-s1",
            "imdb-lstm-e6-ht-s2",
            "imdb-lstm-e6-ht-s3",
            "imdb-lstm-e6-ht800",
            "imdb-lstm-e512-ht",
            "imdb-lstm-e6",
        ],
    ),
    "imdb-ensemble-ht6": (
        "imdb",
        "ensemble: mean probabilities of the six `imdb-lstm-e6-ht*` seeds",
        IMDB_HT_SEEDS,
    ),
    "imdb-ensemble-9": (
        "imdb",
        "ensemble: the nine LSTMs (`imdb-ensemble-7`'s and seeds 4 and 5)",
        IMDB_LSTMS,
    ),
    "imdb-ensemble-12": (
        "imdb",
        "ensemble: the nine LSTMs and the three GRUs",
        [*IMDB_LSTMS, *(f"imdb-gru-e6-ht-s{k}" for k in range(3))],
    ),
    "imdb-ensemble-adv4": (
        "imdb",
        "ensemble: the four `imdb-lstm-e6-ht-w2v-adv5-s*` seeds",
        IMDB_ADV,
    ),
    "imdb-ensemble-w2v6": (
        "imdb",
        "ensemble: the six word2vec LSTMs (`imdb-ensemble-adv4`'s and `imdb-lstm-e6-ht-w2v-s*`)",
        IMDB_W2V,
    ),
    "rt-ensemble-ft-imdb-ht": (
        "rt",
        "ensemble: mean probabilities of the four `rt-lstm-ft-imdb-ht*`",
        [
            "rt-lstm-ft-imdb-ht",
            "rt-lstm-ft-imdb-ht-s1",
            "rt-lstm-ft-imdb-ht-s2",
            "rt-lstm-ft-imdb-ht-s3",
        ],
    ),
    "rt-ensemble-ft-imdb-ht6": (
        "rt",
        "ensemble: mean probabilities of the six `rt-lstm-ft-imdb-ht*`",
        RT_HT_SEEDS,
    ),
    "rt-ensemble-ft-imdb-9": (
        "rt",
        "ensemble: the six LSTMs and the three `rt-gru-ft-imdb-ht*`",
        [*RT_HT_SEEDS, *(f"rt-gru-ft-imdb-ht-s{k}" for k in range(3))],
    ),
    "rt-ensemble-ft-adv4": (
        "rt",
        "ensemble: the four `rt-lstm-ft-imdb-w2v-adv5-s*`",
        RT_ADV,
    ),
    "rt-ensemble-ft-w2v6": (
        "rt",
        "ensemble: the six fine-tuned from word2vec LSTMs (`rt-ensemble-ft-adv4`'s and "
        "`rt-lstm-ft-imdb-w2v-s*`)",
        RT_W2V,
    ),
}


def command(name: str, threads: int) -> list[str]:
    data, _, args = ROWS[name]
    return ["lstm", "train", "sentiment", "--dataset", data, *args.split(), "--threads",
            str(threads), "--no-progress", "--out", f"runs/{name}"]  # fmt: skip


def _row_from_run(name: str) -> tuple[dict, dict] | None:
    """``(our row, the TF-IDF rows)`` from ``runs/<name>/report.json``, or None if not run here."""
    report = ROOT / "runs" / name / "report.json"
    if not report.exists():
        return None
    rows = json.loads(report.read_text())
    ours = next(v for k, v in rows.items() if not k.startswith("TF-IDF"))
    # "(training N s)" in the report's title: the classifier's training, without any
    # language-model pre-training (which the command budgets in minutes).
    found = re.search(r"\(training (\d+) s\)", (report.parent / "report.md").read_text())
    ours = {"training_seconds": int(found.group(1)) if found else None, **ours}
    return ours, {k: v for k, v in rows.items() if k.startswith("TF-IDF")}


@functools.cache
def _test_part(data: str):
    from lstm.data.sentiment import load_movie_reviews, split_dataset

    return split_dataset(load_movie_reviews(data)).test


def _ensemble(data: str, members: list[str]) -> dict | None:
    """The test scores of the mean class probabilities of ``members``' classifiers (None unless
    all of them are in runs/), as `lstm evaluate --ensemble` computes them."""
    from lstm.tasks.sentiment import ensemble_proba, load_ensemble, report_metrics

    if not all((ROOT / "runs" / m / "report.json").exists() for m in members):
        return None
    test = _test_part(data)
    probs = ensemble_proba(load_ensemble([ROOT / "runs" / m for m in members]), test.texts)
    return report_metrics(test.labels, probs.argmax(1), 2)


def _line(label: str, scores: dict, name: str, minutes: str | None = None) -> str:
    """A table row; ``minutes`` is None for an ensemble, which trains nothing."""
    cell = "" if minutes is None else f" {minutes}"
    return f"| {label} | {100 * scores['accuracy']:.2f}% | {scores['f1']:.4f} | `{name}` |{cell} |"


def table(out: Path) -> None:
    stored_path = out / "sentiment.json"
    stored = json.loads(stored_path.read_text())["runs"] if stored_path.exists() else {}
    results, lines = {}, []
    for data in ("rt", "imdb"):
        lines += [f"**{DATASET_NAMES[data]}** (test part of the fixed split)", "",
                  "| method | accuracy | F1 | run | classifier training |",
                  "|---|---|---|---|---|"]  # fmt: skip
        baselines = {}
        for name, (d, label, _) in ROWS.items():
            if d != data:
                continue
            found = _row_from_run(name)
            if found is not None:
                ours, tfidf = found
                for k, v in tfidf.items():  # every baseline met (a fine-tuned row brings its own)
                    baselines.setdefault(k, v)
                ours = {"data": data, "method": label, "command": " ".join(command(name, 1)),
                        **ours}  # fmt: skip
            elif name in stored:
                ours = stored[name]
            else:
                continue
            results[name] = ours
            seconds = ours.get("training_seconds")
            minutes = f"{seconds / 60:.1f} min" if seconds else ""
            lines.append(_line(label, ours, name, minutes))
        for name, (d, label, members) in ENSEMBLES.items():
            if d != data:
                continue
            scores = _ensemble(data, members)
            if scores is None and name not in stored:
                continue
            ours = stored[name] if scores is None else {
                "data": data, "method": label, "members": members,
                "command": f"lstm evaluate runs/{members[0]} --ensemble "
                           + " ".join(f"runs/{m}" for m in members[1:]), **scores}  # fmt: skip
            results[name] = ours
            lines.append(_line(label, ours, name))
        if not baselines:  # no row of this data set ran here: the stored baselines
            baselines = {v["method"]: v for k, v in stored.items()
                         if k.startswith(f"{data}-tfidf")}  # fmt: skip
        for i, (k, v) in enumerate(baselines.items()):
            lines.append(f"| {k} | {100 * v['accuracy']:.2f}% | {v['f1']:.4f} | | |")
            results[f"{data}-tfidf" + (f"-{i}" if i else "")] = {"data": data, "method": k, **v}
        lines.append("")
    lines += ["Commands (each with `--threads 1 --no-progress --out runs/<run>`):", "", "```"]
    lines += [f"{name}: lstm train sentiment --dataset {d} {a}" for name, (d, _, a) in ROWS.items()]
    lines += [f"{name}: {results[name]['command']}" for name in ENSEMBLES if name in results]
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
