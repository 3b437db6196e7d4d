"""Plots and the gate page: files written, values encoded, the HTML rendered by a real browser,
and interpretable cells found where a feature is planted."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch

import lstm
from lstm import viz


def test_gradient_flow_plot_is_written(tmp_path):
    path = viz.plot_gradient_flow(
        {"rnn": torch.logspace(-8, 0, 50), "lstm cell": torch.linspace(0.5, 1, 50)},
        tmp_path / "g.png",
    )
    assert path.stat().st_size > 10_000  # a real PNG, not an empty figure


def test_gate_heatmaps_from_a_trace(tmp_path):
    text = "to be, or not to be"
    m = lstm.LSTM(4, 8)
    _, _, (trace,) = m(torch.randn(len(text), 1, 4), return_gates=True)
    gates = {k: v[:, 0] for k, v in trace.gates.items()}
    path = viz.plot_gate_heatmaps(gates, tmp_path / "h.png", cell=trace.cell[:, 0], text=text)
    assert path.stat().st_size > 10_000


def test_gates_html_colours_every_character_and_escapes():
    text = 'a<b>"c"\nd'
    values = torch.tensor([1.0, -1.0, 0.0, 0.5, -0.5, 1.0, 0.2, 0.0, -0.2])
    page = viz.gates_html(
        text, {"cell 3": values, "forget gate 3": values.abs()}, notes={"cell 3": "x"}
    )
    assert page.count('class="c"') == 2 * len(text)
    body = page.split("<body>")[1]
    assert ">&lt;</span>" in body and ">&gt;</span>" in body and ">&quot;</span>" in body
    assert "<b>" not in body
    assert "rgb(255,102,102)" in page and "rgb(102,102,255)" in page  # +1 red, -1 blue (60%)
    assert "rgb(255,255,255)" in page  # 0 white
    assert 'title="+1.000"' in page and 'title="-1.000"' in page
    assert "↵" in page and "<br>" in page
    with pytest.raises(ValueError, match="has 3 values but the text has 9 characters"):
        viz.gates_html(text, {"cell 0": torch.zeros(3)})


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    _chromium() is None,
    reason="Debian's chromium is not installed (scripts/setup.sh installs it as root)",
)
def test_gates_html_renders_in_headless_chromium(tmp_path):
    """The page opens in a real browser: the DOM holds every character, and the screenshot shows
    the red and blue backgrounds."""
    import matplotlib.image as mpimg

    text = "RED" * 10 + "\n" + "BLUE" * 10
    values = torch.tensor([1.0] * 30 + [0.0] + [-1.0] * 40)
    page = tmp_path / "gates.html"
    page.write_text(viz.gates_html(text, {"cell 0": values}), encoding="utf-8")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    dom = subprocess.run(
        [_chromium(), *flags, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert dom.count('class="c"') == len(text)
    shot = tmp_path / "shot.png"
    subprocess.run(
        [_chromium(), *flags, f"--screenshot={shot}", "--window-size=1000,600", page.as_uri()],
        capture_output=True, timeout=120,
    )  # fmt: skip
    pixels = torch.tensor(mpimg.imread(shot))[..., :3]  # (H, W, 3) in [0, 1]
    red = ((pixels[..., 0] > 0.9) & (pixels[..., 1] < 0.45) & (pixels[..., 2] < 0.45)).sum()
    blue = ((pixels[..., 2] > 0.9) & (pixels[..., 0] < 0.45) & (pixels[..., 1] < 0.45)).sum()
    assert red > 200 and blue > 200


def test_find_interpretable_cells_finds_a_planted_quote_cell():
    torch.manual_seed(0)
    text = 'He said "yes" and then "no way" (but (quietly)) left.\nAnd "so" it went.\n'
    feats = viz.text_features(text)
    states = torch.randn(len(text), 16) * 0.3
    states[:, 5] = feats["inside quotes"] * 2 - 1 + 0.05 * torch.randn(len(text))
    states[:, 11] = feats["bracket depth"] + 0.05 * torch.randn(len(text))
    found = viz.find_interpretable_cells(text, states, top=3)
    by_unit = {d["unit"]: d for d in found}
    assert by_unit[5]["feature"] == "inside quotes" and by_unit[5]["correlation"] > 0.95
    assert by_unit[11]["feature"] == "bracket depth" and by_unit[11]["correlation"] > 0.95
    with pytest.raises(ValueError, match="states has 3 steps"):
        viz.find_interpretable_cells(text, torch.zeros(3, 2))


def test_plot_confusion_is_compact_beyond_six_labels(tmp_path):
    """Two classes: counts and shares in large cells; 18 keywords: counts in small cells. The
    figure sizes follow the two layouts (inches x dpi)."""
    import matplotlib.image

    from lstm.viz import plot_confusion

    two = plot_confusion([[5, 1], [2, 7]], ["neg", "pos"], tmp_path / "two.png", "sentiment")
    many = plot_confusion(torch.eye(18, dtype=torch.long).tolist(), [f"w{i}" for i in range(18)],
                          tmp_path / "many.png")  # fmt: skip
    assert matplotlib.image.imread(two).shape[:2] == (round((1.8 + 2.0) * 120),
                                                      round((2.2 + 2.2) * 120))  # fmt: skip
    assert matplotlib.image.imread(many).shape[:2] == (round((1.2 + 0.4 * 18) * 100),
                                                       round((1.5 + 0.42 * 18) * 100))  # fmt: skip
