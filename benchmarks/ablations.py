"""Training ablations: runs that share seed, prompts and GRPO settings and differ in one factor.

Grids:
  upo       UPO's four reference realisations at their paper betas (Table 1: confidence / softmax / top-k / none)
            and a beta sweep of the confidence reference (cf. UPO Table 3 / Fig. 4)
  parallel  Jazbec's ablations at alpha = 1: multiplicative vs additive speed reward (reward hacking),
            Bernoulli vs Plackett-Luce, expert steering with threshold:0.9
Each run's metrics.csv lands in benchmarks/results/<grid>/<model>_<difficulty>_<run>.csv for
`benchmarks/curves.py --grid <grid>` (table, JSON, curves). `--jobs N` runs N of them at once, one process
each with cpu_count / N threads (and the GPU, when there is one); `--max-minutes` gives every run a wall-time
budget (it stops with an evaluation and a resumable checkpoint). Commands:
    .venv/bin/python benchmarks/ablations.py --grid upo --steps 30                    # 2 cores: ~8 s per step
    .venv/bin/python benchmarks/ablations.py --grid parallel --steps 100              # 2 cores: ~2 s per step
    .venv/bin/python benchmarks/ablations.py --grid upo --steps 400 --max-minutes 7 --jobs 6   # a 16-core GPU box
    .venv/bin/python benchmarks/curves.py --grid upo
The committed results record the command and machine of their run in benchmarks/results/<grid>/README.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from unmask.api import train_policy
from unmask.training.grpo import GRPOConfig

RESULTS = Path(__file__).resolve().parent / "results"
COMMON = {
    "upo": dict(
        policy="upo",
        base_temperature=0.05,
        learning_rate=2e-3,
        num_generations=8,
        prompts_per_step=8,
        num_iterations=1,
        eval_steps=10,
        eval_size=256,
    ),
    "parallel": dict(
        alpha=1.0, learning_rate=2e-3, num_generations=8, prompts_per_step=8, eval_steps=25, eval_size=256
    ),
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
        "bernoulli_steering": dict(policy="bernoulli", expert_steering=["threshold:0.9"]),
    },
}


def run_one(args: argparse.Namespace, run: str) -> None:
    tag = (
        f"{args.model or args.task}_{args.difficulty}_{run}"
        if args.task != "sudoku9"
        else f"{args.model}_c{args.difficulty}_{run}"
    )  # sudoku keeps the c<clues> names of the committed CSVs
    cfg = GRPOConfig.from_flat(
        task=args.task,
        model=args.model,
        max_steps=args.steps,
        difficulty=[int(c) for c in args.difficulty.split(",")],
        output_dir=f"{args.output_dir}/{args.grid}/{tag}",
        **{**COMMON[args.grid], **GRIDS[args.grid][run]},
    )
    print(f"== {args.grid}: {tag}", flush=True)
    out = train_policy(cfg, progress=not args.quiet, max_minutes=args.max_minutes)
    (RESULTS / args.grid).mkdir(parents=True, exist_ok=True)
    shutil.copy(out / "metrics.csv", RESULTS / args.grid / f"{tag}.csv")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", choices=sorted(GRIDS), required=True)
    p.add_argument("--task", default="sudoku9")
    p.add_argument("--model", default="sudoku9-small", help="MDM name or path; '' = the task's shipped model")
    p.add_argument("--difficulty", default="28")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--max-minutes", type=float, default=None, help="wall-time budget of each run")
    p.add_argument("--runs", default="", help="comma-separated run names of the grid; default: all")
    p.add_argument("--jobs", type=int, default=1, help="runs at once, one process each")
    p.add_argument("--output-dir", default="runs/ablations")
    p.add_argument("--quiet", action="store_true", help="no progress bar (set for the runs of --jobs N)")
    args = p.parse_args()
    runs = args.runs.split(",") if args.runs else list(GRIDS[args.grid])
    for run in runs:
        if run not in GRIDS[args.grid]:
            raise SystemExit(f"unknown run {run!r} of grid {args.grid}; runs: {', '.join(GRIDS[args.grid])}")
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be >= 1, got {args.jobs}")
    if args.jobs == 1:
        for run in runs:
            run_one(args, run)
        return
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // args.jobs))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    common = [
        "--grid",
        args.grid,
        "--task",
        args.task,
        "--model",
        args.model,
        "--difficulty",
        args.difficulty,
        "--steps",
        str(args.steps),
        "--output-dir",
        args.output_dir,
        "--jobs",
        "1",
        "--quiet",
    ]
    if args.max_minutes is not None:
        common += ["--max-minutes", str(args.max_minutes)]

    def launch(run: str) -> int:
        return subprocess.run([sys.executable, __file__, *common, "--runs", run], env=env).returncode

    with ThreadPoolExecutor(args.jobs) as pool:
        codes = dict(zip(runs, pool.map(launch, runs)))
    failed = [run for run, code in codes.items() if code]
    if failed:
        raise SystemExit(f"failed runs: {', '.join(failed)}")


if __name__ == "__main__":
    main()
