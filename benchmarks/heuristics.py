"""Heuristic policies on sudoku: solved rate, cell accuracy, mean NFE, seconds.

Commands (the figures in benchmarks/results/heuristics_*.json):
    .venv/bin/python benchmarks/heuristics.py --models sudoku9-small --d1 ../shared/data/sudoku4x4_test_d1.csv \
        --out benchmarks/results/heuristics_small.json
    .venv/bin/python benchmarks/heuristics.py --models sudoku9-base --policies random,confidence,margin,threshold:0.9 \
        --out benchmarks/results/heuristics_base.json
(the larger model gets four policies only, to fit the 2-core machine's time budget).

Puzzles are generated fresh with unique solutions (seeded: the same for every model and policy).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from unmask.checkpoint import save_json
from unmask.evaluate import evaluate, format_table
from unmask.models import load_model
from unmask.policies import get_policy
from unmask.tasks import get_task

POLICIES = "random,left_to_right,entropy,margin,confidence,topk_softmax,threshold:0.9"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="sudoku9-small,sudoku9-base")
    p.add_argument("--clues", default="24,28,32,36")
    p.add_argument("--num", type=int, default=500)
    p.add_argument("--policies", default=POLICIES)
    p.add_argument("--d1", default=None, help="path of the d1 4x4 CSV (evaluated with the sudoku4 model)")
    p.add_argument("--out", default="benchmarks/results/heuristics.json")
    args = p.parse_args()
    policies = [get_policy(s) for s in args.policies.split(",")]
    command = "benchmarks/heuristics.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v)
    rows: list[dict] = []
    runs = []
    task9 = get_task("sudoku9")
    for clues in [int(c) for c in args.clues.split(",")]:
        t = time.perf_counter()
        examples = task9.generate(args.num, seed=2026, clues=clues)
        print(f"generated {args.num} unique puzzles with {clues} clues in {time.perf_counter() - t:.1f}s")
        runs += [(name, task9, examples, f"generated:clues={clues}") for name in args.models.split(",")]
    if args.d1:
        task4 = get_task("sudoku4")
        runs.append(("sudoku4", task4, task4.load(args.d1), f"d1:{Path(args.d1).name}"))

    for model_name, task, examples, data in runs:
        model = load_model(model_name)
        results = evaluate(task, model, examples, policies, seed=0, progress=False)
        print(f"\n{model_name} · {data}\n{format_table(results)}", flush=True)
        rows += [{"model": model_name, "data": data, **r.__dict__} for r in results]
        save_json(args.out, {"command": command, "torch_threads": torch.get_num_threads(),  # saved after every block
                             "machine": platform.machine(), "results": rows})
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
