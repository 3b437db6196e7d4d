"""What the results scripts share (sentiment_results.py, forecast_results.py): the repository
root, running one `lstm ...` command unless its run already holds a report, writing a table's
markdown and JSON, and their command line (--only, --threads, --table, --out)."""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_unless_done(argv: list[str], out: str) -> None:
    """``argv`` (``["lstm", ...]``, writing into ``out`` under the repository root) with this
    interpreter's ``lstm`` console script, printed first; skipped when ``out/report.json``
    exists (delete the run to redo it)."""
    if (ROOT / out / "report.json").exists():
        return
    print("$", " ".join(argv), flush=True)
    lstm = str(Path(sys.executable).with_name("lstm"))
    subprocess.run([lstm, *argv[1:]], cwd=ROOT, check=True)


def write_results(out: Path, name: str, results: dict, lines: list[str], key: str) -> None:
    """``out/<name>.json`` (``results`` under ``key``, with the machine) and ``out/<name>.md``
    (``lines``), and the table on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()}, {platform.processor() or 'cpu'}"
    (out / f"{name}.json").write_text(
        json.dumps({"machine": machine, key: results}, indent=1) + "\n"
    )
    (out / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


def arguments(description: str, rows: Iterable[str]) -> argparse.Namespace:
    """The results scripts' command line."""
    parser = argparse.ArgumentParser(description=description.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(rows), help="run these rows only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", action="store_true", help="write the table; run nothing")
    parser.add_argument("--out", default="docs/results")
    return parser.parse_args()
