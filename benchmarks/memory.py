"""Peak memory (RSS) of an evaluation against the number of puzzles, for every policy (issue 18 item 8).

Command (the figures in benchmarks/results/memory.json):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/memory.py --model sudoku9-small --difficulty 36 --nums 1000,2000,4000 --count-steps 3

The puzzles are generated once (the first n of the same 4,000). Each (policy, number of puzzles) runs `unmask.evaluation.evaluate.run_policy` in a fresh process (peak RSS is per process)
at batch size 256 and reports `ru_maxrss`. Count policies decode with `--count-steps` steps (their batch never
shrinks, so their step count does not change the shapes the model sees); threshold-style policies (threshold,
factor, eb) reveal a variable number per step, so their active batch shrinks step by step: the case that used to
grow (every new batch shape made the CPU kernels cache new primitives) and that the engine's batch buckets
(`unmask.engine.loop.bucket`) now bound. `--no-bucket` measures the engine without them, for the before/after.
A policy passes when its peak at the largest size is within 10% of its peak at the smallest.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import command_line, run_info

from unmask.core.checkpoint import save_json
from unmask.tasks import get_task

COUNT = ["random", "confidence", "margin", "entropy", "left_to_right", "topk_softmax", "origin"]
VARIABLE = ["threshold:0.9", "factor:1", "eb:0.5"]

CHILD = r"""
import json, resource, sys, time, torch
torch.set_num_threads(1)
import unmask.engine.loop as engine
args = json.loads(sys.argv[1])
if args["no_bucket"]:
    engine.bucket = lambda b, batch_size: b
from unmask.engine.config import SamplingConfig
from unmask.evaluation.evaluate import run_policy
from unmask.models import load_model
from unmask.policies import get_policy
from unmask.tasks import get_task
task, model = get_task(args["task"]), load_model(args["model"], device="cpu")
examples = task.load(args["data"])[: args["num"]]
start = time.perf_counter()
result, _ = run_policy(task, model, examples, get_policy(args["policy"]), SamplingConfig(steps=args["steps"]), batch_size=256)
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - start, "nfe": result.nfe, "solved_rate": result.solved_rate}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sudoku9", help="task name")
    parser.add_argument("--model", default="sudoku9-small", help="built-in model or checkpoint")
    parser.add_argument("--difficulty", type=int, default=36, help="clues per generated puzzle")
    parser.add_argument("--nums", default="1000,2000,4000", help="numbers of puzzles, comma-separated")
    parser.add_argument("--policies", default=",".join(VARIABLE + COUNT), help="policy specs, comma-separated")
    parser.add_argument("--count-steps", type=int, default=3, help="decoding steps of the count policies")
    parser.add_argument("--no-bucket", action="store_true", help="run the engine without its batch buckets")
    parser.add_argument("--out", default="benchmarks/results/memory.json", help="results JSON")
    args = parser.parse_args()
    nums = [int(n) for n in args.nums.split(",")]
    task = get_task(args.task)
    data = Path(tempfile.mkdtemp()) / "examples.csv"  # generated once; every run reads its first n
    task.save(task.generate(max(nums), seed=0, difficulty=args.difficulty), str(data))
    rows = []
    print(f"{'policy':<16} " + " ".join(f"{n:>9}" for n in nums) + f" {'growth':>8} {'flat':>5}")
    for spec in [s for s in args.policies.split(",") if s]:
        peaks = []
        for n in nums:
            child = {
                "task": args.task,
                "model": args.model,
                "data": str(data),
                "num": n,
                "policy": spec,
                "steps": None if spec in VARIABLE else args.count_steps,
                "no_bucket": args.no_bucket,
            }
            done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(child)], capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{spec} at {n} puzzles failed:\n{done.stderr[-2000:]}")
            measured = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append({"policy": spec, "num": n, **measured})
            peaks.append(measured["peak_rss_mb"])
        growth = peaks[-1] / peaks[0] - 1
        print(
            f"{spec:<16} "
            + " ".join(f"{p:>7.0f}MB" for p in peaks)
            + f" {100 * growth:>7.1f}% {'yes' if growth <= 0.1 else 'NO':>5}",
            flush=True,
        )
        save_json(args.out, {"provenance": [run_info(command_line("benchmarks/memory.py", args))], "results": rows})


if __name__ == "__main__":
    main()
