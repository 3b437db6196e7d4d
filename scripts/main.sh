#!/usr/bin/env bash
# The main job: set up, then train a character-level LSTM on the complete works of Shakespeare for
# a bounded time, showing progress; then print held-out (test) bits per character with the state
# carried through the test text, generated samples, and where the checkpoint and plots are.
#
#   bash scripts/main.sh                 # 5 minutes of training, then ~0.5 minute of report
#   MINUTES=1 bash scripts/main.sh       # a shorter run
#   THREADS=2 bash scripts/main.sh       # torch threads (default 1, see below)
#   bash scripts/main.sh --backend torch # extra options go to `lstm train lm` (see its --help)
#
# The recipe for a short budget: many small updates (batches of 16 x 64 characters, state carried
# across them) at a high peak learning rate with a cosine decay to zero over the time budget.
# One thread by default: on a 2-core machine shared with other work, a second torch thread waits
# on a busy core at every parallel region (measured 10-25x slower steps); on an idle machine try 2.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
MINUTES=${MINUTES:-5}
THREADS=${THREADS:-1}
OUT=${OUT:-runs/main}
echo "[main] training a character-level LSTM on Shakespeare for $MINUTES minutes -> $OUT"
exec .venv/bin/lstm train lm \
  --cell lstm --hidden 384 --embed 64 --layers 1 \
  --batch 16 --seq-len 64 --lr 6e-3 --schedule cosine --warmup 20 --clip 1.0 \
  --minutes "$MINUTES" --threads "$THREADS" \
  --eval-every 300 --eval-chars 30000 --checkpoint-every 500 \
  --out "$OUT" "$@"
