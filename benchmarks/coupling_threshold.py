"""Fast-dLLM's threshold rule on coupling-refined confidences: what a learned coupling could give the parallel
policies (the parallel-unmasking issue: beat ``threshold`` at equal NFE on sudoku9).

``threshold:t`` reveals every masked cell whose confidence p_i(token_i) exceeds t (at least the most confident
one). ``refined-threshold:t`` does the same with q_i(token_i), the marginals refined by the coupling of a UPO
policy checkpoint (:class:`unmask.policies.coupling.MeanFieldCoupling`; the shipped ``upo`` by default). Nothing
else is learned here: the rule is a heuristic, the coupling the UPO pre-training's. Prints a table and writes JSON.

Command (benchmarks/results/parallel/coupling_threshold.json):
    python benchmarks/coupling_threshold.py --clues 28 --thresholds 0.9,0.95,0.99,0.995
"""

from __future__ import annotations

import argparse

import torch
from common import command_line, run_info

from unmask.api import resolve_policy
from unmask.core.checkpoint import save_json
from unmask.engine.policy import Policy
from unmask.engine.state import StepState
from unmask.evaluation.evaluate import evaluate, format_table
from unmask.models import load_model
from unmask.policies import get_policy
from unmask.policies.base import top_k_mask
from unmask.policies.coupling import MeanFieldCoupling
from unmask.tasks import get_task


class RefinedThreshold(Policy):
    """Reveal every candidate whose refined confidence q_i(token_i) exceeds ``threshold`` (at least the top one)."""

    def __init__(self, coupling: MeanFieldCoupling, threshold: float) -> None:
        self.coupling, self.threshold, self.name = coupling, threshold, f"refined-threshold:{threshold:g}"

    @torch.no_grad()
    def select(self, state: StepState) -> torch.Tensor:
        q = self.coupling(state.token_probs.float(), state.masked).gather(-1, state.tokens[..., None]).squeeze(-1).exp()
        top = top_k_mask(q, state.candidates, torch.ones_like(state.num_transfer))
        return (state.candidates & (q > self.threshold)) | top


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="sudoku9-small")
    p.add_argument("--policy", default="upo", help="the UPO checkpoint whose coupling refines the confidences")
    p.add_argument("--clues", default="28")
    p.add_argument("--thresholds", default="0.9,0.95,0.99,0.995")
    p.add_argument("--num", type=int, default=500)
    p.add_argument("--out", default="benchmarks/results/parallel/coupling_threshold.json")
    args = p.parse_args()
    task, model = get_task("sudoku9"), load_model(args.model)
    coupling = resolve_policy(args.policy, model).coupling
    thresholds = [float(t) for t in args.thresholds.split(",")]
    policies = (
        [get_policy("confidence")]
        + [get_policy(f"threshold:{t:g}") for t in thresholds]
        + [RefinedThreshold(coupling, t) for t in thresholds]
    )
    rows = []
    for clues in [int(c) for c in args.clues.split(",")]:
        results = evaluate(
            task, model, task.generate(args.num, seed=2026, difficulty=clues), policies, seed=0, progress=False
        )
        print(f"\n{args.model} · {clues} clues\n{format_table(results)}", flush=True)
        rows += [{"model": args.model, "clues": clues, **r.__dict__} for r in results]
        save_json(
            args.out,
            {"provenance": [run_info(command_line("benchmarks/coupling_threshold.py", args))], "results": rows},
        )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
