"""Forecasting end to end: baselines, rolling-origin evaluation, training, reports, plots, CLI.

The protocol (:func:`evaluate_methods`): forecasts of ``horizon`` steps from each test origin,
scored against the truth by MAE, RMSE, sMAPE and MASE. MASE at an origin divides the MAE by the
in-sample MAE of the seasonal naive forecast ``y[t-period]`` over everything before that origin;
the table averages each metric over the origins. On the electricity demand data (horizon 48,
28 daily origins at midnight over the last 28 days of 2014) this gives the numbers of
docs/results.md.

Baselines (all fitted on data before the first test origin only):

- seasonal naive: the value one period earlier (repeated for horizons beyond a period);
- ETS: statsmodels' Holt-Winters with additive seasonality of the period (no trend), parameters
  estimated once, states filtered up to each origin;
- linear regression (scikit-learn) on calendar features (one-hot position in the period, day of
  week), the covariates, their squares and their products with the position, and the target at
  the seasonal lags; log target when the series is positive. ``covariate_windows`` adds running
  means of the covariates over those windows (a stronger variant).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lstm import checkpoint as ckpt
from lstm import metrics
from lstm.data.series import (
    FILL_METHODS,
    Scaler,
    Series,
    SeriesDataError,
    WindowBatches,
    WindowData,
    load_csv,
    load_dataset,
)
from lstm.models.forecaster import Forecaster, ForecasterConfig, forecast_loss, predict_windows

__all__ = [
    "add_forecast_arguments",
    "add_train_arguments",
    "checkpoint_window_data",
    "ets_baseline",
    "evaluate_checkpoint",
    "evaluate_methods",
    "forecast_csv",
    "linear_baseline",
    "plot_forecast",
    "run_forecast",
    "run_train",
    "seasonal_naive",
    "train_forecaster",
]

TASK = "forecast"
YEAR_FEATURES = {"auto": None, "yes": True, "no": False}  # --year-features -> WindowData.year


# --------------------------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------------------------


def seasonal_naive(
    values: np.ndarray, origins: np.ndarray, horizon: int, period: int
) -> np.ndarray:
    """``(S, horizon)``: at step ``o+h`` the value of the last complete period before ``o``."""
    h = np.arange(horizon)
    back = period * (h // period + 1)  # one period back, two for h >= period, ...
    return np.asarray(values)[np.asarray(origins)[:, None] + h - back]


def ets_baseline(values: np.ndarray, origins: np.ndarray, horizon: int, period: int) -> np.ndarray:
    """``(S, horizon)``: additive Holt-Winters (level + seasonality of ``period``, no trend) from
    statsmodels, parameters estimated on the data before the first origin, then re-run with those
    parameters up to each origin."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    y = np.asarray(values, float)
    first = int(origins[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = ExponentialSmoothing(y[:first], seasonal="add", seasonal_periods=period,
                                      initialization_method="estimated").fit()  # fmt: skip
        p = fitted.params
        out = []
        for o in origins:
            model = ExponentialSmoothing(
                y[:o], seasonal="add", seasonal_periods=period, initialization_method="known",
                initial_level=p["initial_level"], initial_seasonal=p["initial_seasons"],
            )  # fmt: skip
            res = model.fit(smoothing_level=p["smoothing_level"],
                            smoothing_seasonal=p["smoothing_seasonal"], optimized=False)  # fmt: skip
            out.append(res.forecast(horizon))
    return np.asarray(out)


def _linear_design(series: Series, t: np.ndarray, lags: Sequence[int], windows: Sequence[int]):
    import pandas as pd

    P = series.period
    position = np.eye(P)[t % P] if P > 1 else np.ones((len(t), 1))  # (S, P)
    cols = [position]
    if series.index is not None and (series.index[1] - series.index[0]).total_seconds() < 86400:
        cols.append(np.eye(7)[np.asarray(series.index[t].day_of_week)])
    for k in range(series.covariates.shape[1]):
        c = series.covariates[:, k]
        cols += [np.stack([c[t], c[t] ** 2], 1), position * c[t][:, None]]
        for w in windows:
            m = pd.Series(c).rolling(w, min_periods=1).mean().to_numpy()
            cols.append(np.stack([m[t], m[t] ** 2], 1))
    y = series.values
    log = bool((y > 0).all())
    for lag in lags:
        cols.append((np.log(y[t - lag]) if log else y[t - lag])[:, None])
    return np.concatenate(cols, 1), log


def linear_baseline(
    series: Series,
    origins: np.ndarray,
    horizon: int,
    lags: Sequence[int],
    covariate_windows: Sequence[int] = (),
) -> np.ndarray:
    """``(S, horizon)`` from a least-squares linear regression (see the module docstring) fitted
    on every step before the first origin; each lag must be ``>= horizon``."""
    from sklearn.linear_model import LinearRegression

    lags = tuple(lags) or (series.period,)
    if min(lags) < horizon:
        raise ValueError(f"lags {list(lags)} should all be >= the horizon {horizon}")
    first = int(origins[0])
    train_t = np.arange(max(lags), first)
    X, log = _linear_design(series, train_t, lags, covariate_windows)
    y = series.values[train_t]
    reg = LinearRegression().fit(X, np.log(y) if log else y)
    t = np.asarray(origins)[:, None] + np.arange(horizon)  # (S, H)
    Xt, _ = _linear_design(series, t.ravel(), lags, covariate_windows)
    pred = reg.predict(Xt).reshape(t.shape)
    return np.exp(pred) if log else pred


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def evaluate_methods(
    series: Series,
    origins: np.ndarray,
    horizon: int,
    forecasts: dict[str, np.ndarray],
    intervals: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, dict[str, float]]:
    """Per method: MAE, RMSE, sMAPE (%) and MASE, each the mean over origins (MASE scaled at each
    origin by the seasonal naive's in-sample MAE up to it), plus the interval's coverage when
    given."""
    y = series.values
    actual = y[np.asarray(origins)[:, None] + np.arange(horizon)]
    scales = [metrics.seasonal_naive_scale(y[:o], series.period) for o in origins]
    table = {}
    for name, pred in forecasts.items():
        rows = {
            "MAE": np.mean([metrics.mae(a, p) for a, p in zip(actual, pred)]),
            "RMSE": np.mean([metrics.rmse(a, p) for a, p in zip(actual, pred)]),
            "sMAPE": np.mean([metrics.smape(a, p) for a, p in zip(actual, pred)]),
            "MASE": np.mean([metrics.mase(a, p, scale=s) for a, p, s in zip(actual, pred, scales)]),
        }
        if intervals and name in intervals:
            lo, hi = intervals[name]
            rows["coverage"] = metrics.coverage(actual, lo, hi)
        table[name] = {k: float(v) for k, v in rows.items()}
    return table


def format_table(table: dict[str, dict[str, float]]) -> str:
    """A markdown table of :func:`evaluate_methods`' result."""
    cols = ["MAE", "RMSE", "sMAPE", "MASE", "coverage"]
    lines = ["| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in table.items():
        cells = []
        for c in cols:
            v = row.get(c)
            cells.append("" if v is None else (f"{v:.1%}" if c == "coverage" else f"{v:.3f}"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_forecast(
    series: Series,
    origins: np.ndarray,
    horizon: int,
    point: np.ndarray,
    path: str | os.PathLike,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
    label: str = "LSTM",
    last: int = 7,
    history: int | None = None,
) -> Path:
    """Forecast against truth for the ``last`` origins (with the interval when given), preceded
    by ``history`` steps of the series (default one horizon). PNG via matplotlib's Agg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    origins = np.asarray(origins)[-last:]
    point = np.asarray(point)[-last:]
    history = horizon if history is None else history
    start = max(0, int(origins[0]) - history)
    end = int(origins[-1]) + horizon
    x_axis = series.index if series.index is not None else np.arange(len(series))
    fig, ax = plt.subplots(figsize=(10, 4), dpi=110)
    ax.plot(x_axis[start:end], series.values[start:end], color="black", lw=1, label="truth")
    for k, o in enumerate(origins):
        xs = x_axis[o : o + horizon]
        ax.plot(xs, point[k], color="C0", lw=1.4, label=label if k == 0 else None)
        if lower is not None and upper is not None:
            ax.fill_between(xs, np.asarray(lower)[-last:][k], np.asarray(upper)[-last:][k],
                            color="C0", alpha=0.25, lw=0,
                            label="interval" if k == 0 else None)  # fmt: skip
        ax.axvline(xs[0], color="grey", lw=0.5, alpha=0.5)
    ax.set_ylabel(series.target_name)
    ax.set_title(f"{series.name}: {horizon}-step forecasts from {len(origins)} origins")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    from lstm.viz import save_figure

    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def _extra(data: WindowData, config: ForecasterConfig, source: dict) -> dict:
    return {
        "task": TASK,
        "model": config.to_json(),
        "data": {
            **source,
            "target": data.series.target_name,
            "covariates": data.series.covariate_names,
            "period": data.series.period,
            "context": data.context,
            "horizon": data.horizon,
            "lags": list(data.lags),
            "calendar": data.calendar,
            "year": data.year,
            "covariate_windows": list(data.covariate_windows),
            "target_scaler": data.target_scaler.to_json(),
            "feature_scaler": data.feature_scaler.to_json(),
            "test_origins": data.test_origins,
            "val_origins": data.val_origins,
            "origin_step": data.origin_step,
        },
    }


def train_forecaster(
    data: WindowData,
    config: ForecasterConfig,
    train_config,
    *,
    batch_size: int = 128,
    stride: int = 1,
    out_dir: str | os.PathLike | None = None,
    source: dict | None = None,
) -> tuple[Forecaster, object]:
    """Trains a :class:`Forecaster` on ``data``'s training windows with :func:`lstm.training.fit`,
    validating on the validation origins; returns the model with the weights of its best
    validation loss, and fit's result. With ``out_dir``, checkpoints go there (the config holds
    everything :func:`load_forecaster` needs)."""
    from lstm.training import fit

    torch.manual_seed(train_config.seed)
    model = Forecaster(config)
    recursive = config.strategy == "recursive"
    batches = WindowBatches(data, data.train_origins(stride), batch_size, train_config.seed,
                            recursive=recursive)  # fmt: skip
    val_origins = data.val if len(data.val) else data.train_origins(stride)[-64:]
    val_batch = data.recursive_windows(val_origins) if recursive else data.windows(val_origins)

    def eval_fn(m: torch.nn.Module) -> dict:
        with torch.no_grad():
            loss, _, _ = forecast_loss(m, val_batch, None)
        return {"loss": float(loss)}

    result = fit(model, batches, forecast_loss, train_config, eval_fn=eval_fn, out_dir=out_dir,
                 extra=_extra(data, config, source or {}), restore_best=True)  # fmt: skip
    return model, result


def load_forecaster(path: str | os.PathLike, which: str = "BEST") -> tuple[Forecaster, dict]:
    """A trained forecaster and its checkpoint config from a run directory or checkpoint (its
    ``BEST`` checkpoint when there is one, else ``LATEST``)."""
    _, meta, weights = ckpt.load_task_checkpoint(path, TASK, "a forecaster", which)
    model = Forecaster(ForecasterConfig.from_json(meta["model"]))
    model.load_state_dict(weights)
    model.eval()
    return model, meta


def run_report(
    data: WindowData,
    model: Forecaster,
    out_dir: str | os.PathLike,
    *,
    label: str = "LSTM",
    covariate_windows: Sequence[int] | None = None,
    baselines: bool = True,
) -> dict:
    """Test-set forecasts of the model and the baselines; writes ``report.json``, ``report.md``
    and ``forecast.png`` into ``out_dir`` and returns the table."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s, H, origins = data.series, data.horizon, data.test
    pred = predict_windows(model, data, origins)  # (S, H, Q)
    q = model.config.quantiles
    point = pred[..., model.median_index]
    forecasts, intervals = {}, {}
    if baselines:
        forecasts["seasonal naive"] = seasonal_naive(s.values, origins, H, s.period)
        if s.period > 1 and len(s) > 2 * s.period:
            forecasts["ETS (additive seasonal)"] = ets_baseline(s.values, origins, H, s.period)
        lags = data.lags or (s.period,)
        if min(lags) >= H:
            forecasts["linear regression"] = linear_baseline(s, origins, H, lags)
            if s.covariates.shape[1]:
                P = s.period
                default = [P // 8, P // 4, P // 2, P, 2 * P]
                windows = [w for w in (covariate_windows or default) if 1 < w <= data.train_end]
                forecasts["linear regression + covariate means"] = linear_baseline(
                    s, origins, H, lags, windows
                )
    forecasts[label] = point
    if len(q) >= 3:
        intervals[label] = (pred[..., 0], pred[..., -1])
    table = evaluate_methods(s, origins, H, forecasts, intervals)
    lower, upper = intervals.get(label, (None, None))
    plot_forecast(s, origins, H, point, out / "forecast.png", lower, upper, label=label)
    interval = f" (interval {q[0]:g}-{q[-1]:g} quantiles)" if len(q) >= 3 else ""
    md = (f"{s.name}: {H} steps ahead from {len(origins)} origins{interval}\n\n"
          + format_table(table) + "\n")  # fmt: skip
    ckpt.atomic_write_text(out / "report.md", md)
    ckpt.atomic_write_text(out / "report.json", json.dumps(table, indent=2) + "\n")
    return table


# --------------------------------------------------------------------------------------------
# Forecasting a user's CSV with a trained model
# --------------------------------------------------------------------------------------------


def forecast_csv(
    checkpoint: str | os.PathLike, csv: str | os.PathLike, out: str | os.PathLike | None = None,
    fill: str | None = None,
) -> object:  # fmt: skip
    """Forecasts the ``horizon`` steps after the last known target value of ``csv`` (the columns
    the model was trained with). With covariates, the CSV must hold ``horizon`` more rows after
    the last target value with the covariates filled in (the target left empty); without, the
    time column is extended. Returns a pandas DataFrame (time, step, forecast, quantiles), also
    written to ``out`` as CSV when given."""
    import pandas as pd

    model, meta = load_forecaster(checkpoint)
    d = meta["data"]
    H, C = d["horizon"], d["context"]
    time_col = d.get("time_col")
    raw = pd.read_csv(csv, dtype=str, keep_default_na=False) if Path(csv).is_file() else None
    if raw is None:
        raise SeriesDataError(f"CSV file {str(csv)!r} does not exist")
    if d["target"] not in raw.columns:
        raise SeriesDataError(f"column {d['target']!r} is not in {str(csv)!r}")
    known = raw[d["target"]].str.strip() != ""
    if not known.any():
        raise SeriesDataError(f"column {d['target']!r} of {str(csv)!r} has no values")
    n_known = int(np.flatnonzero(known.to_numpy())[-1]) + 1
    future_rows = len(raw) - n_known
    if d["covariates"] and future_rows < H:
        raise SeriesDataError(
            f"the model uses covariates {d['covariates']}: {str(csv)!r} should hold {H} rows after "
            f"the last {d['target']!r} value with them filled in, it holds {future_rows}"
        )
    frame = raw.iloc[: n_known + H].copy() if d["covariates"] else raw.iloc[:n_known].copy()
    if not d["covariates"] and time_col:
        times = pd.to_datetime(frame[time_col].str.strip(), format="mixed")
        step = times.iloc[-1] - times.iloc[-2]
        extra = pd.DataFrame({time_col: [str(times.iloc[-1] + step * (k + 1)) for k in range(H)]})
        frame = pd.concat([frame, extra], ignore_index=True)
    frame.loc[frame.index[n_known:], d["target"]] = "0"  # placeholders: never read as inputs
    tmp = Path(out or csv).with_name(f".tmp-input-{os.getpid()}.csv")
    frame.to_csv(tmp, index=False)
    try:
        series = load_csv(tmp, d["target"], time_col, d["covariates"], fill, d["period"])
    finally:
        tmp.unlink(missing_ok=True)
    lags = d["lags"]
    if n_known < C + max(lags, default=0) + 1:
        raise SeriesDataError(
            f"{str(csv)!r} has {n_known} known values; the model needs at least "
            f"{C + max(lags, default=0) + 1} (its context {C} plus its longest lag)"
        )
    data = _window_data_for(series, d, n_known)
    pred = predict_windows(model, data, np.array([n_known]))[0]  # (H, Q)
    table = {"step": np.arange(1, H + 1)}
    if series.index is not None:
        table = {time_col: series.index[n_known : n_known + H].astype(str), **table}
    q = model.config.quantiles
    table["forecast"] = pred[:, model.median_index]
    for k, level in enumerate(q):
        if level != 0.5:
            table[f"q{level:g}"] = pred[:, k]
    result = pd.DataFrame(table)
    if out is not None:
        ckpt.atomic_write_text(out, result.to_csv(index=False))
    return result


def _stored_windows(d: dict) -> dict:
    """The WindowData options a checkpoint's ``data`` section stores (with the defaults of
    checkpoints older than an option), fitted scalers included."""
    return {
        "context": d["context"],
        "horizon": d["horizon"],
        "lags": tuple(d["lags"]),
        "calendar": d["calendar"],
        "year": d.get("year", True),  # checkpoints older than the option had the features
        "covariate_windows": tuple(d.get("covariate_windows", ())),
        "target_scaler": Scaler.from_json(d["target_scaler"]),
        "feature_scaler": Scaler.from_json(d["feature_scaler"]),
    }


def _window_data_for(series: Series, d: dict, origin: int) -> WindowData:
    """WindowData with the checkpoint's scalers whose single test origin is ``origin`` (built
    without the split's checks: the series may be just the context and the horizon)."""
    data = WindowData.__new__(WindowData)
    data.series = series
    for name, value in _stored_windows(d).items():
        setattr(data, name, value)
    data.make_features()
    data.test = np.array([origin])
    return data


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _series_from_args(args: argparse.Namespace) -> tuple[Series, dict]:
    if args.csv:
        if not args.target:
            raise SeriesDataError("--csv needs --target COLUMN (the series to forecast)")
        series = load_csv(args.csv, args.target, args.time_col, args.covariates or (), args.fill,
                          args.period)  # fmt: skip
        return series, {"csv": str(args.csv), "time_col": args.time_col}
    series = load_dataset(args.dataset)
    if args.period:
        series.period = args.period
    return series, {"dataset": args.dataset}


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``lstm train forecast``."""
    from lstm.cli import add_training_arguments, dropout_rate, positive_int

    src = p.add_argument_group("data")
    src.add_argument("--dataset", default="elecdemand", choices=["elecdemand", "co2", "seattle"])
    src.add_argument("--csv", help="your own CSV file instead of --dataset")
    src.add_argument("--target", help="the column to forecast (with --csv)")
    src.add_argument("--time-col", help="a column of dates/times (evenly spaced)")
    src.add_argument("--covariates", nargs="*", default=[], help="columns known in the future")
    src.add_argument("--fill", choices=FILL_METHODS, help="fill missing values this way")
    src.add_argument("--period", type=positive_int, help="seasonal period (default: inferred)")
    win = p.add_argument_group("windows")
    win.add_argument("--horizon", type=positive_int, help="steps to forecast (default: period)")
    win.add_argument("--context", type=positive_int, help="past steps read (default: 2 periods)")
    win.add_argument("--lags", type=positive_int, nargs="*",
                     help="seasonal lags given at each future step (each >= horizon)")  # fmt: skip
    win.add_argument("--covariate-windows", type=positive_int, nargs="*", default=[],
                     help="add running means of the covariates over these steps")  # fmt: skip
    win.add_argument("--year-features", choices=list(YEAR_FEATURES), default="auto",
                     help="time-of-year calendar features (auto: when the training part spans "
                          "two years or more)")  # fmt: skip
    win.add_argument("--test-origins", type=positive_int, default=28)
    win.add_argument("--val-origins", type=positive_int, default=28)
    win.add_argument("--origin-step", type=positive_int, help="default: the horizon")
    win.add_argument("--stride", type=positive_int, default=1, help="steps between windows")
    win.add_argument("--batch", type=positive_int, default=128)
    m = p.add_argument_group("model")
    m.add_argument("--cell", default="lstm", choices=["lstm", "gru", "rnn"])
    m.add_argument("--hidden", type=positive_int, default=64)
    m.add_argument("--layers", type=positive_int, default=1)
    m.add_argument("--dropout", type=dropout_rate, default=0.0)
    m.add_argument("--strategy", default="direct", choices=["direct", "recursive"])
    m.add_argument("--quantiles", type=float, nargs="*", default=[0.1, 0.5, 0.9],
                   help="quantile levels (with 0.5; none: a point forecast on MSE)")  # fmt: skip
    m.add_argument(
        "--skip",
        action="store_true",
        help="add a linear map of each step's inputs to the output (LSTNet's highway)",
    )
    m.add_argument(
        "--level",
        action="store_true",
        help="forecast relative to each window's mean level (DeepAR's scaling; direct only)",
    )
    m.add_argument("--backend", default="auto")
    p.add_argument("--no-baselines", action="store_true", help="report the model alone")
    add_training_arguments(p)
    p.set_defaults(out="runs/forecast", optimizer="adamw", lr=3e-3, weight_decay=1e-4,
                   warmup=50, eval_every=100)  # fmt: skip


def run_train(args: argparse.Namespace) -> int:
    """``lstm train forecast``."""
    from lstm.cli import train_config_from

    if args.steps is None and args.epochs is None and args.minutes is None:
        args.epochs = 12
    if args.threads:
        torch.set_num_threads(args.threads)
    series, source = _series_from_args(args)
    horizon = args.horizon or (series.period if series.period > 1 else 1)
    context = args.context or max(2 * horizon, 2 * series.period)
    data = WindowData(series, context, horizon, args.lags, args.test_origins, args.val_origins,
                      args.origin_step, year=YEAR_FEATURES[args.year_features],
                      covariate_windows=args.covariate_windows)  # fmt: skip
    config = ForecasterConfig(
        past_size=data.past_size, future_size=data.future_size, horizon=data.horizon,
        recursive_size=data.recursive_size, cell=args.cell, hidden_size=args.hidden,
        num_layers=args.layers, dropout=args.dropout, strategy=args.strategy,
        quantiles=tuple(sorted(args.quantiles)), backend=args.backend, skip=args.skip,
        level=args.level,
    )  # fmt: skip
    train_config = train_config_from(args)
    train_config.carry_state = False
    print(f"[forecast] {series.name}: {len(series):,} steps, period {series.period}, horizon "
          f"{horizon}, context {context}, {len(data.train_origins(args.stride)):,} training "
          f"windows, {len(data.val)} validation and {len(data.test)} test origins")  # fmt: skip
    model, _ = train_forecaster(data, config, train_config, batch_size=args.batch,
                                stride=args.stride, out_dir=args.out, source=source)  # fmt: skip
    ckpt.write_final(args.out, model, _extra(data, config, source), train_config)
    table = run_report(data, model, args.out, label=args.cell.upper(),
                       baselines=not args.no_baselines)  # fmt: skip
    print(format_table(table))
    out = Path(args.out)
    print(f"[forecast] checkpoint {out / 'checkpoints'}; report {out / 'report.md'}; "
          f"plot {out / 'forecast.png'}")  # fmt: skip
    return 0


def add_forecast_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``lstm forecast``."""
    p.add_argument("checkpoint", help="run directory or checkpoint of `lstm train forecast`")
    p.add_argument("--csv", required=True, help="history (and future covariates) as CSV")
    p.add_argument("--out", help="write the forecast CSV here (default: print it)")
    p.add_argument("--fill", choices=FILL_METHODS, help="fill missing values this way")


def run_forecast(args: argparse.Namespace) -> int:
    """``lstm forecast CHECKPOINT --csv FILE [--out FILE]``."""
    frame = forecast_csv(args.checkpoint, args.csv, args.out, args.fill)
    if args.out is None:
        frame.to_csv(sys.stdout, index=False)
    else:
        print(f"[forecast] {len(frame)} steps written to {args.out}")
    return 0


def checkpoint_window_data(
    meta: dict, csv: str | os.PathLike | None = None, fill: str | None = None
) -> WindowData:
    """The windows a checkpoint's forecaster was trained and tested on (its data set, or ``csv``
    in the same columns), with its scalers, features and split."""
    d = meta["data"]
    if csv or "dataset" not in d:
        series = load_csv(csv or d["csv"], d["target"], d.get("time_col"), d["covariates"], fill,
                          d["period"])  # fmt: skip
    else:
        series = load_dataset(d["dataset"])
        series.period = d["period"]
    return WindowData(series, test_origins=d["test_origins"], val_origins=d["val_origins"],
                      origin_step=d["origin_step"], **_stored_windows(d))  # fmt: skip


def evaluate_checkpoint(args: argparse.Namespace) -> int:
    """``lstm evaluate`` of a forecaster: rolling origins over its data set's test tail (or over
    the tail of ``--csv``), beside the baselines."""
    model, meta = load_forecaster(args.checkpoint)
    data = checkpoint_window_data(meta, getattr(args, "csv", None), getattr(args, "fill", None))
    out = Path(getattr(args, "out", None) or args.checkpoint)
    if out.is_file():
        out = out.parent
    table = run_report(data, model, out, label=model.config.cell.upper())
    print(format_table(table))
    print(f"[forecast] report {out / 'report.md'}; plot {out / 'forecast.png'}")
    return 0
