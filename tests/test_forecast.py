"""Forecasting: CSV loading and its errors, windows and scaling, baselines, a short training run
that must beat a bar, and the CLI."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from lstm.cli import main
from lstm.data.series import Series, SeriesDataError, WindowData, load_csv, running_means
from lstm.models.forecaster import ForecasterConfig
from lstm.tasks.forecast import (
    evaluate_methods,
    forecast_csv,
    linear_baseline,
    seasonal_naive,
    train_forecaster,
)
from lstm.training import TrainConfig


def write_csv(path, n=200, period=12, seed=0, hole=None, bad=None):
    """A series with a daily-like cycle and a random covariate it depends on."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    cov = rng.normal(size=n)
    y = 10 + np.sin(2 * np.pi * t / period) + 1.5 * cov + 0.05 * rng.normal(size=n)
    frame = pd.DataFrame({
        "time": pd.date_range("2020-01-01", periods=n, freq="2h").astype(str),
        "load": y.round(6).astype(str),
        "temp": cov.round(6).astype(str),
    })  # fmt: skip
    if hole is not None:
        frame.loc[hole, "load"] = ""
    if bad is not None:
        frame.loc[bad, "temp"] = "warm"
    frame.to_csv(path, index=False)
    return y, cov


def test_load_csv_reads_columns_and_infers_the_period(tmp_path):
    y, cov = write_csv(tmp_path / "s.csv")
    s = load_csv(tmp_path / "s.csv", "load", "time", ["temp"])
    assert s.period == 12  # 2-hour steps: a day
    np.testing.assert_allclose(s.values, y, atol=1e-6)
    np.testing.assert_allclose(s.covariates[:, 0], cov, atol=1e-6)


def test_load_csv_errors(tmp_path):
    f = tmp_path / "s.csv"
    write_csv(f)
    with pytest.raises(
        SeriesDataError, match=r"column 'nope' is not in .*columns: time, load, temp"
    ):
        load_csv(f, "nope")
    with pytest.raises(SeriesDataError, match="does not exist"):
        load_csv(tmp_path / "missing.csv", "load")
    write_csv(f, bad=7)
    with pytest.raises(
        SeriesDataError, match=r"column 'temp' has a non-numeric value 'warm' at row 8"
    ):
        load_csv(f, "load", covariates=["temp"])
    y, _ = write_csv(f, hole=[5, 6])
    with pytest.raises(SeriesDataError, match=r"2 missing value\(s\) \(first at row 6\).*--fill"):
        load_csv(f, "load")
    s = load_csv(f, "load", fill="interpolate")
    np.testing.assert_allclose(s.values[5], y[4] + (y[7] - y[4]) / 3, atol=1e-5)
    assert load_csv(f, "load", fill="ffill").values[6] == pytest.approx(y[4], abs=1e-6)
    frame = pd.read_csv(f)
    frame.loc[10, "time"] = "2020-01-01 21:00:00"  # breaks the 2-hour clock
    frame.to_csv(f, index=False)
    with pytest.raises(SeriesDataError, match=r"not evenly spaced|not increasing"):
        load_csv(f, "load", "time", fill="zero")


def test_too_few_rows_for_the_window_is_a_clear_error():
    s = Series("s", "y", np.arange(50.0), np.zeros((50, 0)), [], None, period=4)
    with pytest.raises(SeriesDataError, match="too few rows: 50"):
        WindowData(s, context=24, horizon=4, test_origins=5, val_origins=5)
    with pytest.raises(SeriesDataError, match="lag 2 is shorter than the horizon 4"):
        WindowData(s, context=4, horizon=4, lags=(2,), test_origins=1, val_origins=1)


def test_windows_scaling_and_running_means_by_hand():
    n = 120
    values = np.arange(n, dtype=float) ** 1.5
    cov = np.random.default_rng(1).normal(size=(n, 1))
    s = Series("s", "y", values, cov, ["c"], None, period=6)
    d = WindowData(s, context=5, horizon=3, lags=(6,), test_origins=4, val_origins=2,
                   origin_step=3, calendar=False, covariate_windows=(2,))  # fmt: skip
    # origins: the test ones end the series, validation ones precede them
    assert d.test.tolist() == [108, 111, 114, 117]
    assert d.val.tolist() == [102, 105]
    assert d.train_end == 102
    # scaling fitted on the training part only
    assert d.target_scaler.mean[0] == pytest.approx(values[:102].mean())
    assert d.target_scaler.std[0] == pytest.approx(values[:102].std())
    past, future, target = d.windows(np.array([50]))
    z = (values - values[:102].mean()) / values[:102].std()
    np.testing.assert_allclose(past[0, :, 0], z[45:50], rtol=1e-5)
    np.testing.assert_allclose(target[0], z[50:53], rtol=1e-5)
    np.testing.assert_allclose(future[0, :, -2], z[44:47], rtol=1e-5)  # lag 6
    np.testing.assert_allclose(future[0, :, -1], [0, 1 / 3, 2 / 3], rtol=1e-6)  # position
    means = running_means(cov, (2,))
    np.testing.assert_allclose(means[0, 1], cov[0, 0])
    np.testing.assert_allclose(means[9, 1], (cov[8, 0] + cov[9, 0]) / 2)


def test_seasonal_naive_and_mase_on_a_periodic_series():
    values = np.tile([1.0, 5.0, 2.0, 7.0], 30) + np.arange(120) * 0.0
    origins = np.array([100, 104])
    pred = seasonal_naive(values, origins, 6, 4)  # beyond one period: two periods back
    np.testing.assert_allclose(pred[0], values[100:106])
    s = Series("s", "y", values + np.arange(120) * 0.01, np.zeros((120, 0)), [], None, period=4)
    table = evaluate_methods(s, origins, 4, {"naive": seasonal_naive(s.values, origins, 4, 4)})
    # a slow trend of 0.01 per step: the naive is off by 0.04 everywhere, as is the scale
    assert table["naive"]["MASE"] == pytest.approx(1.0)
    assert table["naive"]["MAE"] == pytest.approx(0.04)


def test_linear_baseline_recovers_a_linear_law():
    n = 400
    rng = np.random.default_rng(0)
    cov = rng.uniform(10, 20, size=(n, 1))
    pattern = np.tile([1.0, 2.0, 3.0, 2.0], n // 4)
    values = np.exp(0.3 * np.log(pattern) + 0.02 * cov[:, 0])  # log-linear: exact for the design
    s = Series("s", "y", values, cov, ["c"], None, period=4)
    pred = linear_baseline(s, np.array([380, 384, 388]), 4, (4,))
    actual = values[np.array([380, 384, 388])[:, None] + np.arange(4)]
    np.testing.assert_allclose(pred, actual, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["direct", "recursive"])
def test_short_training_beats_the_seasonal_naive(tmp_path, strategy):
    """A few seconds of training must use the known covariate: MASE below 0.45 where the
    seasonal naive (blind to it) sits near 1.2."""
    torch.manual_seed(0)
    write_csv(tmp_path / "s.csv", n=700)
    s = load_csv(tmp_path / "s.csv", "load", "time", ["temp"])
    data = WindowData(s, context=12, horizon=6, lags=(12,), test_origins=10, val_origins=6)
    config = ForecasterConfig(data.past_size, data.future_size, 6, data.recursive_size,
                              hidden_size=24, strategy=strategy, quantiles=(0.1, 0.5, 0.9))  # fmt: skip
    train = TrainConfig(steps=250, lr=1e-2, progress=False, carry_state=False, eval_every=50)
    model, _ = train_forecaster(data, config, train, batch_size=32, stride=2)
    from lstm.models.forecaster import predict_windows

    pred = predict_windows(model, data, data.test)
    table = evaluate_methods(s, data.test, 6, {
        "naive": seasonal_naive(s.values, data.test, 6, 12), "model": pred[..., 1]})  # fmt: skip
    assert table["naive"]["MASE"] > 0.9
    assert table["model"]["MASE"] < 0.45, table
    assert (pred[..., 0] <= pred[..., 2] + 1e-6).mean() > 0.95  # quantiles mostly ordered


@pytest.mark.slow
def test_cli_train_forecast_then_forecast_a_csv(tmp_path, capsys):
    f = tmp_path / "s.csv"
    write_csv(f, n=400)
    out = tmp_path / "run"
    rc = main(["train", "forecast", "--csv", str(f), "--target", "load", "--time-col", "time",
               "--covariates", "temp", "--horizon", "6", "--context", "12", "--test-origins", "4",
               "--val-origins", "4", "--steps", "20", "--hidden", "8", "--no-progress",
               "--year-features", "yes", "--level", "--out", str(out)])  # fmt: skip
    assert rc == 0
    # `lstm forecast` rebuilds the same features (time of year, asked for) and the level option
    config = json.loads((out / "checkpoints" / "final" / "config.json").read_text())
    assert config["data"]["year"] is True and config["model"]["level"] is True
    assert (out / "forecast.png").stat().st_size > 1000
    assert "| LSTM |" in (out / "report.md").read_text()
    # Future rows: covariates known, target empty.
    frame = pd.read_csv(f, dtype=str, keep_default_na=False)
    frame.loc[frame.index[-6:], "load"] = ""
    frame.to_csv(f, index=False)
    rc = main(["forecast", str(out), "--csv", str(f), "--out", str(tmp_path / "fc.csv")])
    assert rc == 0
    result = pd.read_csv(tmp_path / "fc.csv")
    assert list(result.columns) == ["time", "step", "forecast", "q0.1", "q0.9"]
    assert len(result) == 6 and result["time"].iloc[0] == frame["time"].iloc[-6]
    direct = forecast_csv(out, f)
    np.testing.assert_allclose(direct["forecast"], result["forecast"], rtol=1e-6)
    # Too few future covariate rows: one line, exit status 2.
    frame.iloc[:-3].to_csv(f, index=False)
    capsys.readouterr()
    assert main(["forecast", str(out), "--csv", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert "should hold 6 rows after" in err and len(err.splitlines()) == 1


def test_cli_errors_are_one_line(tmp_path, capsys):
    f = tmp_path / "s.csv"
    write_csv(f)
    cases = [
        (["--csv", str(f), "--target", "nope"], "column 'nope' is not in"),
        (["--csv", str(f)], "--csv needs --target"),
        (["--csv", str(tmp_path / "no.csv"), "--target", "load"], "does not exist"),
        (["--csv", str(f), "--target", "load", "--context", "500"], "too few rows"),
    ]
    for extra, message in cases:
        assert main(["train", "forecast", *extra, "--steps", "1", "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("strategy", ["direct", "recursive"])
def test_skip_adds_a_linear_map_of_each_steps_inputs(strategy):
    """With ``skip``, the output is the recurrent head plus ``W_x x_t`` (no second bias); the flag
    survives the checkpoint's JSON."""
    from lstm.models.forecaster import Forecaster

    torch.manual_seed(0)
    config = ForecasterConfig(3, 5, 4, recursive_size=6, hidden_size=7, strategy=strategy,
                              skip=True)  # fmt: skip
    assert ForecasterConfig.from_json(config.to_json()).skip is True
    old = {k: v for k, v in config.to_json().items() if k != "skip"}  # a checkpoint from before
    assert ForecasterConfig.from_json(old).skip is False
    model = Forecaster(config).eval()
    plain = Forecaster(ForecasterConfig.from_json({**config.to_json(), "skip": False})).eval()
    plain.load_state_dict(model.state_dict(), strict=False)
    assert model.skip.weight.shape == (1, 5 if strategy == "direct" else 6)
    if strategy == "direct":
        past, future = torch.randn(2, 8, 3), torch.randn(2, 4, 5)
        got, base, x = model(past, future), plain(past, future), future
    else:
        x = torch.randn(2, 4, 6)
        got, base = model.step(x)[0], plain.step(x)[0]
    torch.testing.assert_close(got, base + x @ model.skip.weight.T, rtol=0, atol=1e-6)


def test_time_of_year_features_only_when_the_training_part_spans_two_years():
    """With less than two years of training data a time-of-year feature names the date, not a
    season; ``year=None`` leaves it out then and keeps it from two years on."""
    import pandas as pd

    from lstm.data.series import calendar_features, spans_two_years

    def daily(days):
        index = pd.date_range("2020-01-01", periods=days, freq="D")
        return Series("s", "y", np.arange(days, dtype=float), np.zeros((days, 0)), [], index, 7)

    short = WindowData(daily(400), context=14, horizon=7, test_origins=2, val_origins=2)
    assert short.year is False
    assert not any(n.startswith("year_") for n in short.feature_names)
    long = WindowData(daily(800), context=14, horizon=7, test_origins=2, val_origins=2)
    assert long.year is True and "year_sin1" in long.feature_names
    forced = WindowData(daily(400), context=14, horizon=7, test_origins=2, val_origins=2, year=True)
    assert forced.num_features == short.num_features + 4
    index = daily(800).index
    assert spans_two_years(index, 731) and not spans_two_years(index, 730)
    _, names = calendar_features(index, year=False)
    assert names == [f"dow{d}" for d in range(7)]


def test_level_normalization_follows_a_shift_of_the_target():
    """With ``level`` the forecaster works relative to the past window's mean target: adding a
    constant to the target (the past's first column and the future's seasonal lags) adds it to
    every forecast; the features and the position are left as they are."""
    from lstm.models.forecaster import Forecaster

    torch.manual_seed(0)
    # past: target + 2 features; future: 2 features, 2 lags, position
    config = ForecasterConfig(3, 5, 4, hidden_size=7, quantiles=(0.1, 0.5, 0.9), level=True)
    model = Forecaster(config).eval()
    past, future = (
        torch.randn(2, 8, 3, dtype=torch.float64),
        torch.randn(2, 4, 5, dtype=torch.float64),
    )
    model.double()
    shift = 3.25
    past2, future2 = past.clone(), future.clone()
    past2[..., 0] += shift
    future2[..., 2:4] += shift
    torch.testing.assert_close(model(past2, future2), model(past, future) + shift)
    # and the features do matter: the same shift on a feature column changes the forecast
    past3 = past.clone()
    past3[..., 1] += shift
    assert not torch.allclose(model(past3, future), model(past, future) + shift)
    with pytest.raises(ValueError, match="direct strategy only"):
        ForecasterConfig(3, 5, 4, recursive_size=6, strategy="recursive", level=True)
