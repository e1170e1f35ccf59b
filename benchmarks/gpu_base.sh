#!/usr/bin/env bash
# The GRPO runs of the second GPU lease (benchmarks/results/upo/README.md has the measured outcome): UPO on the
# other 9x9 MDM, sudoku9-base, at 28 clues with three settings at once, each for MINUTES of wall time, beside the
# supervised correctness probe on sudoku9-small (benchmarks/correctness_probe.py).
# Usage: benchmarks/gpu_base.sh [MINUTES] [OUTDIR]   (PYTHONPATH=src or an installed unmask)
set -u
MINUTES=${1:-5.5}
OUT_DIR=${2:-runs/gpu_base}
mkdir -p "$OUT_DIR"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
train() { local name=$1; shift
          $PY -m unmask train-policy --task sudoku9 --model sudoku9-base --difficulty 28 --max-steps 2000 \
            --max-minutes "$MINUTES" --eval-steps 10 --eval-size 256 --output-dir "$OUT_DIR/$name" "$@" \
            > "$OUT_DIR/$name.log" 2>&1; }
common="--base-temperature 0.05 --learning-rate 1e-3 --num-generations 8 --prompts-per-step 32 --num-iterations 2"
train upo-base-conf $common --reference confidence --beta 0.005 &
train upo-base-softmax $common --reference softmax --beta 1e-4 &
train upo-base-remax $common --reference confidence --beta 0.005 --baseline greedy --reward-form multiplicative --alpha 0 &
$PY benchmarks/correctness_probe.py --train 3000 --epochs 4 --out "$OUT_DIR/correctness_probe.json" \
  > "$OUT_DIR/correctness_probe.log" 2>&1 &
wait
