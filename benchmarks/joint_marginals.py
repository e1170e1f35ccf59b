"""Headroom above max-confidence in the MDM's own outputs: a constraint-aware choice of cell on sudoku.

Max-confidence looks at each masked cell's marginal p_theta(x_0 | x_n) alone. This probe looks at all of them
together: revealed cells count as the one-hot of their digit, and ``iters`` rounds of iterative proportional
fitting push the marginals toward "each digit once per row, column and box" (Sinkhorn-style):
P[i, d] <- P[i, d] / mean_{u in units(i)} sum_{j in u} P[j, d], then each cell is renormalised. The policy reveals
the masked cell whose token (the MDM's argmax, the one max-confidence would write) keeps the highest rescaled
probability. Only the *choice of cell* changes; every token is the MDM's.

This is a hand-made, sudoku-specific rule, not a library heuristic: it measures how far a policy that reads the
MDM's outputs (as UPO's g_phi does) could go beyond max-confidence on the same frozen model. Prints a table and
writes JSON (same puzzles as ``heuristics.py``: 500 per clue count, seed 2026).

``--audit`` also decodes with each of max-confidence and the most-rounds rule and counts, in every state before
the followed rule's first wrong reveal, how often each rule's pick would write a wrong digit: how rare the states
are in which the choice of cell matters, i.e. how sparse the signal is that a learned g_phi gets.

Command (benchmarks/results/upo/joint_marginals.json):
    python benchmarks/joint_marginals.py --models sudoku9-small,sudoku9-base --clues 24,28,32,36 --iters 1,2,3
    python benchmarks/joint_marginals.py --clues 28 --iters 3 --audit --out benchmarks/results/upo/joint_marginals_audit.json
"""

from __future__ import annotations

import argparse

import torch
from common import command_line, run_info

from unmask.core.checkpoint import save_json
from unmask.engine.loop import generate
from unmask.engine.policy import Policy
from unmask.engine.state import StepState
from unmask.evaluation.evaluate import evaluate, format_table
from unmask.models import load_model
from unmask.policies import get_policy
from unmask.policies.base import ScorePolicy
from unmask.tasks import get_task


class UnitRescoring(ScorePolicy):
    """Max-confidence on marginals rescaled toward one digit per unit (see the module docstring)."""

    def __init__(self, units: torch.Tensor, iters: int) -> None:
        self.units, self.iters, self.name = units, iters, f"unit-rescored:{iters}"  # units: (U, L) 0/1 membership

    def score(self, state: StepState) -> torch.Tensor:
        n = int(self.units[0].sum())  # digits = cells per unit (token ids 0..n-1; the mask id is n)
        masked = state.masked[..., None]
        p = state.token_probs[..., :n].float()  # written cells: the one-hot of their digit
        written = p = p / p.sum(-1, keepdim=True)
        per_cell_units = self.units.sum(0)[None, :, None]
        for _ in range(self.iters):
            mass = torch.einsum("ul,bld->bud", self.units, p)  # each unit's total mass of each digit
            p = p / (torch.einsum("ul,bud->bld", self.units, mass) / per_cell_units).clamp_min(1e-6)
            p = torch.where(masked, p / p.sum(-1, keepdim=True), written)
        return p.gather(-1, state.tokens.clamp(max=n - 1)[..., None]).squeeze(-1)


class PickAudit(Policy):
    """Decodes with ``policies[follow]``; in each state before its first wrong reveal, counts the states and, per
    policy, the picks that would write a wrong token (``solution``: (B, L) target tokens of the batch)."""

    def __init__(self, policies: dict[str, Policy], follow: str, solution: torch.Tensor) -> None:
        self.policies, self.follow, self.solution, self.name = policies, follow, solution, f"audit:{follow}"
        self.alive = torch.ones(len(solution), dtype=torch.bool, device=solution.device)
        self.states, self.wrong = 0, dict.fromkeys(policies, 0)

    def select(self, state: StepState) -> torch.Tensor:
        right = state.tokens == self.solution[state.rows]
        alive = self.alive[state.rows]
        picks = {name: policy.select(state) for name, policy in self.policies.items()}
        for name, pick in picks.items():
            self.wrong[name] += int((alive & (pick & ~right).any(1)).sum())
        self.states += int(alive.sum())
        self.alive[state.rows] = alive & ~(picks[self.follow] & ~right).any(1)
        return picks[self.follow]


def audit(task, model, examples, policies: dict[str, Policy]) -> list[dict]:
    """One :class:`PickAudit` decode per followed policy: states and wrong-pick rates of every policy."""
    x = task.encode(examples, model).input_ids
    solution = task.targets(examples, model).to(x.device)
    rows = []
    for follow in policies:
        a = PickAudit(policies, follow, solution)
        generate(model, x, a)
        rows.append(
            {
                "follow": follow,
                "states": a.states,
                "solved_rate": float(a.alive.float().mean()),
                **{f"wrong_pick_{name}": a.wrong[name] / a.states for name in policies},
            }
        )
        print(
            f"following {follow}: {a.states} states before its first error, solved {rows[-1]['solved_rate']:.3f}; "
            "wrong picks " + ", ".join(f"{n} {100 * a.wrong[n] / a.states:.2f}%" for n in policies),
            flush=True,
        )
    return rows


def unit_matrix(task) -> torch.Tensor:
    """(3N, N*N) membership of each cell in its row, column and box, from the task's coordinates."""
    rows = [torch.tensor(coord)[None, :] == torch.arange(max(coord) + 1)[:, None] for coord in task.coordinates()]
    return torch.cat(rows).float()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="sudoku9-small")
    p.add_argument("--clues", default="24,28,32,36")
    p.add_argument("--iters", default="1,2,3", help="comma-separated rounds of proportional fitting")
    p.add_argument("--num", type=int, default=500)
    p.add_argument("--audit", action="store_true", help="also count wrong picks per state (see the docstring)")
    p.add_argument("--out", default="benchmarks/results/upo/joint_marginals.json")
    args = p.parse_args()
    task = get_task("sudoku9")
    units = unit_matrix(task)
    rows, audits = [], []
    for clues in [int(c) for c in args.clues.split(",")]:
        examples = task.generate(args.num, seed=2026, difficulty=clues)
        for name in args.models.split(","):
            model = load_model(name)
            policies = [get_policy("confidence")] + [
                UnitRescoring(units.to(model.device), int(i)) for i in args.iters.split(",")
            ]
            results = evaluate(task, model, examples, policies, seed=0, progress=False)
            print(f"\n{name} · {clues} clues\n{format_table(results)}", flush=True)
            rows += [{"model": name, "clues": clues, **r.__dict__} for r in results]
            if args.audit:
                audits += [
                    {"model": name, "clues": clues, **row}
                    for row in audit(task, model, examples, {p.name: p for p in (policies[0], policies[-1])})
                ]
            save_json(
                args.out,
                {
                    "provenance": [run_info(command_line("benchmarks/joint_marginals.py", args))],
                    "results": rows,
                    **({"audit": audits} if args.audit else {}),
                },
            )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
