"""Extraction + verification accuracy of the math reward on the reference solutions themselves.

Each reference solution is scored as if a model had written it, against the gold
answer the task reads from the same record. Two variants per data set:

- ``full``: the whole reference solution (GSM8K ends in ``#### N``; MATH500 holds
  ``\\boxed{...}`` and ends in "The answer is: ...");
- ``worked``: the solution with that final-answer line removed, so GSM8K is
  judged on its last number and MATH500 on its ``\\boxed{}`` against the
  "The answer is:" gold (two renderings of one answer);
- ``full, math-verify only``: as ``full`` but always through math-verify's parser
  and comparison (the reward skips it when the strings are identical), which
  shows the gold answers themselves parse.

Command (from the repository root):

    .venv/bin/python benchmarks/math_reward_check.py --data-dir ../shared/data

Writes ``benchmarks/results/math_reward_check.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
from common import run_info

from unmask.tasks import get_task
from unmask.tasks.math_reward import extract_answer, symbolic_equal

FINAL_LINE = {"gsm8k": re.compile(r"\n?####[^\n]*\s*$"), "math500": re.compile(r"The answer is:.*$", re.DOTALL)}


def check(task_name: str, path: Path) -> dict:
    task = get_task(task_name)
    examples = task.load(str(path))
    rows = {}
    for variant in ("full", "worked", "full, math-verify only"):
        completions = [
            FINAL_LINE[task_name].sub("", ex.solution) if variant == "worked" else ex.solution for ex in examples
        ]
        start = time.perf_counter()
        if variant == "full, math-verify only":
            answers = [extract_answer(c) for c in completions]
            solved = np.array([a is not None and symbolic_equal(ex.answer, a) for ex, a in zip(examples, answers)])
        else:
            scores = task.score(examples, completions)
            answers, solved = scores.extra["answers"], scores.solved
        seconds = time.perf_counter() - start
        misses = [
            {"index": i, "gold": ex.answer, "extracted": answers[i]}
            for i, (ex, ok) in enumerate(zip(examples, solved))
            if not ok
        ]
        rows[variant] = {
            "n": len(examples),
            "correct": int(solved.sum()),
            "accuracy": float(solved.mean()),
            "seconds": round(seconds, 2),
            "misses": misses,
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--out", default="benchmarks/results/math_reward_check.json")
    args = parser.parse_args()
    data = Path(args.data_dir)
    results = {
        "gsm8k": check("gsm8k", data / "gsm8k_test.jsonl"),
        "math500": check("math500", data / "math500_test.jsonl"),
    }
    print(f"{'data set':<10} {'variant':<24} {'correct':>9} {'accuracy':>9} {'seconds':>8}")
    for name, variants in results.items():
        for variant, r in variants.items():
            print(
                f"{name:<10} {variant:<24} {r['correct']:>4}/{r['n']:<4} {100 * r['accuracy']:>8.2f}% {r['seconds']:>8.2f}"
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"provenance": [run_info(" ".join(sys.argv))], **results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
