"""Before / after: the rows of a committed results file against a re-run of its commands (issue 17: "a re-run of the
heuristics and shipped-policy benchmarks gives the same figures").

Rows are matched by (model, data, policy); each gets the solved rate and mean NFE of both runs and whether
they are equal. Deterministic policies must agree exactly; stochastic ones draw from per-example streams since
issue 18, so a file written before that may differ for them (the table says which are stochastic).

Command (the figures in benchmarks/results/rerun/compare.json):
    .venv/bin/python benchmarks/rerun_compare.py \\
        benchmarks/results/heuristics_zebra.json=benchmarks/results/rerun/heuristics_zebra.json ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import run_info

from unmask.api import resolve_policy
from unmask.core.checkpoint import save_json
from unmask.models import load_model


def stochastic(spec: str, model: str, models: dict) -> bool:
    """Whether the decode of ``spec`` on ``model`` draws random numbers: the policy's own ``stochastic``."""
    if model not in models:
        models[model] = load_model(model, device="cpu")
    return bool(resolve_policy(spec, models[model]).capabilities.stochastic)


def key(row: dict) -> tuple:
    return row["model"], row["data"], row["policy"]  # the oldest files do not record the task


def compare(before: Path, after: Path, models: dict) -> list[dict]:
    old = {key(r): r for r in json.loads(before.read_text())["results"]}
    rows = []
    for r in json.loads(after.read_text())["results"]:
        o = old.get(key(r))
        if o is None:
            continue
        rows.append(
            {
                "file": before.name,
                "model": r["model"],
                "data": r["data"],
                "policy": r["policy"],
                "stochastic": stochastic(r["policy"], r["model"], models),
                "solved_before": o["solved_rate"],
                "solved_after": r["solved_rate"],
                "nfe_before": o["nfe"],
                "nfe_after": r["nfe"],
                "equal": o["solved_rate"] == r["solved_rate"] and o["nfe"] == r["nfe"],
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pairs", nargs="+", metavar="BEFORE=AFTER", help="a committed results file and its re-run")
    p.add_argument("--out", default="benchmarks/results/rerun/compare.json")
    args = p.parse_args()
    rows, models = [], {}
    for pair in args.pairs:
        before, sep, after = pair.partition("=")
        if not sep:
            p.error(f"{pair!r}: give BEFORE=AFTER")
        rows += compare(Path(before), Path(after), models)
    print(
        f"{'file':<34} {'data':<28} {'policy':<44} {'solved before':>13} {'after':>7} {'NFE before':>10} "
        f"{'after':>7}  equal"
    )
    for r in rows:
        print(
            f"{r['file']:<34} {r['data']:<28} {r['policy'] + (' *' if r['stochastic'] else ''):<44} "
            f"{r['solved_before']:>13.3f} {r['solved_after']:>7.3f} {r['nfe_before']:>10.2f} {r['nfe_after']:>7.2f}"
            f"  {'yes' if r['equal'] else 'NO'}"
        )
    deterministic = [r for r in rows if not r["stochastic"]]
    print(
        f"deterministic rows equal: {sum(r['equal'] for r in deterministic)} / {len(deterministic)}; "
        f"stochastic (*) rows equal: {sum(r['equal'] for r in rows if r['stochastic'])} / "
        f"{len(rows) - len(deterministic)}"
    )
    save_json(
        args.out, {"provenance": [run_info(" ".join(["benchmarks/rerun_compare.py", *sys.argv[1:]]))], "results": rows}
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
