"""UPO Algorithm 2 (two-phase, features stored, policy-only updates) vs a naive single-phase update.

Command (the figures in benchmarks/results/algorithm2_memory.json):
    .venv/bin/python benchmarks/algorithm2_memory.py --model sudoku9-base --prompts 8 --generations 6 --clues 28

The naive variant is what one writes without Algorithm 2: roll out with autograd on, the MDM's
weights left trainable (as after from_pretrained), and backpropagate the REINFORCE loss through
every step's graph at once. Each variant runs in a fresh subprocess; peak memory is the process's
maximum resident set size (ru_maxrss) minus its size after loading the model.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from common import run_info

from unmask.core.checkpoint import save_json


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(variant: str, args: argparse.Namespace) -> dict:
    from unmask.engine.config import SamplingConfig
    from unmask.engine.loop import generate
    from unmask.training.grpo import GRPOConfig, GRPOTrainer, group_advantages

    torch.set_num_threads(args.threads)
    trainer = GRPOTrainer.from_config(
        GRPOConfig.from_flat(
            model=args.model,
            difficulty=[args.clues],
            prompts_per_step=args.prompts,
            num_generations=args.generations,
            eval_size=1,
            num_iterations=1,
        ),
        progress=False,
    )
    examples = trainer.prompts(0)
    base = peak_mb()
    start = time.perf_counter()
    if variant == "algorithm2":
        buf, _ = trainer.rollout(examples)
        rollout_s = time.perf_counter() - start
        trainer.update(buf)
    else:
        trainer.model.requires_grad_(True)
        group = [ex for ex in examples for _ in range(args.generations)]
        enc = trainer.task.encode(group, trainer.model)
        actor = trainer.policy.with_options(mode="sample")
        with torch.enable_grad():
            out = generate.__wrapped__(
                trainer.model, enc.input_ids, actor, SamplingConfig(), None, 0, trainer.gen, record=True
            )
            rollout_s = time.perf_counter() - start
            logp = torch.zeros(len(group))
            for rec in out.trajectory:
                obs = {k: v for k, v in rec.data.items() if k not in ("action", "old_log_prob")}
                logp = logp.index_add(0, rec.rows, trainer.policy.log_prob(obs, rec.data["action"]))
            rewards = torch.tensor(trainer.task.reward(trainer.task.decode(group, out.sequences, trainer.model), group))
            loss = -(group_advantages(rewards, args.generations) * logp).mean()
            loss.backward()
    total = time.perf_counter() - start
    return {
        "variant": variant,
        "peak_mb_over_model": peak_mb() - base,
        "rollout_s": rollout_s,
        "update_s": total - rollout_s,
        "total_s": total,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="sudoku9-base")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--generations", type=int, default=6)
    p.add_argument("--clues", type=int, default=28)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default="benchmarks/results/algorithm2_memory.json")
    args = p.parse_args()
    if args.variant:
        print(json.dumps(run(args.variant, args)))
        return
    rows = []
    for variant in ("algorithm2", "naive"):
        cmd = [sys.executable, __file__, "--variant", variant] + [
            f"--{k}={v}" for k, v in vars(args).items() if k not in ("variant", "out")
        ]
        rows.append(
            json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        )
        r = rows[-1]
        print(
            f"{variant:<11} peak +{r['peak_mb_over_model']:8.1f} MB   rollout {r['rollout_s']:6.2f}s   update {r['update_s']:6.2f}s"
        )
    save_json(
        args.out,
        {
            "provenance": [
                run_info(
                    "benchmarks/algorithm2_memory.py "
                    + " ".join(f"--{k} {v}" for k, v in vars(args).items() if k not in ("variant", "out"))
                )
            ],
            "results": rows,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
