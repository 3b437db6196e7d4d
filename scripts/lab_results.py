"""The long-time-lag experiments against Hochreiter and Schmidhuber (1997), and the forget-gate
bias effect (Jozefowicz et al. 2015): runs `lstm lab` configurations over seeds and writes a
markdown table (docs/results/lab.md) and the raw results (docs/results/lab.json).

    .venv/bin/python scripts/lab_results.py                      # the default set below
    .venv/bin/python scripts/lab_results.py --quick              # a smoke test (seconds)
    .venv/bin/python scripts/lab_results.py --only adding:100 --seeds 3 --steps 4000

Every run stops when its 2,560 test sequences are all right, or at the step budget.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from lstm.tasks.lab import RECIPE, format_result, run_lab

# (task, T, cell, forget-gate bias, seeds[, updates]): the paper's table and the bias comparison.
# A bias of "chrono" is chrono initialization (Tallec and Ollivier 2018) for lags up to 1.1 T.
# Every cell gets three seeds; the forget-bias ablations that show a failure get one (a failure
# costs the whole budget). Longer lags get a larger update budget, as the paper's needed
# more sequences (209,000 at T=500; 853,000 at T=1000): --only adding:500 runs them.
DEFAULT = [
    ("adding", 100, "lstm", 5.0, 3),
    ("adding", 100, "lstm", 1.0, 1),
    ("adding", 100, "lstm", 0.0, 1),
    ("adding", 100, "gru", None, 3),
    ("adding", 100, "rnn", None, 3),
    ("temporal-order-6a", 100, "lstm", 5.0, 3),
    ("temporal-order-6a", 100, "lstm", 1.0, 1),
    ("temporal-order-6a", 100, "gru", None, 3),
    ("temporal-order-6a", 100, "rnn", None, 3),
    ("temporal-order-6b", 100, "lstm", 5.0, 3),
    ("temporal-order-6b", 100, "gru", None, 3),
    ("adding", 100, "lstm", "chrono", 3),
    ("adding", 500, "lstm", 5.0, 1, 20_000),
    ("adding", 500, "lstm", 10.0, 1, 20_000),
    ("adding", 500, "lstm", "chrono", 3, 20_000),
    ("adding", 1000, "lstm", "chrono", 3, 20_000),
]


def _key(task: str, T: int, cell: str, bias: float | str | None, seed: int) -> tuple:
    return (task, T, cell, bias if cell == "lstm" else None, seed)


def _bias(config: dict) -> float | str | None:
    """A result's forget-gate column: its bias, or "chrono"."""
    return "chrono" if config.get("chrono") else config["forget_bias"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=None, help="override every row's seed count")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"update budget per run (default {RECIPE.steps:,}, or the row's own)",
    )
    parser.add_argument("--minutes", type=float, default=None, help="time budget per run")
    parser.add_argument("--hidden", type=int, default=RECIPE.hidden_size)
    parser.add_argument("--batch", type=int, default=RECIPE.batch_size)
    parser.add_argument("--lr", type=float, default=RECIPE.lr)
    parser.add_argument("--only", default=None, help="task:T[,task:T] to run a subset")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="docs/results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    # Every row as (task, T, cell, bias, seeds, updates), the command line overriding the rows.
    rows = [(*c[:5], args.steps or (c[5] if len(c) > 5 else RECIPE.steps)) for c in DEFAULT]
    if args.seeds is not None:
        rows = [(*c[:4], args.seeds, c[5]) for c in rows]
    configs = rows
    if args.only:
        wanted = {(t.split(":")[0], int(t.split(":")[1])) for t in args.only.split(",")}
        configs = [c for c in configs if (c[0], c[1]) in wanted]
    if args.quick:
        configs = rows = [("adding", 20, "lstm", 5.0, 1, 20)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # Results are written after every run and runs already in the file are not repeated: a long
    # table can be built over several sessions (delete the file to start over).
    saved = out / "lab.json"
    results = json.loads(saved.read_text()) if saved.exists() and not args.quick else []
    done = {_key(r["task"], r["config"]["length"], r["cell"], _bias(r["config"]), r["seed"])
            for r in results}  # fmt: skip
    t0 = time.time()
    for task, T, cell, bias, seeds, steps in configs:
        for seed in range(seeds):
            if _key(task, T, cell, bias, seed) in done:
                continue
            r = run_lab(task, cell=cell, length=T, hidden_size=args.hidden, batch_size=args.batch,
                        steps=steps, minutes=args.minutes, lr=args.lr,
                        forget_bias=None if bias == "chrono" else bias,
                        chrono=T + T // 10 if bias == "chrono" else None,
                        eval_every=RECIPE.eval_every, seed=seed, progress=False)  # fmt: skip
            print(format_result(r) + (f" [b_f={bias}]" if cell == "lstm" else ""), flush=True)
            results.append(asdict(r))
            saved.write_text(json.dumps(results, indent=1) + "\n")
    lines = [
        "| task | T | cell | forget bias | wrong of 2,560 (per seed) "
        "| sequences to solve (per seed) | budget (sequences) | paper |",
        "|---|---|---|---|---|---|---|---|",
    ]
    # The table covers every row with results, not only the rows this invocation ran.
    for task, T, cell, bias, _, steps in rows:
        want_bias = bias if cell == "lstm" else None
        rs = [r for r in results if r["task"] == task and r["config"]["length"] == T
              and r["cell"] == cell and _bias(r["config"]) == want_bias]  # fmt: skip
        if not rs:
            continue
        wrong = ", ".join(str(r["wrong"]) for r in rs)
        solved = ", ".join(
            f"{r['solved_after']:,}" if r["solved_after"] else "not solved" for r in rs
        )
        lines.append(f"| {task} | {T} | {cell} | {bias if cell == 'lstm' else '-'} | {wrong} | "
                     f"{solved} | {steps * args.batch:,} | {rs[0]['paper']} |")  # fmt: skip
    limit = f" or {args.minutes} min" if args.minutes else ""
    lines.append("")
    lines.append(f"Budget per run: the row's updates{limit} of batch {args.batch}, hidden "
                 f"{args.hidden}, Adam lr {args.lr}, clip 1.0; this invocation ran "
                 f"{time.time() - t0:.0f} s.")  # fmt: skip
    (out / "lab.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
