"""LSTM vs GRU vs RNN vs a Transformer on Shakespeare: equal parameter count, equal training time.

Each model is trained by the `lstm train lm` command in its own process (so each has the machine
to itself, one after the other) for the same number of minutes, with the same data, batches and
schedule; the GRU's and RNN's state sizes and the Transformer's width are chosen so that every
model has the LSTM's parameter count (within a few percent). Then it writes:

- a table (stdout, and the ``lm`` section of docs/results.md between its markers),
- the curves (validation bits per character against training time) in docs/images/lm_cells.png,
- every number in docs/results/lm_cells.json.

    .venv/bin/python scripts/lm_results.py --minutes 5          # about 4 x 6 minutes
    .venv/bin/python scripts/lm_results.py --minutes 0.2 --doc /tmp/r.md   # a quick check
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from lstm.data.text import CharVocab, read_text_file, shakespeare_text, split_text  # noqa: E402
from lstm.models.language_model import (  # noqa: E402
    LMConfig,
    build_language_model,
    count_parameters,
    transformer_matching,
)
from lstm.training import plot_curves, read_metrics  # noqa: E402

BEGIN, END = "<!-- lm-cells:begin -->", "<!-- lm-cells:end -->"


def matched_hidden(cell: str, target: int, vocab: int, embed: int, layers: int) -> int:
    """The state size of a ``cell`` model whose parameter count is closest to ``target``."""
    best, gap = 1, None
    for hidden in range(8, 2049, 8):
        cfg = LMConfig(vocab, cell, embed_size=embed, hidden_size=hidden, num_layers=layers)
        n = count_parameters(build_language_model(cfg))
        if gap is None or abs(n - target) < gap:
            best, gap = hidden, abs(n - target)
        if n > target:
            break
    return best


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=5.0, help="training time per model")
    p.add_argument("--cells", default="lstm,gru,rnn,transformer")
    p.add_argument("--hidden", type=int, default=384, help="the LSTM's state size")
    p.add_argument("--embed", type=int, default=64)
    p.add_argument("--layers", type=int, default=1, help="recurrent layers")
    p.add_argument("--transformer-layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--lr", type=float, default=6e-3, help="peak learning rate, recurrent cells")
    p.add_argument("--lr-transformer", type=float, default=1e-3)
    p.add_argument("--backend", default="auto", help="kernel backend of the recurrent cells")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--text", default=None, help="another text than Shakespeare (a quick check)")
    p.add_argument("--out", default="runs/lm_cells")
    p.add_argument("--doc", default="docs/results.md")
    p.add_argument("--images", default="docs/images")
    p.add_argument("--json", default="docs/results/lm_cells.json")
    args = p.parse_args()

    text = read_text_file(args.text) if args.text else shakespeare_text()
    train, _, _ = split_text(text)
    vocab = len(CharVocab.build(train))
    base = LMConfig(vocab, "lstm", embed_size=args.embed, hidden_size=args.hidden,
                    num_layers=args.layers)  # fmt: skip
    target = count_parameters(build_language_model(base))
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    plans = {}
    for cell in cells:
        if cell == "lstm":
            plans[cell] = {"hidden": args.hidden, "layers": args.layers, "lr": args.lr}
        elif cell in ("gru", "rnn"):
            h = matched_hidden(cell, target, vocab, args.embed, args.layers)
            plans[cell] = {"hidden": h, "layers": args.layers, "lr": args.lr}
        elif cell == "transformer":
            cfg = transformer_matching(
                target,
                LMConfig(
                    vocab,
                    "transformer",
                    num_layers=args.transformer_layers,
                    num_heads=args.heads,
                    context=args.seq_len,
                ),
            )
            plans[cell] = {"hidden": cfg.hidden_size, "layers": args.transformer_layers,
                           "lr": args.lr_transformer, "warmup": 100}  # fmt: skip
        else:
            p.error(f"--cells: unknown cell {cell!r}")

    out = Path(args.out)
    results = {}
    for cell, plan in plans.items():
        run_dir = out / cell
        cmd = [sys.executable, "-m", "lstm.cli", "train", "lm", "--cell", cell,
               "--hidden", str(plan["hidden"]), "--layers", str(plan["layers"]),
               "--embed", str(args.embed), "--batch", str(args.batch),
               "--seq-len", str(args.seq_len), "--lr", str(plan["lr"]), "--schedule", "cosine",
               "--warmup", str(plan.get("warmup", 20)), "--clip", "1.0",
               "--minutes", str(args.minutes), "--eval-every", "300", "--eval-chars", "30000",
               "--samples", "1",
               "--out", str(run_dir)]  # fmt: skip
        if cell == "transformer":
            cmd += ["--heads", str(args.heads), "--context", str(args.seq_len)]
        else:
            cmd += ["--backend", args.backend]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if args.text:
            cmd += ["--text", args.text]
        print(f"\n=== {cell}: {' '.join(cmd[2:])}", flush=True)
        t0 = time.time()
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        subprocess.run(cmd, check=True, env=env)
        summary = json.loads((run_dir / "results.json").read_text())
        summary["wall_seconds"] = time.time() - t0
        results[cell] = summary

    # The curves: validation (and training) bits per character against training time.
    images = Path(args.images)
    images.mkdir(parents=True, exist_ok=True)
    curves = {
        f"{cell} ({r['parameters'] / 1e6:.2f} M)": read_metrics(out / cell / "metrics.jsonl")
        for cell, r in results.items()
    }
    png = plot_curves(curves, images / "lm_cells.png", x="seconds", scale=1 / math.log(2),
                      ylabel="bits per character",
                      title=f"Shakespeare, {args.minutes:g} min each, equal parameters")  # fmt: skip

    machine = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": next(iter(results.values()))["threads"] if results else None,
        "backend": args.backend,
    }
    rows = []
    header = ("| model | state size / width | parameters | steps | epochs | train bpc (last) "
              "| validation bpc | **test bpc** |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
    for cell, r in results.items():
        m = r["model"]
        size = f"{m['num_layers']} x {m['hidden_size']}"
        rows.append(
            f"| {cell} | {size} | {r['parameters']:,} | {r['steps']:,} | {r['epochs']:.2f} | "
            f"{r['train_bpc_last']:.3f} | {r['val_bpc']:.3f} | **{r['test_bpc']:.3f}** |"
        )
    table = header + "\n" + "\n".join(rows)
    print("\n" + table)
    json_path = Path(args.json)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"machine": machine, "minutes": args.minutes,
                                     "results": results}, indent=1, ensure_ascii=False))  # fmt: skip

    rel = os.path.relpath(png, Path(args.doc).parent)
    data = (f"`{args.text}`" if args.text else "the concatenation of all `*_gut.txt` files of "
            "the `shakespeare` package (0.6) sorted by file name")  # fmt: skip
    section = f"""{BEGIN}
## Language models on Shakespeare: LSTM, GRU, RNN and a Transformer

Data: {data}, first 90% train, next 5% validation, last 5% test, by characters. Character level
({vocab} tokens with the unknown one). Each model trained for **{args.minutes:g} minutes** of
training time (evaluation excluded), one after the other on the same machine, with the same
batches ({args.batch} x {args.seq_len}), Adam, cosine schedule, gradient clipping at 1.0; the
recurrent models at parameter count matched to the LSTM's ({target:,}). Test bits per character
read the test part once with the state carried through 16 contiguous streams (the Transformer:
windows of {args.seq_len} with a stride of half of it).

Machine: {machine["cpu"]}, {machine["cores"]} cores, torch {machine["torch"]}, {machine["threads"]}
threads, recurrent backend `{args.backend}`.

{table}

![validation bits per character against training time]({rel})

Reproduce: `.venv/bin/python scripts/lm_results.py --minutes {args.minutes:g}`.
{END}
"""
    doc = Path(args.doc)
    doc.parent.mkdir(parents=True, exist_ok=True)
    old = doc.read_text() if doc.exists() else "# Results\n"
    if BEGIN in old and END in old:
        new = old[: old.index(BEGIN)] + section.strip() + old[old.index(END) + len(END) :]
    else:
        new = old.rstrip() + "\n\n" + section
    doc.write_text(new)
    print(f"\nwrote {doc}, {png}, {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
