"""Is there a signal in the MDM's features, beyond its own confidence, that says which position is safe to reveal?

A supervised probe for the UPO headline (not part of the library): g_phi (UPO's scorer, started as
log(confidence)/tau0, :class:`unmask.policies.scorers.UPOScorer`) is trained to put its probability on the
masked positions whose argmax token is *correct*, maximising log sum_{i correct} g_phi(i | x_n) (a myopic,
dense version of the solved reward), over the states of sampled and greedy max-confidence rollouts up to their
first wrong reveal. Greedy decoding with it is then compared with max-confidence on fresh held-out puzzles
after every epoch. Prints one line per epoch and writes JSON.

Command (benchmarks/results/upo/correctness_probe.json; a GPU makes the rollouts fast, 2 CPU cores take ~30 min.
The ``--prob-input full`` variant, g_phi also reading every token's probability, decoded no better (44.0% against
46.0% on 300 puzzles, benchmarks/results/upo/README.md) and was removed from the library):
    python benchmarks/correctness_probe.py --train 3000 --epochs 4
"""

from __future__ import annotations

import argparse
import time

import torch
from common import command_line, run_info

from unmask.core.checkpoint import save_json
from unmask.engine.config import SamplingConfig
from unmask.engine.loop import generate
from unmask.evaluation.evaluate import evaluate
from unmask.models import load_model
from unmask.policies.learned import LearnedPolicy
from unmask.tasks import get_task

KEEP = ("hidden", "top_probs", "confidence", "allowed")


class TokenRecordingUPO(LearnedPolicy):
    """g_phi whose recorded observations also hold the token each position would receive."""

    def observe(self, state):
        return {**super().observe(state), "tokens": state.tokens}


def solved_rate(task, model, policy, examples) -> float:
    """Greedy solved rate of ``policy`` (the library's :func:`unmask.evaluation.evaluate.evaluate`)."""
    return evaluate(task, model, examples, [policy.eval()], progress=False)[0].solved_rate


def collect(task, model, policy, examples, seed: int, batch_size: int = 100) -> tuple[dict, torch.Tensor]:
    """Observations and per-position 'argmax is correct' labels of every state up to the first wrong reveal."""
    obs, labels = [], []
    for i in range(0, len(examples), batch_size):
        batch = examples[i : i + batch_size]
        target = task.targets(batch, model).to(model.device)
        g = torch.Generator(device=model.device).manual_seed(seed + i)
        out = generate(model, task.encode(batch, model).input_ids, policy, SamplingConfig(), generator=g, record=True)
        alive = torch.ones(len(batch), dtype=torch.bool, device=model.device)
        for rec in out.trajectory:
            correct = rec.data["tokens"] == target[rec.rows]
            keep = alive[rec.rows]
            obs.append({k: rec.data[k][keep].cpu() for k in KEEP})
            labels.append(correct[keep].cpu())
            wrong = ~correct.gather(1, rec.data["action"][:, :1]).squeeze(1)
            alive[rec.rows[wrong]] = False
    return {k: torch.cat([o[k] for o in obs]) for k in obs[0]}, torch.cat(labels)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="sudoku9-small")
    p.add_argument("--clues", type=int, default=28)
    p.add_argument("--train", type=int, default=3000, help="training puzzles (one sampled + one greedy rollout each)")
    p.add_argument("--held-out", type=int, default=500)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--save", default=None, help="write the trained g_phi here (a policy checkpoint)")
    p.add_argument("--out", default="benchmarks/results/upo/correctness_probe.json")
    args = p.parse_args()
    torch.manual_seed(0)
    task, model = get_task("sudoku9"), load_model(args.model)
    policy = TokenRecordingUPO.for_model("upo", model).to(model.device)
    train = task.generate(args.train, seed=777, difficulty=args.clues)
    held = task.generate(args.held_out, seed=2026, difficulty=args.clues)
    rows = [{"epoch": 0, "loss": None, "held_out_solved": solved_rate(task, model, policy, held)}]
    print(f"max-confidence (the untrained g_phi): {rows[0]['held_out_solved']:.3f} solved", flush=True)
    t = time.perf_counter()
    parts = []
    for seed, mode in ((1, "sample"), (2, "greedy")):
        parts.append(collect(task, model, policy.with_options(mode=mode), train, seed))
    obs = {k: torch.cat([o[k] for o, _ in parts]) for k in parts[0][0]}
    labels = torch.cat([y for _, y in parts])
    print(f"{len(labels)} states in {time.perf_counter() - t:.0f}s", flush=True)
    opt = torch.optim.AdamW(policy.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.1)
    for epoch in range(1, args.epochs + 1):
        policy.train()
        total, batches = 0.0, 0
        for idx in torch.randperm(len(labels)).split(256):
            o = {k: v[idx].to(model.device) for k, v in obs.items()}
            good = o["allowed"] & labels[idx].to(model.device)
            log_p = policy.scores(o).log_softmax(-1).masked_fill(~good, float("-inf")).logsumexp(-1)
            loss = -log_p[good.any(1)].mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            opt.step()
            total, batches = total + loss.item(), batches + 1
        rows.append(
            {"epoch": epoch, "loss": total / batches, "held_out_solved": solved_rate(task, model, policy, held)}
        )
        print(
            f"epoch {epoch}  loss {rows[-1]['loss']:.4f}  held-out solved {rows[-1]['held_out_solved']:.3f}", flush=True
        )
    save_json(
        args.out,
        {
            "provenance": [run_info(command_line("benchmarks/correctness_probe.py", args))],
            "states": len(labels),
            "device": str(model.device),
            "epochs": rows,
        },
    )
    print(f"wrote {args.out}")
    if args.save:
        policy.save(args.save, {"mdm": args.model, "task": "sudoku9"})
        print(f"saved g_phi to {args.save}")


if __name__ == "__main__":
    main()
