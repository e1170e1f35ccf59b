"""Speed-aware rewards for parallel unmasking (Jazbec §3.3).

With c the verifier's correctness (the task's ``solved``: 1 or 0), NFE the row's
forward passes and L the number of positions it generates:

* multiplicative (the paper's): ``r = c * ((L - min(NFE, L) + 1) / L) ** alpha``.
  A wrong answer earns 0 whatever its speed; among correct ones the speed term runs
  from 1 (everything revealed in one step) to 1/L (one position per step); alpha = 0
  rewards correctness alone.
* additive (the paper's ablation): ``r = c - alpha * NFE / L``. When every rollout of
  a group is wrong, the fastest one still gets the highest reward, so GRPO learns to
  reveal everything at once: NFE collapses and accuracy drops (reward hacking).

The formulas are those of the authors' public code (``((L - steps + 1) / L) ** alpha``
and ``correct - alpha * steps / L``), with L = the generated length.
"""

from __future__ import annotations

import torch

from unmask.engine.decode import GenerationOutput

REWARD_FORMS = ("multiplicative", "additive", "none")


def speed_reward(
    correct: torch.Tensor,
    nfe: torch.Tensor,
    length: torch.Tensor,
    alpha: torch.Tensor | float,
    form: str = "multiplicative",
) -> torch.Tensor:
    """Per-row reward (see the module docstring); all inputs (B,) or broadcastable."""
    correct, length = correct.float(), length.clamp(min=1).float()
    nfe = torch.minimum(nfe.float(), length)
    if form == "multiplicative":
        return correct * ((length - nfe + 1) / length) ** alpha
    if form == "additive":
        return correct - alpha * nfe / length
    raise ValueError(f"unknown speed reward {form!r}; valid: multiplicative, additive")


def trajectory_logprob(output: GenerationOutput) -> torch.Tensor:
    """``sum_n log pi_theta(x_{n-1} | x_n, a_n)`` per row: the log-probability of each revealed
    token when it was revealed, summed over the generated positions (given positions excluded)."""
    conf = output.reveal_confidence.double()
    return torch.where(conf.isnan(), torch.zeros_like(conf), conf.log()).sum(1)
