"""What every benchmark shares: timing by interleaved rounds and medians, the machine's name and
load, its measured SGEMM rate, a printed table and a JSON file under benchmarks/results/."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    """The CPU model, core count, torch build and current load average (the machine is named in
    every result: a number without its machine means nothing)."""
    model, cores = platform.processor() or "unknown", os.cpu_count()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        model = fields.get("Model name", model)
        flags = fields.get("Flags", "").split()
        simd = [f for f in ("avx2", "fma", "avx512f") if f in flags]
    except (OSError, subprocess.CalledProcessError):
        simd = []
    return {
        "cpu": model,
        "cores": cores,
        "simd": simd,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "loadavg_start": list(os.getloadavg()),
    }


def interleaved(
    fns: dict[str, Callable[[], object]], min_rounds: int = 5, budget_s: float = 2.0
) -> dict[str, dict]:
    """Times each callable once per round, round after round (so a burst of load from elsewhere
    hits every peer alike), for at least ``min_rounds`` rounds and until ``budget_s`` is spent.
    Returns, per name, the median and quartiles in milliseconds and the number of rounds."""
    for fn in fns.values():  # warm up: first calls allocate, JIT, fill caches
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    rounds = 0
    while rounds < min_rounds or time.perf_counter() - start < budget_s:
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        rounds += 1
        if rounds >= 200:
            break
    out = {}
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0]] * 3
        out[name] = {"median_ms": 1e3 * statistics.median(ts), "q1_ms": 1e3 * q[0],
                     "q3_ms": 1e3 * q[2], "rounds": len(ts)}  # fmt: skip
    return out


def sgemm_gflops(n: int = 1024, rounds: int = 15) -> float:
    """The machine's measured single-precision GEMM rate (all threads), GFLOP/s: the ceiling every
    kernel's achieved rate is compared with. The faster of torch.mm (MKL) and oneDNN (torch's
    ``mkldnn::_linear_pointwise``, where torch has it): on AMD CPUs with AVX-512, MKL runs its
    AVX2 code and oneDNN is about twice as fast, so MKL alone would understate the ceiling."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    peers = {"mkl": lambda: torch.mm(a, b, out=out)}
    onednn = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if onednn is not None and torch.backends.mkldnn.is_available():
        peers["onednn"] = lambda: onednn(a, b, None, "none", [], "")
    result = interleaved(peers, min_rounds=rounds, budget_s=1)
    return max(2 * n**3 / (r["median_ms"] * 1e-3) / 1e9 for r in result.values())


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Prints (and returns) a plain-text table; ``columns`` are (key, header, format)."""
    cells = [[header for _, header, _ in columns]]
    for row in rows:
        cells.append([("" if row.get(k) is None else format(row[k], fmt)) for k, _, fmt in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    text = "\n".join(lines)
    print(text)
    return text


def markdown_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """The same table as GitHub markdown (for docs/performance.md)."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    rule = "|" + "|".join("---:" for _ in columns) + "|"
    body = [
        "| " + " | ".join("" if r.get(k) is None else format(r[k], f) for k, _, f in columns) + " |"
        for r in rows
    ]
    return "\n".join([head, rule, *body])


def write_json(name: str, payload: dict) -> Path:
    """Writes ``benchmarks/results/<name>.json`` atomically and returns its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    tmp.replace(path)
    return path
