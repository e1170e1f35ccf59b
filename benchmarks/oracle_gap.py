"""The oracle gap: heuristics, learned policies and the ground-truth oracles on the same fresh examples.

For each task and difficulty: the one-per-step heuristics, the parallel ones, the shipped learned policies, any
extra policies given (``--extra NAME=SPEC``: the ablation's checkpoints), and the oracles (unmask.policies.oracle:
upper bounds that read the gold answer, never deployable). ``gap closed`` is (policy - best one-per-step
heuristic) / (one-per-step oracle - best one-per-step heuristic), in solved rate.

Commands (the figures in benchmarks/results/oracle_gap.json and docs/imitation.md; with --append a re-measured
label replaces its earlier rows):
    .venv/bin/python benchmarks/oracle_gap.py --task sudoku9 --difficulty 24,28,36 --num 300
    .venv/bin/python benchmarks/oracle_gap.py --task sudoku9 --difficulty 24,28,36 --num 300 --append --only-extra \
        --extra "upo+planner+imitation=runs/upo-imitation-sudoku9-small/imitation/best"
    .venv/bin/python benchmarks/oracle_gap.py --task sudoku9 --difficulty 24,28,36 --num 300 --append --only-extra \
        --extra-group shipped --extra "upo-dagger-sudoku9-small=upo-dagger-sudoku9-small" \
        --extra "upo-dagger-sudoku9-small, bound 0.01=upo-dagger-sudoku9-small:bound=0.01"
    #   and the same with --extra-group ablation for runs/upo-dagger-{mlp,deep}-sudoku9-small/best (recipes/ablations)
    .venv/bin/python benchmarks/oracle_gap.py --task zebra --num 300 --append
    .venv/bin/python benchmarks/oracle_gap.py --task zebra --num 300 --append --only-extra \
        --extra "upo+dagger (scorer)=runs/upo-dagger-zebra/best"
    .venv/bin/python benchmarks/oracle_gap.py --task arithmetic --models arithmetic-carry --difficulty 16 \
        --task-option max_digits=16 --task-option propagate=0.8 --num 2000 --append --extra-group shipped \
        --extra "upo-dagger-arithmetic-carry=upo-dagger-arithmetic-carry" \
        --extra "upo-dagger-arithmetic-carry, bound 0.01=upo-dagger-arithmetic-carry:bound=0.01"
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
from unmask.policies.resolve import SHIPPED_POLICIES
from unmask.tasks import get_task

ONE_PER_STEP = "confidence,margin,entropy"
PARALLEL = "threshold:0.9,eb,klass"
ORACLES = "oracle,gt_margin,oracle:parallel=1"


def groups(args: argparse.Namespace, model: str) -> list[tuple[str, str, str]]:
    """(group, label, spec) of every policy of the table for ``model``."""
    shipped = [kind for kind in ("upo", "bernoulli") if (SHIPPED_POLICIES / f"{kind}-{model}").is_dir()]
    extras = [(args.extra_group, label, spec) for label, _, spec in (e.partition("=") for e in args.extra)]
    if args.only_extra:
        return extras
    rows = [("heuristic", s, s) for s in args.heuristics.split(",") if s]
    rows += [("parallel heuristic", s, s) for s in args.parallel.split(",") if s]
    rows += [("shipped", s, s) for s in shipped]
    rows += extras
    rows += [("oracle", s, s) for s in ORACLES.split(",")]
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="sudoku9")
    p.add_argument("--models", default="", help="comma-separated; default: the task's shipped model")
    p.add_argument("--difficulty", default="", help="comma-separated difficulties; default: the task's")
    p.add_argument("--num", type=int, default=300)
    p.add_argument("--heuristics", default=ONE_PER_STEP, help="one-per-step heuristics (comma-separated specs)")
    p.add_argument("--parallel", default=PARALLEL, help="parallel heuristics (comma-separated specs)")
    p.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="LABEL=SPEC",
        help="a policy of the ablation (a checkpoint directory with options), repeatable",
    )
    p.add_argument(
        "--extra-group",
        default="ablation",
        choices=("ablation", "shipped"),
        help="the group of the --extra rows (shipped: a policy shipped under its own name)",
    )
    p.add_argument(
        "--only-extra",
        action="store_true",
        help="evaluate the --extra policies alone (with --append: rows beside an earlier run's)",
    )
    p.add_argument("--out", default="benchmarks/results/oracle_gap.json")
    p.add_argument(
        "--append",
        action="store_true",
        help="add the rows to an existing --out file (replacing its rows of the same task, model, data and label)",
    )
    add_task_option(p)
    args = p.parse_args()
    task = get_task(args.task, **task_options(args.task_option))
    models = args.models.split(",") if args.models else [task.default_model]
    command = command_line("benchmarks/oracle_gap.py", args)
    out = Path(args.out)
    rows, provenance = start_results(out, args.append, command)
    for d in [int(x) for x in args.difficulty.split(",")] if args.difficulty else [None]:
        t = time.perf_counter()
        examples = task.generate(args.num, seed=2027, difficulty=d)
        data = f"generated:{task.difficulty_name}={d}"
        print(f"generated {args.num} examples with {task.difficulty_name}={d} in {time.perf_counter() - t:.1f}s")
        for model_name in models:
            model = load_model(model_name)
            table = groups(args, model_name)
            policies = [resolve_policy(spec, model) for _, _, spec in table]
            results = evaluate(task, model, examples, policies, seed=0, progress=False)
            print(f"\n{model_name} · {args.task} · {data}\n{format_table(results)}", flush=True)
            new = [
                {"model": model_name, "task": args.task, "data": data, "group": group, "label": label, **r.__dict__}
                for (group, label, _), r in zip(table, results)
            ]
            rows = add_rows(rows, new, ("task", "model", "data", "label"))
            save_json(out, {"provenance": provenance, "results": rows})  # saved after every block
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
