"""Engine throughput (puzzles/s) and overhead versus the bare MDM forwards on the same batches.

Command (the figures in benchmarks/results/engine_overhead.json):
    .venv/bin/python benchmarks/engine_overhead.py --model sudoku9-base --clues 28 --num 512 --batch-size 256

Overhead = (engine wall time - time inside MDM forwards) / time inside MDM forwards, per policy.
The `upo` row is an untrained UPO policy g_phi sized as `train-policy` builds it (its cost does not
depend on its weights): its overhead is the learned policy's cost relative to the MDM.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import run_info

from unmask.core.checkpoint import save_json
from unmask.engine.config import SamplingConfig
from unmask.engine.loop import generate
from unmask.models import load_model
from unmask.models.base import MaskedDiffusionModel
from unmask.policies import get_policy
from unmask.policies.learned import LearnedPolicy
from unmask.tasks import get_task
from unmask.training.grpo import GRPOConfig


class TimedMDM(MaskedDiffusionModel):
    """Wraps an MDM and accumulates the wall time spent in its forward."""

    def __init__(self, inner: MaskedDiffusionModel) -> None:
        super().__init__()
        self.inner = inner
        self.mask_id, self.vocab_size, self.hidden_size, self.name = (
            inner.mask_id,
            inner.vocab_size,
            inner.hidden_size,
            inner.name,
        )
        self.seconds = 0.0

    def forward(self, input_ids, attention_mask=None, output_hidden_states=False):
        t = time.perf_counter()
        out = self.inner(input_ids, attention_mask, output_hidden_states)
        self.seconds += time.perf_counter() - t
        return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="sudoku9-base")
    p.add_argument("--clues", type=int, default=28)
    p.add_argument("--num", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--policies", default="random,confidence,margin,entropy,topk_softmax,threshold:0.9,upo")
    p.add_argument("--out", default="benchmarks/results/engine_overhead.json")
    args = p.parse_args()
    task = get_task("sudoku9")
    model = TimedMDM(load_model(args.model))
    examples = task.generate(args.num, seed=7, difficulty=args.clues)
    enc = task.encode(examples, model)
    rows = []
    print(f"{'policy':<34} {'puzzles/s':>10} {'engine s':>9} {'forward s':>10} {'overhead':>9}")
    upo = LearnedPolicy.for_model("upo", model, d_model=GRPOConfig().policy.d_model).eval()
    print(
        f"UPO policy: {sum(p.numel() for p in upo.parameters()):,} parameters; MDM: "
        f"{sum(p.numel() for p in model.parameters()):,}"
    )
    for spec in args.policies.split(","):
        policy = upo if spec == "upo" else get_policy(spec)
        generate(model, enc.input_ids[:8], policy)  # warm-up
        model.seconds = 0.0
        start = time.perf_counter()
        for i in range(0, args.num, args.batch_size):
            generate(
                model,
                enc.input_ids[i : i + args.batch_size],
                policy,
                SamplingConfig(),
                generator=torch.Generator().manual_seed(0),
            )
        total = time.perf_counter() - start
        row = {
            "policy": policy.name,
            "puzzles_per_s": args.num / total,
            "engine_s": total,
            "forward_s": model.seconds,
            "overhead": (total - model.seconds) / model.seconds,
        }
        rows.append(row)
        print(
            f"{row['policy']:<34} {row['puzzles_per_s']:>10.1f} {total:>9.2f} {model.seconds:>10.2f} {100 * row['overhead']:>8.1f}%"
        )
    save_json(
        args.out,
        {
            "provenance": [
                run_info(
                    "benchmarks/engine_overhead.py "
                    + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())
                )
            ],
            "results": rows,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
