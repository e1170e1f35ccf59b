"""How a learned policy's unmasking order differs from max-confidence's on the same examples
(`unmask.evaluation.order.RevealOrder.agreement`): identical whole orders, positions revealed at the same step, the same
first step, and the examples only one of them solves. Prints a table, writes JSON.

Commands (benchmarks/results/order/agreement.json):
    .venv/bin/python benchmarks/order_agreement.py --task sudoku9 --difficulty 28 --num 200 --policies upo
    .venv/bin/python benchmarks/order_agreement.py --task zebra --num 200 --policies upo --append
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import add_task_option, command_line, run_info

from unmask.api import prepare_run, resolve_policy
from unmask.cli.main import task_options
from unmask.core.checkpoint import save_json
from unmask.evaluation.order import reveal_order

OUT = Path(__file__).resolve().parent / "results" / "order" / "agreement.json"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="sudoku9")
    p.add_argument("--model", default=None)
    p.add_argument("--difficulty", type=int, default=None)
    p.add_argument("--num", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baseline", default="confidence")
    p.add_argument("--policies", default="upo", help="comma-separated policy specs compared with --baseline")
    p.add_argument("--append", action="store_true", help="add the rows to an existing --out file")
    p.add_argument("--out", default=str(OUT))
    add_task_option(p)
    args = p.parse_args()
    task, mdm, examples, context = prepare_run(
        args.task, args.model, None, args.num, args.difficulty, None, args.seed, None, task_options(args.task_option)
    )
    base = reveal_order(task, mdm, examples, resolve_policy(args.baseline, mdm), seed=args.seed)
    out = Path(args.out)
    previous = json.loads(out.read_text()) if args.append and out.exists() else {"provenance": [], "rows": []}
    command = command_line("benchmarks/order_agreement.py", args)
    rows = previous["rows"]
    print(
        f"{'data':<44} {'policy':<16} {'identical':>9} {'same step':>9} {'same 1st':>9} "
        f"{'solved':>7} {'baseline':>8} {'one only':>8}"
    )
    for spec in args.policies.split(","):
        other = reveal_order(task, mdm, examples, resolve_policy(spec, mdm), seed=args.seed)
        row = {
            **context,
            "baseline": args.baseline,
            "policy": other.context["policy"],
            "solved": float(other.solved.mean()),
            "baseline_solved": float(base.solved.mean()),
            **base.agreement(other),
        }
        rows.append(row)
        print(
            f"{row['data']:<44} {row['policy']:<16} {row['identical_order']:>9.3f} {row['same_step']:>9.3f} "
            f"{row['same_first_step']:>9.3f} {row['solved']:>7.3f} {row['baseline_solved']:>8.3f} "
            f"{row['solved_by_one_only']:>8.3f}"
        )
    save_json(out, {"provenance": previous["provenance"] + [run_info(command)], "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
