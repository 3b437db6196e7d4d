"""The forecasting table of docs/results.md: LSTM, GRU and RNN forecasters on the Victoria
electricity demand (48 half-hours ahead from 28 daily origins over the last 28 days of 2014),
three seeds each, beside seasonal naive, ETS and the two linear regressions.

Each row is one `lstm train forecast` command per seed, run in a process of its own into
runs/<name>-s<seed> (skipped when its report.json exists: delete the run to redo it). The
script then scores each seed, the mean over seeds, and the forecast made by averaging the seeds'
forecasts (an ensemble), and writes docs/results/forecast.json (every number) and
docs/results/forecast.md (the table, with each row's command).

    .venv/bin/python scripts/forecast_results.py                  # every row (~20 min, 1 core)
    .venv/bin/python scripts/forecast_results.py --only elec-lstm elec-gru
    .venv/bin/python scripts/forecast_results.py --table          # only rewrite the table

Every row is budgeted in epochs, so its numbers do not depend on the machine's speed.
`--schedule constant` (after 50 warmup steps) is what they were measured with: until 2026-11-24
a run given only `--epochs` kept its peak learning rate throughout, whatever the schedule (a bug,
now fixed: the schedule spans the epochs).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
from _runs import ROOT, arguments, run_unless_done, write_results

RECIPE = (
    "--dataset elecdemand --horizon 48 --context 96 --lags 48 336 --hidden 64 --epochs 12 "
    "--stride 2 --val-origins 28 --schedule constant"
)
SEEDS = (0, 1, 2)
# name -> (label, arguments beyond the recipe)
ROWS = {
    "elec-lstm": ("LSTM", "--cell lstm"),
    "elec-gru": ("GRU", "--cell gru"),
    "elec-rnn": ("RNN", "--cell rnn"),
    "elec-lstm-year": ("LSTM with time-of-year features", "--cell lstm --year-features yes"),
    "elec-lstm-level": ("LSTM, level-normalized windows", "--cell lstm --level"),
}


def command(name: str, seed: int, threads: int) -> list[str]:
    _, extra = ROWS[name]
    return ["lstm", "train", "forecast", *RECIPE.split(), *extra.split(), "--seed", str(seed),
            "--threads", str(threads), "--no-progress", "--out", f"runs/{name}-s{seed}"]  # fmt: skip


@cache
def forecasts(name: str):
    """The row's test windows, each seed's forecasts ``(S, horizon, 3)`` (the 0.1, 0.5, 0.9
    quantiles), read from its checkpoints, and the model's label in its reports (``LSTM``);
    None until every seed has run."""
    import torch

    from lstm.models.forecaster import predict_windows
    from lstm.tasks.forecast import checkpoint_window_data, load_forecaster

    runs = [ROOT / "runs" / f"{name}-s{seed}" for seed in SEEDS]
    if not all((r / "report.json").exists() for r in runs):
        return None
    torch.set_num_threads(1)
    out = []
    for r in runs:
        model, meta = load_forecaster(r)
        data = checkpoint_window_data(meta)
        out.append(predict_windows(model, data, data.test))
    return data, out, model.config.cell.upper()


def score(name: str) -> dict | None:
    """Each seed's test metrics, and those of the seeds' mean forecast (None until every seed
    has run); the baselines as the first seed's report has them."""
    from lstm.tasks.forecast import evaluate_methods

    if (found := forecasts(name)) is None:
        return None
    data, per_seed, own = found
    mean = np.mean(per_seed, 0)
    points = {f"seed {s}": f[..., 1] for s, f in zip(SEEDS, per_seed)}
    intervals = {f"seed {s}": (f[..., 0], f[..., 2]) for s, f in zip(SEEDS, per_seed)}
    intervals["ensemble"] = (mean[..., 0], mean[..., 2])
    table = evaluate_methods(data.series, data.test, data.horizon,
                             {**points, "ensemble": mean[..., 1]}, intervals)  # fmt: skip
    report = json.loads((ROOT / "runs" / f"{name}-s{SEEDS[0]}" / "report.json").read_text())
    return {
        "label": ROWS[name][0],
        "seeds": {k: v for k, v in table.items() if k != "ensemble"},
        "seed_mean_MASE": float(np.mean([table[k]["MASE"] for k in points])),
        "ensemble": table["ensemble"],
        "baselines": {k: v for k, v in report.items() if k != own},
        "commands": [" ".join(command(name, s, 1)) for s in SEEDS],
    }


def by_origin(name: str) -> list[str]:
    """Per test origin: the MASE of the row's seed-mean forecast beside the linear regression
    with covariate means, and the bias of each (mean error as a % of the mean demand)."""
    from lstm import metrics
    from lstm.tasks.forecast import linear_baseline

    data, per_seed, _ = forecasts(name)
    s, H, origins = data.series, data.horizon, data.test
    ours = np.mean(per_seed, 0)[..., 1]
    linear = linear_baseline(s, origins, H, data.lags, (6, 12, 24, 48, 96))
    actual = data.actual(origins)
    lines = [f"Per origin ({ROWS[name][0]}, the seeds' mean forecast, against the linear "
             "regression with covariate means; bias: mean error as a % of mean demand):", "",
             "| day | work day | max °C | MASE ours | MASE linear | bias ours | bias linear |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    work, temp = s.covariate_names.index("WorkDay"), s.covariate_names.index("Temperature")

    def bias(forecast: np.ndarray, truth: np.ndarray) -> float:
        return 100 * np.mean(forecast - truth) / np.mean(truth)

    for k, o in enumerate(origins):
        scale = metrics.seasonal_naive_scale(s.values[:o], s.period)
        lines.append(
            f"| {s.index[o]:%a %d %b} | {int(s.covariates[o, work])} | "
            f"{s.covariates[o : o + H, temp].max():.1f} | "
            f"{metrics.mase(actual[k], ours[k], scale=scale):.2f} | "
            f"{metrics.mase(actual[k], linear[k], scale=scale):.2f} | "
            f"{bias(ours[k], actual[k]):+.1f}% | {bias(linear[k], actual[k]):+.1f}% |"
        )
    return [*lines, ""]


def table(out: Path) -> None:
    results = {name: r for name in ROWS if (r := score(name)) is not None}
    lines = ["| method | test MASE per seed (0, 1, 2) | mean | MASE of the seeds' mean forecast "
             "| 80% interval coverage (mean forecast) |", "|---|---|---|---|---|"]  # fmt: skip
    baselines = next(iter(results.values()))["baselines"] if results else {}
    for name, r in results.items():
        seeds = ", ".join(f"{v['MASE']:.3f}" for v in r["seeds"].values())
        e = r["ensemble"]
        lines.append(f"| {r['label']} (`{name}-s*`) | {seeds} | {r['seed_mean_MASE']:.3f} | "
                     f"{e['MASE']:.3f} | {e['coverage']:.1%} |")  # fmt: skip
    for k, v in baselines.items():
        lines.append(f"| {k} | {v['MASE']:.3f} | | | |")
    lines += ["", "Commands (seeds 0, 1, 2; each with `--seed S --threads 1 --no-progress --out "
              "runs/<run>-sS`):", "", "```"]  # fmt: skip
    lines += [f"{name}: lstm train forecast {RECIPE} {a}" for name, (_, a) in ROWS.items()]
    lines += ["```", ""]
    if "elec-lstm" in results:
        lines += by_origin("elec-lstm")
    write_results(out, "forecast", results, lines, "rows")


def main() -> None:
    args = arguments(__doc__, ROWS)
    if not args.table:
        for name in args.only or ROWS:
            for seed in SEEDS:
                run_unless_done(command(name, seed, args.threads), f"runs/{name}-s{seed}")
    table(ROOT / args.out)


if __name__ == "__main__":
    main()
