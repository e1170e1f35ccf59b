"""Size and per-step cost of a policy against one MDM forward (Jazbec §3.2; UPO's g_phi with ``--policy``).

Commands (the figures in benchmarks/results/policy_cost.json, benchmarks/results/upo/policy_cost_coupling.json and
benchmarks/results/parallel/policy_cost_coupling.json):
    .venv/bin/python benchmarks/policy_cost.py --models sudoku9-small,sudoku9-base --batch-sizes 1,64 --forwards 300
    .venv/bin/python benchmarks/policy_cost.py --policy upo --batch-sizes 1,64 --forwards 300 \
        --out benchmarks/results/upo/policy_cost_coupling.json
    .venv/bin/python benchmarks/policy_cost.py --policy bernoulli --batch-sizes 1,64 --forwards 300 \
        --out benchmarks/results/parallel/policy_cost_coupling.json
    .venv/bin/python benchmarks/policy_cost.py --models sudoku9-small --policy runs/upo-imitation-sudoku9-small/imitation/best \
        --batch-sizes 1,64 --forwards 200 --out benchmarks/results/upo/policy_cost_planner.json   # the planner
    .venv/bin/python benchmarks/policy_cost.py --models sudoku9-small --policy upo --batch-sizes 1,64 --forwards 200 \
        --out benchmarks/results/upo/policy_cost_shipped.json   # the same, minutes apart, without the planner
    .venv/bin/python benchmarks/policy_cost.py --models sudoku9-small --policy upo-dagger-sudoku9-small --batch-sizes 1,64 \
        --forwards 200 --out benchmarks/results/upo/policy_cost_dagger.json   # the shipped two-layer clique planner

One CPU thread. Each model decodes fresh 9x9 puzzles (30 clues) with an untrained Bernoulli policy (default
size, sampled) until it has run at least --forwards MDM forwards; a forward hook times every MDM forward and a
wrapper times every policy step (observation, network, Bernoulli draw, fallback) on the same rows.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import run_info

from unmask.api import resolve_policy
from unmask.core.checkpoint import save_json
from unmask.engine.loop import generate
from unmask.engine.policy import Policy
from unmask.engine.state import StepState
from unmask.models import load_model
from unmask.policies.learned import LearnedPolicy
from unmask.tasks import get_task


class TimedPolicy(Policy):
    """Accumulates the wall time of the wrapped policy's steps."""

    def __init__(self, inner: Policy) -> None:
        self.inner, self.name, self.seconds, self.calls = inner, inner.name, 0.0, 0
        self.capabilities = inner.capabilities

    def act(self, state: StepState, record: bool = False):
        start = time.perf_counter()
        out = self.inner.act(state, record)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def measure(model_name: str, batch_size: int, forwards: int, spec: str = "") -> dict:
    task, model = get_task("sudoku9"), load_model(model_name)
    policy = TimedPolicy(resolve_policy(spec, model) if spec else LearnedPolicy.for_model("bernoulli", model))
    clock = {"start": 0.0, "seconds": 0.0, "calls": 0}

    def before(*_):
        clock["start"] = time.perf_counter()

    def after(*_):
        clock["seconds"] += time.perf_counter() - clock["start"]
        clock["calls"] += 1

    model.register_forward_pre_hook(before)
    model.register_forward_hook(after)
    generator = torch.Generator().manual_seed(0)
    x = task.encode(task.generate(batch_size, seed=0, difficulty=30), model).input_ids
    generate(model, x, policy.inner, generator=generator)  # warm-up
    policy.seconds = policy.calls = clock["seconds"] = clock["calls"] = 0
    seed = 1
    while clock["calls"] < forwards:
        x = task.encode(task.generate(batch_size, seed=seed, difficulty=30), model).input_ids
        generate(model, x, policy, generator=generator)
        seed += 1
    mdm_params = sum(p.numel() for p in model.parameters())
    policy_params = sum(p.numel() for p in policy.inner.parameters())
    forward_ms, policy_ms = 1e3 * clock["seconds"] / clock["calls"], 1e3 * policy.seconds / policy.calls
    return {
        "model": model_name,
        "policy": policy.name,
        "batch_size": batch_size,
        "mdm_parameters": mdm_params,
        "policy_parameters": policy_params,
        "parameter_ratio": policy_params / mdm_params,
        "forwards": clock["calls"],
        "forward_ms": forward_ms,
        "policy_step_ms": policy_ms,
        "step_cost_ratio": policy_ms / forward_ms,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="sudoku9-small,sudoku9-base")
    p.add_argument("--batch-sizes", default="1,64")
    p.add_argument("--forwards", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--policy", default="", help="a policy spec; default: an untrained Bernoulli policy")
    p.add_argument("--out", default="benchmarks/results/policy_cost.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    print(
        f"{'model':<15} {'batch':>5} {'MDM params':>11} {'policy':>8} {'ratio':>7} {'forward ms':>11} {'policy ms':>10} {'cost':>7}"
    )
    for name in args.models.split(","):
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            r = measure(name, batch_size, args.forwards, args.policy)
            rows.append(r)
            print(
                f"{name:<15} {batch_size:>5} {r['mdm_parameters']:>11,} {r['policy_parameters']:>8,} "
                f"{100 * r['parameter_ratio']:>6.1f}% {r['forward_ms']:>11.3f} {r['policy_step_ms']:>10.3f} "
                f"{100 * r['step_cost_ratio']:>6.1f}%"
            )
    save_json(
        args.out,
        {
            "provenance": [
                run_info(
                    "benchmarks/policy_cost.py "
                    + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())
                )
            ],
            "results": rows,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
