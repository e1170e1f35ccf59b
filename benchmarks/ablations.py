"""Training ablations on sudoku9: runs that share seed, prompts and GRPO settings and differ in one factor.

Grids:
  upo       UPO's four reference realisations at their paper betas (Table 1: confidence / softmax / top-k / none)
            and a beta sweep of the confidence reference (cf. UPO Table 3 / Fig. 4)
  parallel  Jazbec's ablations at alpha = 1: multiplicative vs additive speed reward (reward hacking),
            Bernoulli vs Plackett-Luce, expert steering with threshold:0.9
Each run's metrics.csv lands in benchmarks/results/<grid>/ for `benchmarks/curves.py --grid <grid>`
(table, JSON, curves). Commands (2 cores; UPO about 8 s per step, parallel policies about 2 s):
    .venv/bin/python benchmarks/ablations.py --grid upo --steps 30
    .venv/bin/python benchmarks/ablations.py --grid parallel --steps 100
    .venv/bin/python benchmarks/curves.py --grid upo
    .venv/bin/python benchmarks/curves.py --grid parallel
Status of the committed results: the upo grid ran confidence_beta0.05 and softmax_beta1e-4 to 30 steps and
topk_beta1e-3 to 22 (stopped for CPU time; its CSV was copied from the run directory); the rest of the upo grid
and the parallel grid have not been run.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from unmask.api import train_policy
from unmask.rl.grpo import GRPOConfig

RESULTS = Path(__file__).resolve().parent / "results"
COMMON = {
    "upo": dict(policy="upo", base_temperature=0.05, learning_rate=2e-3, num_generations=8, prompts_per_step=8,
                num_iterations=1, eval_every=10, eval_size=256),
    "parallel": dict(alpha=1.0, learning_rate=2e-3, num_generations=8, prompts_per_step=8, eval_every=25,
                     eval_size=256),
}
GRIDS: dict[str, dict[str, dict]] = {
    "upo": {
        "confidence_beta0.05": dict(reference="confidence", beta=0.05),
        "softmax_beta1e-4": dict(reference="softmax", beta=1e-4),
        "topk_beta1e-3": dict(reference="topk", beta=1e-3, base_temperature=None),  # the paper's random-init Top-K
        "none": dict(reference="none", beta=0.0),
        "confidence_beta0.005": dict(reference="confidence", beta=0.005),
        "confidence_beta0.5": dict(reference="confidence", beta=0.5),
    },
    "parallel": {
        "bernoulli_multiplicative": dict(policy="bernoulli"),
        "bernoulli_additive": dict(policy="bernoulli", reward_form="additive"),
        "plackett-luce": dict(policy="plackett-luce"),
        "bernoulli_steering": dict(policy="bernoulli", expert_steering="threshold:0.9"),
    },
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", choices=sorted(GRIDS), required=True)
    p.add_argument("--model", default="sudoku9-small")
    p.add_argument("--difficulty", default="28")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--runs", default="", help="comma-separated run names of the grid; default: all")
    p.add_argument("--output-dir", default="runs/ablations")
    args = p.parse_args()
    runs = args.runs.split(",") if args.runs else list(GRIDS[args.grid])
    for run in runs:
        if run not in GRIDS[args.grid]:
            raise SystemExit(f"unknown run {run!r} of grid {args.grid}; runs: {', '.join(GRIDS[args.grid])}")
        name = f"{args.model}_c{args.difficulty}_{run}"
        cfg = GRPOConfig(task="sudoku9", model=args.model, difficulty=args.difficulty, steps=args.steps,
                         output_dir=f"{args.output_dir}/{args.grid}/{name}",
                         **{**COMMON[args.grid], **GRIDS[args.grid][run]})
        print(f"== {args.grid}: {name}", flush=True)
        out = train_policy(cfg)
        (RESULTS / args.grid).mkdir(parents=True, exist_ok=True)
        shutil.copy(out / "metrics.csv", RESULTS / args.grid / f"{name}.csv")


if __name__ == "__main__":
    main()
