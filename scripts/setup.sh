#!/usr/bin/env bash
# Creates .venv and installs the package with everything the tests and the main job use.
# Idempotent: reinstalls only when pyproject.toml or constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.lstm-install-stamp
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing lstm and its dependencies into .venv (torch pinned by constraints.txt)"
  # pip's log goes to a file (the machine's extra indexes print a warning per package); shown on failure.
  if ! .venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]" >.venv/pip.log 2>&1; then
    grep -v "^WARNING: Location" .venv/pip.log
    exit 1
  fi
  .venv/bin/python -c "import lstm, torch; print('[setup] lstm', lstm.__version__, 'torch', torch.__version__)"
  echo "$want" > "$stamp"
fi
