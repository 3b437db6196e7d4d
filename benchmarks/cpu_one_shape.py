"""One LSTM shape on the CPU: our fused layer and torch.nn.LSTM (oneDNN), medians of 15 calls
after 3 warm-up calls, each layer timed in a block of its own (as the kernel experiments of
docs/performance.md were: run the script with a kernel toggle set, then unset, and compare).

    python -m benchmarks.cpu_one_shape 1000 1 256 inference
    python -m benchmarks.cpu_one_shape 100 1 256 training --name one_shape
    python -m benchmarks.cpu_one_shape 200 16 256 inference --input 8   # the recurrent loop alone

With ``--input`` small, the input projection costs next to nothing and the time is the loop's:
the per-step products and gate arithmetic. GFLOP/s counts the layer's multiply-adds (both
products) over the median time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import lstm
from benchmarks.common import machine, print_table, write_json

COLUMNS = [("layer", "layer", "s"), ("mode", "mode", "s"), ("T", "T", "d"), ("B", "B", "d"),
           ("I", "I", "d"), ("H", "H", "d"), ("median_ms", "median ms", ".2f"),
           ("gflops", "GFLOP/s", ".0f"), ("x_ours", "time / ours", ".2f")]  # fmt: skip


def median_ms(run, calls: int = 15, warmup: int = 3) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("T", type=int)
    parser.add_argument("B", type=int)
    parser.add_argument("H", type=int)
    parser.add_argument("mode", choices=["inference", "training"])
    parser.add_argument("--input", type=int, default=None, help="input size I (default: H)")
    parser.add_argument("--name", default="cpu_one_shape", help="results file name")
    args = parser.parse_args()
    I = args.input or args.H
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(I, args.H)
    ours = lstm.LSTM.from_torch(theirs, backend="cpu")
    x = torch.randn(args.T, args.B, I)
    # multiply-adds x 2 of both products, forward; training adds the backward's two and the
    # weight gradients' two (the grid's convention: 3x the forward)
    flops = 2 * args.T * args.B * 4 * args.H * (I + args.H) * (3 if args.mode == "training" else 1)

    def run(module):
        if args.mode == "inference":

            def infer():
                with torch.no_grad():
                    module(x)

            return infer
        return lambda: module(x.requires_grad_(True))[0].sum().backward()

    rows = [
        {"layer": name, "mode": args.mode, "T": args.T, "B": args.B, "I": I, "H": args.H,
         "median_ms": median_ms(run(module))}
        for name, module in (("ours", ours), ("torch.nn.LSTM", theirs))
    ]  # fmt: skip
    for row in rows:
        row["gflops"] = flops / (row["median_ms"] * 1e-3) / 1e9
        row["x_ours"] = row["median_ms"] / rows[0]["median_ms"]  # this layer's time / ours
    print_table(rows, COLUMNS)
    print(write_json(args.name, {"machine": machine(), "rows": rows}))


if __name__ == "__main__":
    main()
