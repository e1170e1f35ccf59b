"""Heuristic (and learned) policies on any task: solved rate, cell accuracy, mean NFE, tokens per forward, AUP, seconds,
per difficulty and model.

Commands (the figures in benchmarks/results/heuristics_*.json):
    .venv/bin/python benchmarks/heuristics.py --models sudoku9-small --difficulty 24,28,32,36 \
        --out benchmarks/results/heuristics_small.json
    .venv/bin/python benchmarks/heuristics.py --task sudoku4 --data ../shared/data/sudoku4x4_test_d1.csv \
        --out benchmarks/results/heuristics_small.json   # the d1 rows (appended with --append)
    .venv/bin/python benchmarks/heuristics.py --task sudoku4 --difficulty 4,5,6,8 \
        --policies random,left_to_right,entropy,margin,confidence,threshold:0.9,upo \
        --out benchmarks/results/heuristics_sudoku4.json   # then the same with --data ...d1.csv --append
    .venv/bin/python benchmarks/heuristics.py --models sudoku9-base --policies random,confidence,margin,threshold:0.9 \
        --difficulty 24,28,32,36 --out benchmarks/results/heuristics_base.json
    .venv/bin/python benchmarks/heuristics.py --task zebra --difficulty ... --out benchmarks/results/heuristics_zebra.json
    .venv/bin/python benchmarks/heuristics.py --task arithmetic --difficulty ... --out benchmarks/results/heuristics_arithmetic.json
The training-free baselines of issue 32 (KLASS, PC-Sampler, DUS) beside confidence / margin / threshold on every
built-in task, in benchmarks/results/baselines.json (each command appends its task's rows; the first without --append):
    B=confidence,margin,threshold:0.9,klass,klass:conf_threshold=0.6:kl_threshold=0.015,pc_sampler,dus
    .venv/bin/python benchmarks/heuristics.py --models sudoku9-small,sudoku9-base --difficulty 28 \
        --policies $B,pc_sampler:lambd=0 --out benchmarks/results/baselines.json
    .venv/bin/python benchmarks/heuristics.py --task sudoku4 --difficulty 4 --policies $B,pc_sampler:lambd=0 --append ...
    .venv/bin/python benchmarks/heuristics.py --task zebra --policies $B --append ...
    .venv/bin/python benchmarks/heuristics.py --task arithmetic --models arithmetic-carry --difficulty 16 --policies $B \
        --task-option propagate=0.8 --task-option max_digits=16 --append ...
    then the same four with --policies klass:conf_threshold=0.9:kl_threshold=0.001 (KLASS's Dream setting) --append
(the larger sudoku model gets four policies only in heuristics_base.json, to fit the 2-core machine's time budget). The sudoku
files were written by an earlier version of this script that took the d1 file as ``--d1`` in the same run.

``--policies`` takes every spec ``unmask eval`` takes (``upo``, a checkpoint directory, ...), so a learned policy
is added to a table with ``--append`` on the same puzzles. Examples are generated fresh (seeded: the same for every model and policy) at each difficulty, the task's
one knob (sudoku: clues, arithmetic: digits, ...), or read from ``--data``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import add_rows, add_task_option, command_line, start_results

from unmask.api import resolve_policy
from unmask.cli.main import task_options
from unmask.core.checkpoint import save_json
from unmask.evaluation.evaluate import evaluate, format_table
from unmask.models import load_model
from unmask.tasks import get_task

POLICIES = "random,left_to_right,entropy,margin,confidence,topk_softmax,threshold:0.9,klass,pc_sampler,dus"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="sudoku9")
    p.add_argument("--models", default="", help="comma-separated; default: the task's shipped model")
    p.add_argument("--difficulty", "--clues", default="", help="comma-separated difficulties; default: the task's")
    p.add_argument("--data", default=None, help="evaluate this file instead of generated examples")
    p.add_argument("--num", type=int, default=500)
    p.add_argument("--policies", default=POLICIES)
    p.add_argument("--out", default="benchmarks/results/heuristics.json")
    p.add_argument(
        "--append",
        action="store_true",
        help="add the rows to an existing --out file (replacing its rows of the same model, data and policy)",
    )
    add_task_option(p)
    args = p.parse_args()
    task = get_task(args.task, **task_options(args.task_option))
    models = args.models.split(",") if args.models else [task.default_model]
    command = command_line("benchmarks/heuristics.py", args)
    if args.data:
        datasets = [(f"file:{Path(args.data).name}", task.load(args.data))]
    else:
        datasets = []
        for d in [int(x) for x in args.difficulty.split(",")] if args.difficulty else [None]:
            t = time.perf_counter()
            datasets.append((f"generated:{task.difficulty_name}={d}", task.generate(args.num, seed=2026, difficulty=d)))
            print(f"generated {args.num} examples with {task.difficulty_name}={d} in {time.perf_counter() - t:.1f}s")

    out = Path(args.out)
    rows, provenance = start_results(out, args.append, command)
    for data, examples in datasets:
        for model_name in models:
            model = load_model(model_name)
            policies = [resolve_policy(s, model) for s in args.policies.split(",")]
            results = evaluate(task, model, examples, policies, seed=0, progress=False)
            print(f"\n{model_name} · {args.task} · {data}\n{format_table(results)}", flush=True)
            new = [{"model": model_name, "task": args.task, "data": data, **r.__dict__} for r in results]
            rows = add_rows(rows, new, ("model", "data", "policy"))
            save_json(out, {"provenance": provenance, "results": rows})  # saved after every block
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
