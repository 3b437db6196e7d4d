"""A kernel switch read on every call (``LSTM_CPU_BY_UNITS``), A/B in one process: our LSTM (or GRU)
layer with the variable set to each value in turn, and torch.nn's, timed in interleaved rounds
(medians). Comparing across processes on a noisy VM moved single points by tens of percent; in
one process both variants meet the same load.

    python -m benchmarks.cpu_toggle LSTM_CPU_BY_UNITS 0,1 300 16x64 1x256 64x128
    python -m benchmarks.cpu_toggle LSTM_CPU_BY_UNITS 0,1 100 16x64 --mode training
    python -m benchmarks.cpu_toggle LSTM_CPU_BY_UNITS 0,1 1000 1x64 --cell GRU
"""

from __future__ import annotations

import argparse
import os

import torch

import lstm
from benchmarks.common import interleaved, machine, print_table, write_json

COLUMNS = [("cell", "cell", "s"), ("mode", "mode", "s"), ("T", "T", "d"), ("B", "B", "d"),
           ("H", "H", "d"), ("variant", "variant", "s"), ("median_ms", "median ms", ".3f"),
           ("rounds", "rounds", "d")]  # fmt: skip


def _runner(module, x, training: bool, variable: str | None = None, value: str | None = None):
    """One call of ``module`` on ``x`` (forward, or forward and backward), with ``variable`` set
    to ``value`` first."""

    def run():
        if variable is not None:
            os.environ[variable] = value
        if training:
            module(x)[0].sum().backward()
        else:
            with torch.no_grad():
                module(x)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variable", help="an environment variable the kernels read per call")
    parser.add_argument("values", help="comma list of values to time, e.g. 0,1")
    parser.add_argument("T", type=int)
    parser.add_argument("shapes", nargs="+", help="BxH, e.g. 16x64")
    parser.add_argument("--mode", choices=["inference", "training"], default="inference")
    parser.add_argument("--cell", choices=["LSTM", "GRU", "RNN"], default="LSTM")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds per shape")
    parser.add_argument("--name", default="cpu_toggle", help="results file name")
    args = parser.parse_args()
    rows = []
    for shape in args.shapes:
        B, H = (int(v) for v in shape.split("x"))
        torch.manual_seed(0)
        theirs = getattr(torch.nn, args.cell)(H, H)
        ours = getattr(lstm, args.cell).from_torch(theirs, backend="cpu")
        x = torch.randn(args.T, B, H, requires_grad=args.mode == "training")

        training = args.mode == "training"
        fns = {f"{args.variable}={v}": _runner(ours, x, training, args.variable, v)
               for v in args.values.split(",")}  # fmt: skip
        fns[f"torch.nn.{args.cell}"] = _runner(theirs, x, training)
        for variant, t in interleaved(fns, budget_s=args.budget).items():
            rows.append({"cell": args.cell, "mode": args.mode, "T": args.T, "B": B, "H": H,
                         "variant": variant, "median_ms": t["median_ms"],
                         "rounds": t["rounds"]})  # fmt: skip
    os.environ.pop(args.variable, None)
    print_table(rows, COLUMNS)
    print(write_json(args.name, {"machine": machine(), "rows": rows}))


if __name__ == "__main__":
    main()
