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
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

RECIPE = (
    "--dataset elecdemand --horizon 48 --context 96 --lags 48 336 --hidden 64 --epochs 12 "
    "--stride 2 --val-origins 28"
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


def run(name: str, seed: int, threads: int) -> None:
    argv = command(name, seed, threads)
    print("$", " ".join(argv), flush=True)
    lstm = str(Path(sys.executable).with_name("lstm"))
    subprocess.run([lstm, *argv[1:]], cwd=ROOT, check=True)


def score(name: str) -> dict | None:
    """Each seed's test metrics, and those of the seeds' mean forecast (None until every seed
    has run)."""
    import torch

    from lstm.models.forecaster import predict_windows
    from lstm.tasks.forecast import checkpoint_window_data, evaluate_methods, load_forecaster

    runs = [ROOT / "runs" / f"{name}-s{seed}" for seed in SEEDS]
    if not all((r / "report.json").exists() for r in runs):
        return None
    torch.set_num_threads(1)
    forecasts, baselines = [], {}
    for r in runs:
        model, meta = load_forecaster(r)
        data = checkpoint_window_data(meta)
        forecasts.append(predict_windows(model, data, data.test))  # (S, H, Q)
        baselines = {k: v for k, v in json.loads((r / "report.json").read_text()).items()}
    label = ROWS[name][0]
    mean = np.mean(forecasts, 0)
    per_seed = {f"seed {s}": f[..., 1] for s, f in zip(SEEDS, forecasts)}
    intervals = {f"seed {s}": (f[..., 0], f[..., 2]) for s, f in zip(SEEDS, forecasts)}
    intervals["ensemble"] = (mean[..., 0], mean[..., 2])
    table = evaluate_methods(data.series, data.test, data.horizon,
                             {**per_seed, "ensemble": mean[..., 1]}, intervals)  # fmt: skip
    model_keys = {"LSTM", "GRU", "RNN"}
    return {
        "label": label,
        "seeds": {k: v for k, v in table.items() if k != "ensemble"},
        "seed_mean_MASE": float(np.mean([table[k]["MASE"] for k in per_seed])),
        "ensemble": table["ensemble"],
        "baselines": {k: v for k, v in baselines.items() if k not in model_keys},
        "commands": [" ".join(command(name, s, 1)) for s in SEEDS],
    }


def by_origin(name: str) -> list[str]:
    """Per test origin: the MASE of the row's seed-mean forecast beside the linear regression
    with covariate means, and the bias of each (mean error as a % of the mean demand)."""
    import torch

    from lstm import metrics
    from lstm.models.forecaster import predict_windows
    from lstm.tasks.forecast import checkpoint_window_data, linear_baseline, load_forecaster

    torch.set_num_threads(1)
    forecasts = []
    for seed in SEEDS:
        model, meta = load_forecaster(ROOT / "runs" / f"{name}-s{seed}")
        data = checkpoint_window_data(meta)
        forecasts.append(predict_windows(model, data, data.test)[..., 1])
    s, H, origins = data.series, data.horizon, data.test
    ours = np.mean(forecasts, 0)
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
    out.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()}, {platform.processor() or 'cpu'}"
    (out / "forecast.json").write_text(
        json.dumps({"machine": machine, "rows": results}, indent=1) + "\n"
    )
    (out / "forecast.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(ROWS), help="run these rows only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", action="store_true", help="write the table; run nothing")
    parser.add_argument("--out", default="docs/results")
    args = parser.parse_args()
    if not args.table:
        for name in args.only or ROWS:
            for seed in SEEDS:
                if not (ROOT / "runs" / f"{name}-s{seed}" / "report.json").exists():
                    run(name, seed, args.threads)
    table(ROOT / args.out)


if __name__ == "__main__":
    main()
