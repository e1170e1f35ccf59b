"""Ground-truth oracles: upper bounds for evaluation tables, never deployable policies.

An oracle reads the gold token of every generated position (``StepState.inputs["target"]``, (b, Lg), which
:func:`unmask.evaluation.evaluate.run_policy` gives policies with ``needs_target`` from :meth:`unmask.tasks.base.Task.targets`)
and reveals positions whose token, the one the engine would write, already is the gold one. On tasks with a
unique answer such a position exists at almost every step, so the one-per-step oracle measures what a perfect
*position* policy gets out of the frozen MDM; the parallel form, every such position at once, how few forwards
it needs. Two rankings:

* ``oracle``: the ground-truth-argmax oracle, correct positions first, the most confident of them first;
* ``gt_margin``: Gt-Margin (Asano et al., arXiv 2602.09501, Eq. 3), the margin of the gold token over its
  strongest rival, ``log p_i(y_i) - max_{v != y_i} log p_i(v)``; positive exactly where the argmax is gold.

With ``parallel=True`` a step reveals every candidate whose token is gold (the best-ranked candidate when none
is); otherwise the count schedule's ``num_transfer`` best-ranked ones (one per step without ``--steps``).
Both rankings are also the labels of imitation pre-training (:mod:`unmask.training.imitation`).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from unmask.engine.policy import Capabilities, Policy
from unmask.engine.state import StepState
from unmask.policies.base import top_k_mask

RANKINGS = ("argmax", "margin")


def gold_targets(state: StepState) -> torch.Tensor:
    """The gold tokens (b, Lg) of the step's rows, with one clear error when the caller gave none."""
    target = state.inputs.get("target")
    if target is None:
        raise ValueError(
            "oracle policies read the gold answer: decode them through unmask eval / run_policy on a "
            "task with per-position targets, or pass inputs={'target': task.targets(...)} to generate()"
        )
    return target


def correct(state: StepState) -> torch.Tensor:
    """(b, Lg) bool: candidates whose token (the one the engine would write) is the gold token."""
    return state.candidates & (state.tokens == gold_targets(state))


def gt_margin(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Gt-Margin (Asano et al., Eq. 3): log p(y) - max_{v != y} log p(v) per position, (b, Lg)."""
    log_p = probs.float().clamp_min(1e-30).log()
    gold = log_p.gather(-1, target[..., None]).squeeze(-1)
    rival = log_p.scatter(-1, target[..., None], float("-inf")).amax(-1)
    return gold - rival


class OraclePolicy(Policy):
    """Reveal gold positions (see the module docstring); ``ranking`` argmax | margin, ``parallel`` all at once."""

    capabilities = Capabilities(needs_target=True)

    def __init__(self, ranking: str = "argmax", parallel: bool = False) -> None:
        if ranking not in RANKINGS:
            raise ValueError(f"oracle ranking must be one of {', '.join(RANKINGS)}, got {ranking!r}")
        if not isinstance(parallel, bool) and parallel not in (0, 1):
            raise ValueError(f"oracle: parallel takes 0 or 1, got {parallel!r}")
        self.ranking, self.parallel = ranking, bool(parallel)
        self.name = ("oracle" if ranking == "argmax" else "gt_margin") + (":parallel" if self.parallel else "")
        self.capabilities = replace(self.capabilities, follows_schedule=not self.parallel)

    def score(self, state: StepState) -> torch.Tensor:
        """Rank (b, Lg): gold positions above all others."""
        if self.ranking == "margin":
            return gt_margin(state.probs, gold_targets(state))
        return correct(state).float() + state.confidence.float().clamp(0, 1) * 0.5

    def select(self, state: StepState) -> torch.Tensor:
        scores = self.score(state)
        if not self.parallel:
            return top_k_mask(scores, state.candidates, state.num_transfer, state.offset)
        gold = correct(state)
        best = top_k_mask(scores, state.candidates, torch.ones_like(state.num_transfer), state.offset)
        return torch.where(gold.any(1, keepdim=True), gold, best)


def oracle(parallel: int = 0) -> OraclePolicy:
    """The ground-truth-argmax oracle (spec ``oracle``, ``oracle:parallel=1``)."""
    return OraclePolicy("argmax", bool(parallel))


def gt_margin_oracle(parallel: int = 0) -> OraclePolicy:
    """The Gt-Margin oracle (spec ``gt_margin``, ``gt_margin:parallel=1``)."""
    return OraclePolicy("margin", bool(parallel))
