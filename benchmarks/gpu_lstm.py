"""Are the Triton kernels faster than cuDNN on a GPU? LSTM forward and forward+backward.

Peers, every one measured in the same run on the same weights and inputs, in interleaved rounds
(CUDA events, medians):

- ``ours``: ``lstm.LSTM(backend="triton")`` (the design ``lstm.kernels.triton.choose_design``
  picks; ``--design`` forces one);
- ``ours+graph`` (forward only): the same forward captured once in a CUDA graph and replayed,
  which removes the per-step launch overhead;
- ``cudnn``: ``torch.nn.LSTM`` (cuDNN);
- ``eager``: a ``torch.nn.LSTMCell`` loop over time in eager mode (what every variant that
  cuDNN does not cover falls back to).

Ceilings, measured once at the start: a large device-to-device copy (GB/s; read + write bytes)
and a large matrix product (TFLOP/s, in the benchmarked dtype; float32 with TF32 off, as our
float32 kernels multiply in full float32). Each point reports our achieved rate against both:

- FLOP/s: ``2·T·B·4H·(I + H)`` per forward (the input and recurrent products), 3x that for
  forward+backward (the backward's products are twice the forward's);
- bandwidth: a lower bound on the bytes a sequential recurrence must move, per step: ``W_hh``
  read once (forward; twice with the backward), plus the step's pre-activations, gates and states
  (``B·(4H + 4H + 2H)`` elements forward, about twice that backward). For small batches this,
  not FLOP/s, is the ceiling that matters.

    python -m benchmarks.gpu_lstm                   # the full grid, float32 and bfloat16
    python -m benchmarks.gpu_lstm --quick           # T 100, B {1, 64}, H {256, 512}
    python -m benchmarks.gpu_lstm --dry-run         # one tiny point on the CPU (Triton interpreter)

Writes ``benchmarks/results/gpu_lstm.json`` and ``gpu_lstm.md`` (the table for
docs/performance.md); prints the table; never asserts a time. Ratios are *peer time / our time*:
above 1 means we are faster. Without a CUDA device it stops with a one-line message (``--dry-run``
checks the code paths on the CPU: its times mean nothing).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
FULL_GRID = dict(T=(100, 1000), B=(1, 8, 64, 256), H=(128, 256, 512, 1024))
QUICK_GRID = dict(T=(100,), B=(1, 64), H=(256, 512))
DRY_GRID = dict(T=(4,), B=(2,), H=(16,))


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


class Clock:
    """Times a callable on the device: CUDA events on a GPU, perf_counter on the CPU (dry run)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self, fn: Callable[[], object]) -> float:
        """Milliseconds for one call of ``fn``."""
        if not self.cuda:
            t0 = time.perf_counter()
            fn()
            return 1e3 * (time.perf_counter() - t0)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)


def interleaved(
    clock: Clock, fns: dict[str, Callable[[], object]], min_rounds: int, budget_s: float
) -> dict[str, dict]:
    """Each callable once per round, round after round, for at least ``min_rounds`` rounds and
    until ``budget_s`` is spent (after two warm-up calls each: the first compiles the kernels).
    Returns per name the median and quartiles in ms, or the error that stopped it."""
    live, out = {}, {}
    for name, fn in fns.items():
        try:
            fn()
            fn()
            live[name] = fn
        except Exception as error:  # a peer that cannot run this point (e.g. a dtype) is noted
            out[name] = {"error": f"{type(error).__name__}: {error}"[:300]}
    times: dict[str, list[float]] = {name: [] for name in live}
    start = time.perf_counter()
    rounds = 0
    while live and (rounds < min_rounds or time.perf_counter() - start < budget_s) and rounds < 100:
        for name, fn in live.items():
            times[name].append(clock(fn))
        rounds += 1
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0]] * 3
        out[name] = {"median_ms": statistics.median(ts), "q1_ms": q[0], "q3_ms": q[2],
                     "rounds": len(ts)}  # fmt: skip
    return out


# --------------------------------------------------------------------------------------------
# The device and its ceilings
# --------------------------------------------------------------------------------------------


def describe_device(device: torch.device) -> dict:
    """The device named, with the software that ran on it (a number without its machine means
    nothing)."""
    import triton

    info = {"torch": torch.__version__, "triton": triton.__version__,
            "python": platform.python_version()}  # fmt: skip
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            device=torch.cuda.get_device_name(device),
            capability=".".join(map(str, torch.cuda.get_device_capability(device))),
            memory_gib=round(props.total_memory / 2**30, 1),
            multiprocessors=props.multi_processor_count,
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    else:
        info.update(device=f"CPU ({platform.processor() or platform.machine()}), dry run: "
                    "the Triton interpreter, times mean nothing")  # fmt: skip
    return info


def measure_ceilings(device: torch.device, dtype: torch.dtype, clock: Clock, dry: bool) -> dict:
    """A large device-to-device copy (GB/s) and a large matmul (TFLOP/s) in ``dtype``."""
    n_bytes = (16 if dry else 2048) * 2**20
    src = torch.empty(n_bytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    copy = interleaved(clock, {"copy": lambda: dst.copy_(src)}, min_rounds=10, budget_s=1.0)
    n = 256 if dry else 8192
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    mm = interleaved(clock, {"mm": lambda: a @ b}, min_rounds=10, budget_s=1.0)
    return {
        "copy_gb_s": 2 * n_bytes / (copy["copy"]["median_ms"] * 1e-3) / 1e9,
        "matmul_tflop_s": 2 * n**3 / (mm["mm"]["median_ms"] * 1e-3) / 1e12,
        "copy_bytes": n_bytes,
        "matmul_n": n,
    }


def work(T: int, B: int, I: int, H: int, elt: int, backward: bool) -> tuple[float, float]:
    """``(FLOPs, bytes)`` of one run: the products, and the lower bound on traffic of the module
    docstring (``elt`` bytes per element; float32 cell state and gates)."""
    flops = 2 * T * B * 4 * H * (I + H) * (3 if backward else 1)
    per_step = 4 * H * H * elt + B * (4 * H * elt + 4 * H * 4 + 2 * H * 4)
    return flops, T * per_step * (2 if backward else 1)


# --------------------------------------------------------------------------------------------
# One grid point
# --------------------------------------------------------------------------------------------


def eager_cell_loop(cell: torch.nn.LSTMCell, x: torch.Tensor) -> torch.Tensor:
    """The eager fallback: one LSTMCell call per step, ``(T, B, I) -> (T, B, H)``."""
    h = x.new_zeros(x.shape[1], cell.hidden_size)
    c = torch.zeros_like(h)
    outs = []
    for t in range(x.shape[0]):
        h, c = cell(x[t], (h, c))
        outs.append(h)
    return torch.stack(outs)


def graphed_forward(module: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """Our inference forward captured in a CUDA graph: replaying it launches the whole sequence
    at once. Capturable because a step launch never synchronises with the host."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(stream):
        for _ in range(2):  # warm up on the side stream (compiles, allocates)
            module(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        module(x)
    return graph.replay


def run_point(T, B, H, dtype, device, clock, budget_s, min_rounds, graphs) -> list[dict]:
    """Times every peer at one point, forward and forward+backward; checks ours against cuDNN
    (the largest output difference is recorded) before timing."""
    import lstm

    I = H  # a layer in a stack: input size = hidden size
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(I, H, device=device, dtype=dtype)
    ours = lstm.LSTM.from_torch(theirs, backend="triton")
    cell = torch.nn.LSTMCell(I, H, device=device, dtype=dtype)
    with torch.no_grad():  # the same weights for the eager loop
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(theirs, name + "_l0"))
    x = torch.randn(T, B, I, device=device, dtype=dtype)
    with torch.no_grad():
        diff = (ours(x)[0].float() - theirs(x)[0].float()).abs().max().item()

    def forward(fn):
        def run():
            with torch.no_grad():
                fn()

        return run

    def training(module_fn, params):
        def run():
            for p in params:
                p.grad = None
            module_fn().float().sum().backward()

        return run

    peers_fwd = {"ours": forward(lambda: ours(x)), "cudnn": forward(lambda: theirs(x)),
                 "eager": forward(lambda: eager_cell_loop(cell, x))}  # fmt: skip
    if graphs and device.type == "cuda":
        try:
            peers_fwd["ours+graph"] = graphed_forward(ours, x)
        except Exception as error:
            print(f"  CUDA graph capture failed at T={T} B={B} H={H}: {error}", file=sys.stderr)
    peers_train = {
        "ours": training(lambda: ours(x)[0], list(ours.parameters())),
        "cudnn": training(lambda: theirs(x)[0], list(theirs.parameters())),
        "eager": training(lambda: eager_cell_loop(cell, x), list(cell.parameters())),
    }
    rows = []
    elt = torch.finfo(dtype).bits // 8
    for mode, peers in (("forward", peers_fwd), ("forward+backward", peers_train)):
        times = interleaved(clock, peers, min_rounds=min_rounds, budget_s=budget_s)
        flops, n_bytes = work(T, B, I, H, elt, backward=mode != "forward")
        row = {"dtype": str(dtype).removeprefix("torch."), "mode": mode, "T": T, "B": B, "H": H,
               "max_abs_diff_vs_cudnn": diff, "times": times}  # fmt: skip
        ms = lambda name, times=times: times.get(name, {}).get("median_ms")  # noqa: E731
        row["ours_ms"], row["cudnn_ms"], row["eager_ms"] = ms("ours"), ms("cudnn"), ms("eager")
        row["graph_ms"] = ms("ours+graph")
        ours_times = [v for v in (row["ours_ms"], row["graph_ms"]) if v is not None]
        if ours_times:  # our best way of running it: with or without the graph
            best = min(ours_times)
            row["x_cudnn"] = row["cudnn_ms"] / best if row["cudnn_ms"] else None
            row["x_eager"] = row["eager_ms"] / best if row["eager_ms"] else None
            row["tflop_s"] = flops / (best * 1e-3) / 1e12
            row["gb_s"] = n_bytes / (best * 1e-3) / 1e9
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

COLUMNS = [("dtype", "dtype", "s"), ("mode", "mode", "s"), ("T", "T", "d"), ("B", "B", "d"),
           ("H", "H", "d"), ("ours_ms", "ours ms", ".3f"), ("graph_ms", "graph ms", ".3f"),
           ("cudnn_ms", "cuDNN ms", ".3f"), ("eager_ms", "eager ms", ".2f"),
           ("x_cudnn", "x cuDNN", ".2f"), ("x_eager", "x eager", ".1f"),
           ("tflop_s", "TFLOP/s", ".2f"), ("of_matmul", "of matmul", ".0%"),
           ("gb_s", "GB/s", ".0f"), ("of_copy", "of copy", ".0%")]  # fmt: skip


def table(rows: list[dict], markdown: bool) -> str:
    def cell(row, key, fmt):
        value = row.get(key)
        return "" if value is None else format(value, fmt)

    cells = [[cell(r, k, f) for k, _, f in COLUMNS] for r in rows]
    heads = [h for _, h, _ in COLUMNS]
    if markdown:
        lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---:" for _ in heads) + "|"]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])
    widths = [max(len(x) for x in col) for col in zip(heads, *cells)]
    lines = [
        "  ".join(h.rjust(w) for h, w in zip(heads, widths)),
        "  ".join("-" * w for w in widths),
    ]
    return "\n".join(lines + ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells])


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="T 100, B {1, 64}, H {256, 512}")
    parser.add_argument("--dry-run", action="store_true",
                        help="one tiny point on the CPU under the Triton interpreter")  # fmt: skip
    parser.add_argument("--dtype", choices=[*DTYPES, "both"], default="both")
    parser.add_argument("--design", choices=["auto", "per_step", "persistent"], default="auto")
    parser.add_argument("--no-graphs", action="store_true", help="skip the CUDA-graph peer")
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per point and mode")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (markdown beside it)")
    args = parser.parse_args(argv)

    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        print("gpu_lstm: no CUDA device here: this benchmark measures GPU kernels against cuDNN; "
              "run it on a machine with an NVIDIA GPU, or pass --dry-run to check its code paths "
              "on the CPU", file=sys.stderr)  # fmt: skip
        return 2
    if args.dry_run and not cuda:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is first imported
    try:
        import triton  # noqa: F401
    except ImportError:
        print("gpu_lstm: triton is not installed (pip install -e '.[gpu]')", file=sys.stderr)
        return 2
    import dataclasses

    from lstm.kernels import triton as kernels

    kernels.config = dataclasses.replace(kernels.config, design=args.design)
    device = torch.device("cuda" if cuda else "cpu")
    grid = DRY_GRID if args.dry_run else QUICK_GRID if args.quick else FULL_GRID
    dtypes = list(DTYPES) if args.dtype == "both" else [args.dtype]
    if cuda:
        # float32 compared as float32: cuDNN and torch's matmul would otherwise use TF32.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    clock = Clock(device)
    budget = 0.0 if args.dry_run else args.budget
    min_rounds = 1 if args.dry_run else 5
    payload = {"device": describe_device(device), "design": args.design, "grid": grid,
               "tf32": False, "ceilings": {}, "rows": []}  # fmt: skip
    print(f"device: {payload['device']['device']}")
    for dtype_name in dtypes:
        dtype = DTYPES[dtype_name]
        ceilings = measure_ceilings(device, dtype, clock, args.dry_run)
        payload["ceilings"][dtype_name] = ceilings
        print(f"{dtype_name} ceilings: copy {ceilings['copy_gb_s']:.0f} GB/s, "
              f"matmul {ceilings['matmul_tflop_s']:.2f} TFLOP/s")  # fmt: skip
        for T, B, H in itertools.product(grid["T"], grid["B"], grid["H"]):
            print(f"  {dtype_name} T={T} B={B} H={H} ...", file=sys.stderr, flush=True)
            rows = run_point(T, B, H, dtype, device, clock, budget, min_rounds,
                             graphs=not args.no_graphs)  # fmt: skip
            for row in rows:
                if row.get("tflop_s") is not None:
                    row["of_matmul"] = row["tflop_s"] / ceilings["matmul_tflop_s"]
                    row["of_copy"] = row["gb_s"] / ceilings["copy_gb_s"]
            payload["rows"].extend(rows)
            if cuda:
                torch.cuda.empty_cache()
    print(table(payload["rows"], markdown=False))
    if args.out is not None:
        out = args.out
    elif args.dry_run:
        out = Path(tempfile.mkdtemp(prefix="gpu_lstm_dry_run_")) / "gpu_lstm.json"
    else:
        out = RESULTS / ("gpu_lstm_quick.json" if args.quick else "gpu_lstm.json")
    write_atomically(out, json.dumps(payload, indent=1) + "\n")
    device_line = f"Device: {payload['device']['device']}\n\n"
    write_atomically(out.with_suffix(".md"), device_line + table(payload["rows"], True) + "\n")
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
