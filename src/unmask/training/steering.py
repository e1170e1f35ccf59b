"""Expert steering (Jazbec §3.4): heuristic trajectories mixed into each GRPO group.

Each heuristic spec of ``expert_steering`` (e.g. Fast-dLLM ``threshold:0.9``) adds one
trajectory per prompt to its group of G policy rollouts, decoded with the run's
sampling settings. Its steps are recorded through the learned policy's own observation
and the heuristic's reveal set is encoded as the policy's action, so the update can
score it under pi_phi. As in the authors' code, the G + E samples of a group are
treated as draws from the mixture (G/(G+E)) pi_phi + (1/(G+E)) delta_expert, so every
expert step enters the clipped ratio with, for the old and the new policy alike,

    log p_mix(a) = logaddexp(log(G / (G+E)) + log pi_phi(a), log(1 / (G+E)))

while policy rollouts keep log pi_phi. Deviations: the authors decode experts with
block length 32 whatever the policy's setting and add them once per device batch;
here experts use the run's sampling settings and are added to every prompt's group.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from unmask.engine.policy import Policy
from unmask.engine.state import StepState
from unmask.policies.distributions import trim
from unmask.policies.learned import LearnedPolicy


def mixture_log_prob(log_prob: torch.Tensor, num_generations: int, num_experts: int) -> torch.Tensor:
    """log of (G/(G+E)) pi_phi(a) + 1/(G+E) for the steps of expert trajectories."""
    total = num_generations + num_experts
    return torch.logaddexp(log_prob + math.log(num_generations / total), torch.full_like(log_prob, -math.log(total)))


class ExpertSteering(Policy):
    """Rows with ``expert_of[row] = j >= 0`` follow ``experts[j]``; the others follow ``policy``.
    Recorded steps always hold the policy's observation and an action in its format."""

    def __init__(
        self, policy: LearnedPolicy, experts: Sequence[Policy], expert_of: torch.Tensor, num_generations: int
    ) -> None:
        self.policy, self.experts, self.expert_of = policy, list(experts), expert_of
        self.num_generations = num_generations
        self.name = f"{policy.name}+experts"

    def act(self, state: StepState, record: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        reveal, data = self.policy.act(state, record)
        which = self.expert_of.to(reveal.device)[state.rows]
        for j, expert in enumerate(self.experts):
            rows = which == j
            if rows.any():
                reveal = torch.where(rows[:, None], expert.select(state), reveal)
        steered = which >= 0
        if record and steered.any():
            obs = {k: v for k, v in data.items() if k not in ("action", "old_log_prob")}
            scores = self.policy.scores(obs)
            action = self.policy.encode(scores, reveal)
            width = max(action.shape[1], data["action"].shape[1])
            pad = lambda a: torch.nn.functional.pad(a, (0, width - a.shape[1]), value=-1)  # noqa: E731
            data["action"] = trim(torch.where(steered[:, None], pad(action), pad(data["action"])))
            expert_log_prob = mixture_log_prob(
                self.policy.log_prob(obs, action, scores), self.num_generations, len(self.experts)
            )
            data["old_log_prob"] = torch.where(steered, expert_log_prob, data["old_log_prob"])
        return reveal, data
