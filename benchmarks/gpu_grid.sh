#!/usr/bin/env bash
# The GRPO runs of one 16-core GPU lease (benchmarks/results/gpu_grid/README.md has the measured outcome):
# the UPO reference/beta grid and the parallel grid on sudoku9-small (benchmarks/ablations.py), a larger-batch
# UPO run on sudoku9-small, and UPO / Bernoulli runs on zebra, all at once, each for MINUTES of wall time.
# Usage: benchmarks/gpu_grid.sh [MINUTES] [OUTDIR]   (PYTHONPATH=src or an installed unmask)
set -u
MINUTES=${1:-6.5}
OUT_DIR=${2:-runs/gpu_grid}
mkdir -p "$OUT_DIR"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
grid() { $PY benchmarks/ablations.py --grid "$1" --steps 2000 --max-minutes "$MINUTES" --jobs "$2" \
           --output-dir "$OUT_DIR/ablations" > "$OUT_DIR/$1.log" 2>&1; }
train() { local name=$1; shift
          $PY -m unmask train-policy --max-steps 2000 --max-minutes "$MINUTES" --output-dir "$OUT_DIR/$name" "$@" \
            > "$OUT_DIR/$name.log" 2>&1; }
grid upo 6 &
grid parallel 4 &
train upo-sudoku9-small-c28-P32 --task sudoku9 --model sudoku9-small --difficulty 28 --reference confidence \
  --beta 0.005 --base-temperature 0.05 --learning-rate 1e-3 --num-generations 8 --prompts-per-step 32 \
  --num-iterations 2 --eval-steps 10 --eval-size 256 &
train upo-zebra --task zebra --reference confidence --beta 0.05 --base-temperature 0.05 --learning-rate 2e-3 \
  --num-generations 8 --prompts-per-step 8 --num-iterations 1 --eval-steps 10 --eval-size 256 &
train bernoulli-zebra --task zebra --policy bernoulli --alpha 1 --learning-rate 2e-3 --num-generations 8 \
  --prompts-per-step 8 --eval-steps 25 --eval-size 256 &
wait
