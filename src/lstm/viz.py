"""Seeing inside: plots and pages of what a recurrent layer writes, erases and reads.

- :func:`plot_gradient_flow`: the norm of dL/dh_t (and dL/dC_t) against the lag to the loss, on a
  log scale (data from :mod:`lstm.introspect`).
- :func:`plot_gate_heatmaps`: the input, forget and output gates and the cell state over time.
- :func:`gates_html`: a self-contained HTML page that colours each character of a text by a cell's
  activation or a gate's value (the notebook analogy: what is written, erased and read, where).
- :func:`find_interpretable_cells`: the units whose activation tracks something a reader can name
  (inside quotes, bracket depth, position in the line, ...), ranked by correlation.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "TEXT_FEATURES",
    "find_interpretable_cells",
    "gates_html",
    "plot_confusion",
    "plot_gate_heatmaps",
    "plot_gradient_flow",
    "save_figure",
    "text_features",
]


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Writes a matplotlib figure as PNG atomically (a temporary file, then a rename: a reader or
    a kill never sees half a picture) and closes it. Returns the path."""
    import os

    path = Path(path)
    tmp = path.with_name(".tmp-" + path.name)
    fig.savefig(tmp, format="png", dpi=dpi)
    _pyplot().close(fig)
    os.replace(tmp, path)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files, never a window
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(
    confusion: Sequence[Sequence[int]],
    label_names: Sequence[str],
    path: str | Path,
    title: str = "",
    compact: bool | None = None,
) -> Path:
    """A confusion matrix (rows: truth, columns: prediction) as a PNG, each cell shaded by its
    share of the row. Counts and row shares are written in; ``compact`` (the default beyond six
    labels, e.g. keyword spotting's 18 words) writes the nonzero counts only, in small cells."""
    import numpy as np

    plt = _pyplot()
    cm = np.asarray(confusion)
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = len(label_names)
    compact = k > 6 if compact is None else compact
    if compact:
        fig, ax = plt.subplots(figsize=(1.5 + 0.42 * k, 1.2 + 0.4 * k), dpi=100)
    else:
        fig, ax = plt.subplots(figsize=(2.2 + 1.1 * k, 1.8 + 1.0 * k), dpi=110)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            color = "white" if share[i, j] > 0.6 else "black"
            if not compact:
                ax.text(j, i, f"{cm[i, j]:,}\n{share[i, j]:.1%}", ha="center", va="center",
                        color=color, fontsize=9)  # fmt: skip
            elif cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7, color=color)
    if compact:
        ax.set_xticks(range(k), label_names, rotation=60, fontsize=8)
        ax.set_yticks(range(k), label_names, fontsize=8)
    else:
        ax.set_xticks(range(k), label_names, rotation=30 if k > 3 else 0)
        ax.set_yticks(range(k), label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=9 if compact else 10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100 if compact else 120)


def plot_gradient_flow(
    curves: Mapping[str, Tensor | Sequence[float]], path: str | Path, title: str = ""
) -> Path:
    """One line per curve: ``curves[label]`` holds a norm per time step ``t`` (loss at the last
    step), drawn against the lag ``T - 1 - t`` on a log scale; a dashed line for a cell state's
    curve (a label with "dL/dC"). Exact zeros (underflow) are not drawn, and the label says from
    which lag on the gradient is zero. Returns the PNG's path."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for label, values in curves.items():
        v = torch.as_tensor(values, dtype=torch.float64).flip(0)  # index = lag
        zero = (v <= 0).nonzero()
        style = "--" if "dL/dC" in label else "-"
        if len(zero):
            label = f"{label} (0 from lag {int(zero[0])})"
        shown = torch.where(v > 0, v, torch.full_like(v, float("nan")))
        ax.semilogy(range(len(v)), shown.tolist(), label=label, linestyle=style)
    ax.set_xlabel("lag to the loss (steps)")
    ax.set_ylabel("gradient norm")
    ax.set_title(title or "How far back does the gradient reach?")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def plot_gate_heatmaps(
    gates: Mapping[str, Tensor],
    path: str | Path,
    cell: Tensor | None = None,
    text: str | None = None,
    units: int = 32,
    title: str = "",
) -> Path:
    """Heat maps of each gate (and the cell state) for one sequence: units down, time across.

    Args:
        gates: name -> ``(T, H)`` activations (e.g. ``LayerTrace.gates`` for one batch row).
        cell: ``(T, H)`` cell states, drawn as :math:`\\tanh(C_t)` so large values stay readable.
        text: the characters, used as time tick labels when short enough.
        units: how many units to draw (the first ``units``).
    """
    plt = _pyplot()
    panels = dict(gates)
    if cell is not None:
        panels["tanh(cell)"] = torch.tanh(cell)
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, 1.6 + 1.5 * len(panels)), squeeze=False)
    for ax, (name, values) in zip(axes[:, 0], panels.items()):
        v = values.detach().float()[:, :units].T  # (units, T)
        signed = name.startswith("tanh") or name == "candidate"
        im = ax.imshow(
            v.numpy(), aspect="auto", interpolation="nearest",
            cmap="RdBu_r" if signed else "viridis", vmin=-1 if signed else 0, vmax=1,
        )  # fmt: skip
        ax.set_ylabel(name)
        fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01)
        if text is not None and len(text) <= 120:
            ax.set_xticks(range(len(text)))
            ax.set_xticklabels([repr(ch)[1:-1] for ch in text], fontsize=6, family="monospace")
    axes[0, 0].set_title(title or "gate activations over time (units down, steps across)")
    fig.tight_layout()
    return save_figure(fig, path)


def _colour(value: float, signed: bool) -> str:
    """Red for positive, blue for negative (signed); white to green for [0, 1] gates. The
    diverging colours stop at 60% intensity, so black text stays readable on them."""
    if math.isnan(value):
        return "#ffffff"
    if signed:
        v = max(-1.0, min(1.0, value))
        fade = round(255 * (1 - 0.6 * abs(v)))
        return f"rgb(255,{fade},{fade})" if v >= 0 else f"rgb({fade},{fade},255)"
    v = max(0.0, min(1.0, value))
    return f"rgb({int(255 * (1 - v))},{int(255 - 80 * v)},{int(255 * (1 - v))})"


def gates_html(
    text: str,
    signals: Mapping[str, Tensor],
    title: str = "What the LSTM writes, erases and reads",
    notes: Mapping[str, str] | None = None,
) -> str:
    """A self-contained HTML page: for each signal, the text with every character's background
    coloured by the signal's value at that character (hover shows the value).

    ``signals`` maps a name (``"cell 17"``, ``"forget gate 17"``) to a ``(len(text),)`` tensor.
    Names containing ``gate`` are drawn on [0, 1] (white to green), others on [-1, 1] (blue, white,
    red). ``notes`` adds a caption per signal (what the cell seems to track).
    """
    blocks = []
    for name, values in signals.items():
        values = torch.as_tensor(values).detach().double().reshape(-1)
        if values.numel() != len(text):
            raise ValueError(
                f"signal {name!r} has {values.numel()} values but the text has {len(text)} characters"
            )
        signed = "gate" not in name
        spans = []
        for ch, v in zip(text, values.tolist()):
            shown = html.escape(ch) if ch != "\n" else "↵"
            spans.append(
                f'<span class="c" style="background:{_colour(v, signed)}" '
                f'title="{v:+.3f}">{shown}</span>' + ("<br>" if ch == "\n" else "")
            )
        caption = html.escape((notes or {}).get(name, ""))
        scale = "0 (white) to 1 (green)" if not signed else "-1 (blue) to +1 (red)"
        blocks.append(
            f'<section><h2>{html.escape(name)}</h2><p class="note">{caption} '
            f'<em>scale: {scale}</em></p><div class="text">{"".join(spans)}</div></section>'
        )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;margin:2em;max-width:70em}"
        ".text{font-family:monospace;white-space:pre-wrap;line-height:1.6;font-size:14px}"
        ".c{padding:0 0.5px}.note{color:#555}"
        f"</style></head><body><h1>{html.escape(title)}</h1>{''.join(blocks)}</body></html>\n"
    )


# --------------------------------------------------------------------------------------------
# Interpretable cells
# --------------------------------------------------------------------------------------------


def _quote_parity(text: str) -> list[float]:
    inside, out = False, []
    for ch in text:
        if ch == '"':
            inside = not inside
        out.append(float(inside))
    return out


def _bracket_depth(text: str) -> list[float]:
    depth, out = 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        out.append(float(depth))
    return out


def _position_in_line(text: str) -> list[float]:
    pos, out = 0, []
    for ch in text:
        out.append(float(pos))
        pos = 0 if ch == "\n" else pos + 1
    return out


def _inside_word(text: str) -> list[float]:
    return [float(ch.isalpha()) for ch in text]


def _upper_case(text: str) -> list[float]:
    return [float(ch.isupper()) for ch in text]


TEXT_FEATURES = {
    "inside quotes": _quote_parity,
    "bracket depth": _bracket_depth,
    "position in line": _position_in_line,
    "inside a word": _inside_word,
    "upper case": _upper_case,
}


def text_features(text: str) -> dict[str, Tensor]:
    """Each feature of :data:`TEXT_FEATURES` as a ``(len(text),)`` tensor."""
    return {name: torch.tensor(f(text), dtype=torch.float64) for name, f in TEXT_FEATURES.items()}


def find_interpretable_cells(
    text: str, states: Tensor, top: int = 5, min_variation: float = 1e-6
) -> list[dict]:
    """Units whose activation over ``text`` correlates best with a nameable feature.

    Args:
        text: the characters, one per step.
        states: ``(len(text), H)`` activations (cell states, or hidden states).
        top: how many (feature, unit) pairs to return.

    Returns:
        A list of ``{"feature", "unit", "correlation"}``, highest ``|correlation|`` first, with at
        most one entry per unit. Features that do not vary over the text are skipped.
    """
    states = torch.as_tensor(states).detach().double()
    if states.shape[0] != len(text):
        raise ValueError(
            f"states has {states.shape[0]} steps but the text has {len(text)} characters"
        )
    z = states - states.mean(0)
    z = z / z.norm(dim=0).clamp_min(1e-12)  # (T, H), unit columns
    found = []
    for name, feature in text_features(text).items():
        f = feature - feature.mean()
        if f.norm() < min_variation:
            continue
        corr = (f / f.norm()) @ z  # (H,): Pearson correlation of each unit with the feature
        for unit in corr.abs().argsort(descending=True)[:top].tolist():
            found.append(dict(feature=name, unit=unit, correlation=float(corr[unit])))
    found.sort(key=lambda d: -abs(d["correlation"]))
    best, used = [], set()
    for entry in found:
        if entry["unit"] not in used:
            used.add(entry["unit"])
            best.append(entry)
        if len(best) == top:
            break
    return best
