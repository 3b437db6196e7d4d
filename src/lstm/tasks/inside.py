"""``lstm viz gradients`` and ``lstm viz gates``: seeing inside trained (and untrained) models."""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

import lstm
from lstm import viz
from lstm.introspect import gradient_flow

__all__ = ["gate_report", "gradient_report"]


def _fixed_length_batch(task, n: int, seed: int):
    """Test sequences that all have the task's longest length (so the layer sees a plain tensor
    and lag t means the same step in every row)."""
    data = task.make(max(n * 16, 512), torch.Generator().manual_seed(seed))
    keep = (data.lengths == data.lengths.max()).nonzero().squeeze(1)[:n]
    return data.inputs[keep], data.lengths[keep], data.targets[keep]


def gradient_report(
    task_name: str = "adding",
    length: int = 100,
    hidden_size: int | None = None,
    train_steps: int = 300,
    out_dir: str | Path = "runs/gradients",
    cells: tuple[str, ...] = ("lstm", "gru", "rnn"),
    seed: int = 0,
    forget_bias: float | None = None,
) -> dict:
    """For each cell, untrained and after ``train_steps`` updates on the task: the norm of
    dL/dh_t (and dL/dC_t) against the lag to the loss, through the hand-written BPTT. Writes
    ``gradients.png`` and ``gradients.json`` in ``out_dir``; returns the JSON's content. The
    untrained and the trained LSTM start from the same ``forget_bias``; it and ``hidden_size``
    default to the lab's :data:`~lstm.tasks.lab.RECIPE`."""
    from lstm.tasks.lab import LAB_TASKS, RECIPE, _loss, make_model, train_lab

    hidden_size = hidden_size or RECIPE.hidden_size
    forget_bias = RECIPE.forget_bias if forget_bias is None else forget_bias
    task = LAB_TASKS[task_name](length)
    if task.per_step:
        raise ValueError(f"gradient_report needs a task with a loss at the end, not {task_name!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x, lengths, targets = _fixed_length_batch(task, 64, seed + 1)
    batch64 = type("Batch", (), {"targets": targets.double(), "lengths": lengths})()
    curves, report = {}, {"task": task_name, "length": length, "cells": {}}
    for cell in cells:
        torch.manual_seed(seed)
        bias = forget_bias if cell == "lstm" else None
        fresh = make_model(task, cell, hidden_size, forget_bias=bias)
        result, trained = train_lab(task_name, cell=cell, length=length, hidden_size=hidden_size,
                                    steps=train_steps,
                                    eval_every=max(1, min(RECIPE.eval_every, train_steps)),
                                    seed=seed, forget_bias=bias, progress=False)  # fmt: skip
        # The run stops early once it solves the task: say how far it went and how it ended.
        steps = result.sequences_seen // result.config["batch_size"]
        trained_label = f"trained {steps} steps, {result.wrong} wrong of {result.test_sequences:,}"
        for label, model in (("untrained", fresh), (trained_label, trained)):
            # In float64: a plain RNN's gradient falls below float32's smallest number (1e-45)
            # within ~100 steps, which would read as exactly zero.
            m64 = copy.deepcopy(model).double()
            flow = gradient_flow(lambda inp, m=m64: m(inp, lengths), m64.rnn, x.double(),
                                 lambda o: _loss(task, o, batch64))  # fmt: skip
            norms = flow.norms()
            curves[f"{cell} dL/dh, {label}"] = norms["hidden"]
            entry = {"hidden": norms["hidden"].tolist()}
            if "cell" in norms:
                curves[f"{cell} dL/dC, {label}"] = norms["cell"]
                entry["cell"] = norms["cell"].tolist()
            report["cells"].setdefault(cell, {})[label] = entry
    viz.plot_gradient_flow(curves, out / "gradients.png",
                           title=f"gradient norm vs lag, {task_name} T={length}")  # fmt: skip
    (out / "gradients.json").write_text(json.dumps(report) + "\n")
    return report


def gate_report(
    checkpoint: str | Path,
    text: str,
    out_dir: str | Path = "runs/gates",
    layer: int = 0,
    top: int = 5,
    heatmap_chars: int = 200,
) -> dict:
    """For a language model written by ``lstm train lm``: runs ``text`` through it, finds the
    cells that track something nameable, and writes ``gates.html`` (each character coloured by the
    best cells and their gates) and ``gates.png`` (f, i, o and C over the first characters)."""
    from lstm.models.language_model import load_language_model

    model, vocab, meta = load_language_model(checkpoint)
    rnn = getattr(model, "rnn", None)
    if rnn is None or getattr(rnn, "mode", None) != "LSTM":
        raise ValueError("viz gates needs an LSTM language model (this checkpoint is not one)")
    if not isinstance(rnn, lstm.LSTM):
        rnn = lstm.LSTM.from_torch(rnn)  # a --backend torch checkpoint: same weights, our layer
    if not 0 <= layer < rnn.num_layers:
        raise ValueError(f"layer should be in 0..{rnn.num_layers - 1}, got {layer}")
    ids = vocab.encode(text)
    if len(ids) != len(text):
        raise ValueError("viz gates needs a character-level model (one token per character)")
    with torch.no_grad():
        x = model.embedding(ids.unsqueeze(0))  # (1, T, E)
        _, _, traces = rnn(x, return_gates=True)
    trace = traces[layer]
    cell = trace.cell[0]  # (T, H)
    gates = {k: v[0] for k, v in trace.gates.items()}
    best = viz.find_interpretable_cells(text, torch.tanh(cell), top=top)
    signals, notes = {}, {}
    for entry in best:
        u = entry["unit"]
        name = f"cell {u} (tanh C)"
        signals[name] = torch.tanh(cell[:, u])
        notes[name] = f"tracks {entry['feature']} (correlation {entry['correlation']:+.2f})"
    if best:
        u = best[0]["unit"]
        for g in ("forget", "input", "output"):
            signals[f"{g} gate {u}"] = gates[g][:, u]
            notes[f"{g} gate {u}"] = f"the {g} gate of cell {u}"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    page = viz.gates_html(text, signals, notes=notes,
                          title=f"Inside {Path(meta['checkpoint']).name}: layer {layer}")  # fmt: skip
    (out / "gates.html").write_text(page, encoding="utf-8")
    n = min(heatmap_chars, len(text))
    viz.plot_gate_heatmaps({g: gates[g][:n] for g in ("input", "forget", "output")},
                           out / "gates.png", cell=cell[:n], text=text[:n])  # fmt: skip
    report = {"cells": best, "html": str(out / "gates.html"), "png": str(out / "gates.png")}
    (out / "gates.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


# -- the command ----------------------------------------------------------------------------------


def add_viz_arguments(p: argparse.ArgumentParser) -> None:
    from lstm.cli import _Parser, positive_int

    what = p.add_subparsers(dest="what", metavar="WHAT", parser_class=_Parser)
    g = what.add_parser("gradients", help="gradient norm against the lag, LSTM vs GRU vs RNN")
    g.add_argument("--task", default="adding", help="a lab task with a loss at the end")
    g.add_argument("--length", type=positive_int, default=100)
    g.add_argument("--hidden", type=positive_int, help="cells (default: the lab's recipe, 64)")
    g.add_argument(
        "--train-steps",
        type=positive_int,
        default=300,
        help="updates for the trained models (each stops early once it solves the task)",
    )
    g.add_argument("--forget-bias", type=float,
                   help="the LSTM's b_f at the start (default: the lab's recipe, 5)")  # fmt: skip
    g.add_argument("--out", default="runs/gradients")
    k = what.add_parser("gates", help="gate and cell activations of a character LSTM over a text")
    k.add_argument("checkpoint", help="a run or checkpoint directory from `lstm train lm`")
    src = k.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="a UTF-8 text file to read through the model")
    src.add_argument("--prompt", help="the text itself")
    k.add_argument("--max-chars", type=positive_int, default=2000)
    k.add_argument("--layer", type=int, default=0)
    k.add_argument("--out", default="runs/gates")


def run_viz(args: argparse.Namespace) -> int:
    from lstm.cli import UsageError

    if args.what == "gradients":
        report = gradient_report(
            args.task,
            args.length,
            args.hidden,
            args.train_steps,
            args.out,
            forget_bias=args.forget_bias,
        )
        for cell, runs in report["cells"].items():
            for label, entry in runs.items():
                h = entry["hidden"]
                print(
                    f"{cell:5} {label:22} |dL/dh| at lag {len(h) - 1}: {h[0]:.2e}  at lag 0: {h[-1]:.2e}"
                )
        print(f"plot: {Path(args.out) / 'gradients.png'}")
        return 0
    if args.what == "gates":
        if args.text is not None:
            from lstm.data.text import read_text_file

            text = read_text_file(args.text)[: args.max_chars]
        else:
            text = args.prompt[: args.max_chars]
        report = gate_report(args.checkpoint, text, args.out, layer=args.layer)
        for entry in report["cells"]:
            print(
                f"cell {entry['unit']:4d} tracks {entry['feature']:18} r={entry['correlation']:+.2f}"
            )
        print(f"page: {report['html']}\nheat maps: {report['png']}")
        return 0
    raise UsageError("give what to show: gradients or gates (see `lstm viz --help`)")
