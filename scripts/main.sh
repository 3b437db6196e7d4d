#!/usr/bin/env bash
# The main job: set up, then train a character-level LSTM on the complete works of Shakespeare for
# a bounded time, showing progress; then print held-out (test) bits per character with the state
# carried through the test text, generated samples, and where the checkpoint and plots are.
#
#   bash scripts/main.sh                 # ~5 minutes in all: 4.5 of training, then the report
#   MINUTES=1 bash scripts/main.sh       # a shorter run
#   bash scripts/main.sh --backend torch # extra options go to `lstm train lm` (see --help)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
MINUTES=${MINUTES:-4.5}
OUT=${OUT:-runs/main}
echo "[main] training a character-level LSTM on Shakespeare for $MINUTES minutes -> $OUT"
exec .venv/bin/lstm train lm \
  --cell lstm --hidden 384 --embed 64 --layers 1 \
  --batch 32 --seq-len 128 --lr 3e-3 --schedule cosine --warmup 20 --clip 1.0 \
  --minutes "$MINUTES" --eval-every 100 --checkpoint-every 200 \
  --out "$OUT" "$@"
