"""Imitation on states where a policy errs: max-confidence rollouts, then DAgger rounds that aggregate (issue 32).

The imitation phase of ``train-policy`` (unmask.training.imitation) fits the oracle's labels on the learner's own
states, which for the shipped coupled ``upo`` are almost all easy (docs/imitation.md). This experiment changes the
data and nothing else in the objective:

1. round 0's states come from **max-confidence** decoding of ``--train`` fresh puzzles (it errs often), each
   state up to the first wrong reveal, every candidate labelled by the oracle (``unmask.policies.oracle.correct``);
2. a planner (``unmask.policies.planner.Planner``, an MLP per position, zero-initialised head) is fitted as a
   residual over the shipped ``upo``'s logits with the phase's own fit (``fit_states``, ``imitation_loss``); its
   pairwise channels W^c are frozen: ``--pair coupling`` takes the shipped policy's learned coupling strength A
   (one channel, no task rule), ``--pair cliques`` the per-clique sums over the cliques of that coupling's graph
   (the planner option ``planner_pairs="cliques"``), ``--pair units`` the sudoku rows, columns and boxes (three
   channels: a diagnostic of what per-unit channels are worth, never a deployable policy);
3. each DAgger round (Ross et al. 2011) decodes ``--dagger-prompts`` fresh puzzles with the current learner
   (greedy), labels its states, **adds** them to every earlier round's states and refits.

``train-policy`` runs the cliques experiment itself: recipes/upo-dagger-sudoku9-small.yaml.
Every round is evaluated greedily on the same fresh held-out puzzles as the shipped ``upo`` (seed 2027, as
benchmarks/oracle_gap.py). One JSON row per (pair, round, clues).

Command (the figures in benchmarks/results/imitation_dagger.json and docs/imitation.md):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/imitation_dagger.py --pair coupling,units
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace
from pathlib import Path

import torch
from common import command_line, start_results

from unmask.api import resolve_policy
from unmask.core.checkpoint import save_json
from unmask.engine.policy import Policy
from unmask.evaluation.evaluate import run_policy
from unmask.models import load_model
from unmask.policies.learned import LearnedPolicy
from unmask.policies.planner import Planner, cliques
from unmask.tasks import get_task
from unmask.training.grpo import GRPOConfig
from unmask.training.imitation import collect_states, fit_inputs, fit_states, freeze_inputs

LENGTH = 81  # a 9x9 answer


@torch.no_grad()
def collect(task, model, actor: Policy, learner: LearnedPolicy, examples: list) -> dict:
    """The labelled states of ``actor``'s rollouts as ``learner`` observes them, each up to its first wrong reveal
    (states with a gold candidate only), reduced to what the planner's fit reads (the phase's own functions)."""
    states = collect_states(task, model, learner, examples, None, 0, batch_size=256, progress=False, actor=actor)
    states = {k: v[states["gold"].any(1)] for k, v in states.items()}
    freeze_inputs(learner, states)
    return fit_inputs(learner, states)


def units() -> torch.Tensor:
    """(3, 81, 81): the rows, columns and boxes of a 9x9 sudoku (the diagnostic ``--pair units``)."""
    r, c = torch.arange(LENGTH) // 9, torch.arange(LENGTH) % 9
    box = (r // 3) * 3 + c // 3
    off = ~torch.eye(LENGTH, dtype=torch.bool)
    return torch.stack([(k[:, None] == k[None, :]) & off for k in (r, c, box)]).float()


def planner_for(pair: torch.Tensor, d_model: int) -> Planner:
    planner = Planner(LENGTH, len(pair), 0, d_model, 4)
    with torch.no_grad():
        planner.pair.copy_(pair)
    planner.pair.requires_grad_(False)
    return planner


def fit(policy: LearnedPolicy, calibration: torch.Tensor, states: dict, epochs: int) -> float:
    """``epochs`` passes of a new Adam (lr 1e-3, batches of 256) on the phase's fit (``fit_states``) over the
    planner's trainable parameters; the mean loss of the last pass."""
    params = [p for p in policy.planner.parameters() if p.requires_grad]
    opt = torch.optim.Adam([*params, calibration], lr=1e-3)
    cfg = GRPOConfig(imitation_epochs=epochs, imitation_batch_size=256)
    return fit_states(policy, states, opt, params, calibration, torch.Generator().manual_seed(0), cfg)


def as_policy(upo: LearnedPolicy, planner: Planner) -> LearnedPolicy:
    """The shipped ``upo`` with ``planner`` as its residual (greedy)."""
    config = replace(
        upo.config,
        planner=True,
        planner_length=LENGTH,
        planner_pairs="learned" if planner.cliques is None else "cliques",
        pair_channels=planner.channels,
        planner_cliques=0 if planner.cliques is None else len(planner.cliques),
        planner_slots=planner.slots,
        planner_d_model=planner.inp[0].out_features,
        planner_layers=0,
        planner_heads=4,
    )
    policy = LearnedPolicy(config)
    missing = policy.load_state_dict(upo.state_dict(), strict=False).missing_keys
    assert all(k.startswith("planner.") for k in missing), missing
    policy.planner = planner
    return policy.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", default="coupling,units", help="comma-separated: coupling | cliques | units (diagnostic)")
    p.add_argument("--clique-threshold", type=float, default=0.3, help="--pair cliques: the edges A_ij > this")
    p.add_argument("--clique-min-size", type=int, default=5, help="--pair cliques: the smallest clique kept")
    p.add_argument("--append", action="store_true", help="add the rows to an existing --out file")
    p.add_argument("--save", default="", help="a folder for each pair's last planner (torch.save of its state dict)")
    p.add_argument("--train", type=int, default=2000, help="max-confidence training puzzles (round 0)")
    p.add_argument("--train-clues", default="24,26,28")
    p.add_argument("--dagger-rounds", type=int, default=2)
    p.add_argument("--dagger-prompts", type=int, default=1000, help="learner rollouts added per DAgger round")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--eval-clues", default="24,28")
    p.add_argument("--num", type=int, default=300, help="held-out puzzles per clue count")
    p.add_argument("--out", default="benchmarks/results/imitation_dagger.json")
    args = p.parse_args()
    rows, provenance = start_results(Path(args.out), args.append, command_line("benchmarks/imitation_dagger.py", args))
    task, model = get_task("sudoku9"), load_model("sudoku9-small")
    upo = resolve_policy("upo", model)
    clues = [int(c) for c in args.train_clues.split(",")]

    def puzzles(n: int, seed: int) -> list:
        return [ex for i, c in enumerate(clues) for ex in task.generate(n // len(clues), seed=seed + i, difficulty=c)]

    held = {c: task.generate(args.num, seed=2027, difficulty=c) for c in map(int, args.eval_clues.split(","))}
    shipped = {c: run_policy(task, model, ex, upo)[0].solved_rate for c, ex in held.items()}
    t0 = time.perf_counter()
    observer = as_policy(upo, Planner(LENGTH, 0, 0, args.d_model, 4))  # what every planner reads, untrained
    start = collect(task, model, resolve_policy("confidence", model), observer, puzzles(args.train, 5000))
    print(f"{len(start['gold'])} max-confidence states ({time.perf_counter() - t0:.0f}s)", flush=True)
    for pair in args.pair.split(","):
        torch.manual_seed(0)
        if pair == "cliques":
            members = cliques(upo.coupling.strength.detach(), args.clique_threshold, args.clique_min_size)
            slots = int(members.sum(0).max())
            print(f"{len(members)} cliques of >= {args.clique_min_size} positions, up to {slots} per position")
            planner = Planner(LENGTH, 0, 0, args.d_model, 4, cliques=members, slots=slots)
        else:
            weights = {"coupling": lambda: upo.coupling.strength.detach()[None], "units": units}[pair]()
            planner = planner_for(weights, args.d_model)
        calibration = torch.tensor([math.log(upo.config.base_temperature), 0.0], requires_grad=True)
        states, policy = dict(start), as_policy(upo, planner)
        for r in range(args.dagger_rounds + 1):
            if r:  # DAgger: the learner's (greedy) states, added to every earlier round's
                new = collect(task, model, policy, policy, puzzles(args.dagger_prompts, 6000 + 10 * r))
                states = {k: torch.cat([states[k], new[k]]) for k in states}
            loss = fit(policy, calibration, states, args.epochs)
            for c, ex in held.items():
                solved = run_policy(task, model, ex, policy)[0].solved_rate
                rows.append(
                    {
                        "pair": pair,
                        "round": r,
                        "clues": c,
                        "states": len(states["gold"]),
                        "loss": loss,
                        "solved_rate": solved,
                        "shipped_upo": shipped[c],
                        "num": args.num,
                    }
                )
                print(
                    f"pair {pair} round {r} ({len(states['gold'])} states, loss {loss:.4f}) clues {c}: "
                    f"{solved:.1%} vs shipped upo {shipped[c]:.1%} ({time.perf_counter() - t0:.0f}s)",
                    flush=True,
                )
            save_json(Path(args.out), {"provenance": provenance, "results": rows})
        if args.save:
            Path(args.save).mkdir(parents=True, exist_ok=True)
            torch.save(planner.state_dict(), Path(args.save) / f"planner-{pair}-round{args.dagger_rounds}.pt")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
