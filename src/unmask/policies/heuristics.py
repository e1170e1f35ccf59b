"""Heuristic unmasking policies: the baselines of UPO Table 2 and Jazbec §4, the upstream samplers'
strategies (LLaDA ``remasking``, Dream ``alg``, Fast-dLLM threshold / factor) and the entropy-bounded
sampler (Ben-Hamu et al. 2025)."""

from __future__ import annotations

import math

import torch

from unmask.engine.policy import Capabilities, Policy
from unmask.engine.state import StepState
from unmask.policies.base import ScorePolicy, top_k_mask


def _check_number(
    policy: str, name: str, value, low: float, high: float = math.inf, low_open: bool = False, integer: bool = False
) -> None:
    """One clear error for a spec argument outside its range (or not a finite number / not an integer)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = (
        ok
        and (value > low if low_open else value >= low)
        and value <= high
        and (not integer or float(value).is_integer())
    )
    if not ok:
        kind = "an integer" if integer else "a finite number"
        bounds = f"{'>' if low_open else '>='} {low:g}" + (f" and <= {high:g}" if high < math.inf else "")
        raise ValueError(f"{policy}: {name} must be {kind} {bounds}, got {value!r}")


class RandomPolicy(ScorePolicy):
    """Uniformly random order (LLaDA ``remasking="random"``: ``x0_p = rand``)."""

    name = "random"
    capabilities = Capabilities(follows_schedule=True, stochastic=True)

    def score(self, state: StepState) -> torch.Tensor:
        return state.draws.uniform()


class ConfidencePolicy(ScorePolicy):
    """Max-confidence g_conf: highest p(chosen token) first (LLaDA ``low_confidence``, Dream ``maskgit_plus``)."""

    name = "confidence"

    def score(self, state: StepState) -> torch.Tensor:
        return state.confidence


class MarginPolicy(ScorePolicy):
    """Largest top-1 minus top-2 probability first (Dream ``topk_margin``)."""

    name = "margin"

    def score(self, state: StepState) -> torch.Tensor:
        top2 = state.probs.topk(2, dim=-1).values
        return top2[..., 0] - top2[..., 1]


def neg_entropy(probs: torch.Tensor) -> torch.Tensor:
    """sum_v p log(p + 1e-10): Dream ``sample_tokens(neg_entropy=True)``'s score (0 for a one-hot)."""
    return (probs * torch.log(probs + 1e-10)).sum(-1)


class EntropyPolicy(ScorePolicy):
    """Lowest predictive entropy first (Dream ``entropy``)."""

    name = "entropy"

    def score(self, state: StepState) -> torch.Tensor:
        return neg_entropy(state.probs)


class LeftToRightPolicy(ScorePolicy):
    """Autoregressive order: leftmost masked position first."""

    name = "left_to_right"

    def score(self, state: StepState) -> torch.Tensor:
        Lg = state.candidates.shape[1]
        return -torch.arange(Lg, dtype=torch.float32, device=state.candidates.device).expand(state.candidates.shape)


class OriginPolicy(Policy):
    """Dream ``alg="origin"`` (Austin et al. 2021): each masked position is revealed independently with
    probability ``1 - s / t`` (all at the last step), so a step reveals a random number, possibly none."""

    name = "origin"
    capabilities = Capabilities(stochastic=True, follows_schedule=True, tokens_after_reveal=True, needs_steps=True)

    def select(self, state: StepState) -> torch.Tensor:
        p = state.transfer_probability.repeat_interleave(state.candidates.sum(1))
        return torch.zeros_like(state.candidates).masked_scatter(
            state.candidates, state.draws.uniform_at(state.candidates) < p
        )


class TopKSoftmaxPolicy(Policy):
    """UPO's Top-K reference (Table 1): sample among the K most confident candidates
    with probability ∝ exp(confidence / temperature), without replacement (Gumbel-top-k)."""

    name = "topk_softmax"
    capabilities = Capabilities(stochastic=True, follows_schedule=True)

    def __init__(self, k: int = 5, temperature: float = 0.1) -> None:
        _check_number("topk_softmax", "k", k, 1, integer=True)
        _check_number("topk_softmax", "temperature", temperature, 0, low_open=True)
        self.k, self.temperature = int(k), float(temperature)
        self.name = f"topk_softmax:k={self.k}:temperature={self.temperature:g}"

    def select(self, state: StepState) -> torch.Tensor:
        conf = state.confidence
        top = top_k_mask(
            conf, state.candidates, torch.full_like(state.num_transfer, self.k).minimum(state.candidates.sum(1))
        )
        u = state.draws.uniform().clamp_min(1e-20)
        perturbed = conf / self.temperature - torch.log(-torch.log(u))
        return top_k_mask(perturbed, top, state.num_transfer)


class ThresholdPolicy(Policy):
    """Fast-dLLM confidence-aware parallel decoding (``get_transfer_index`` with ``threshold``): reveal every
    candidate with confidence above the threshold, and the most confident one when none is."""

    name = "threshold"

    def __init__(self, threshold: float = 0.9) -> None:
        _check_number("threshold", "threshold", threshold, 0, 1, low_open=True)
        self.threshold = float(threshold)
        self.name = f"threshold:{self.threshold:g}"

    def select(self, state: StepState) -> torch.Tensor:
        above = state.candidates & (state.confidence >= self.threshold)
        n = state.candidates.sum(1)
        best = top_k_mask(state.confidence, state.candidates, n, state.offset, take=torch.ones_like(n))
        return above | best


class ScheduledThresholdPolicy(Policy):
    """LLaDA2 ``generate()``'s rule (block diffusion): reveal every candidate with confidence strictly above the
    threshold when there are at least the schedule's count ``k`` of them, else the ``k`` most confident (all the
    candidates when fewer). Unlike :class:`ThresholdPolicy` (Fast-dLLM: ``>=``, at least one), the schedule's count
    is a floor, so a block is done within its scheduled steps."""

    name = "scheduled_threshold"

    def __init__(self, threshold: float = 0.95) -> None:
        _check_number("scheduled_threshold", "threshold", threshold, 0, 1)
        self.threshold = float(threshold)
        self.name = f"scheduled_threshold:{self.threshold:g}"

    def select(self, state: StepState) -> torch.Tensor:
        above = state.candidates & (state.confidence > self.threshold)
        k = torch.minimum(state.num_transfer, state.candidates.sum(1))
        enough = above.sum(1) >= k
        return torch.where(enough[:, None], above, top_k_mask(state.confidence, state.candidates, k))


class FactorPolicy(Policy):
    """Fast-dLLM's factor-based parallel rule (``get_transfer_index_dynamic``): with the candidates'
    confidences sorted c_0 >= c_1 >= ... (n of them), reveal the top j, j the first index >= 1 with
    c_j < 1 - factor / (j + 2); all n when that is the last index or there is none (upstream's rule)."""

    name = "factor"

    def __init__(self, factor: float = 1.0) -> None:
        _check_number("factor", "factor", factor, 0, low_open=True)
        self.factor = float(factor)
        self.name = f"factor:{self.factor:g}"

    def select(self, state: StepState) -> torch.Tensor:
        conf = state.confidence.masked_fill(~state.candidates, float("-inf"))
        ranked = conf.sort(-1, descending=True).values
        n = state.candidates.sum(1)
        idx = torch.arange(conf.shape[1], device=conf.device)
        bound = 1 - self.factor / (idx + 2).double()
        fails = (ranked.double() < bound) & (idx >= 1) & (idx < n[:, None])
        first = torch.where(fails.any(1), fails.long().argmax(1), n - 1)
        count = torch.where(first >= n - 1, n, first)
        return top_k_mask(conf, state.candidates, count, state.offset)


class EntropyBoundedPolicy(Policy):
    """EB-Sampler (Ben-Hamu et al. 2025, arXiv 2505.24857; transformers' DiffusionGemma acceptance rule): with the
    candidates sorted by increasing entropy H, reveal the largest prefix U with sum(H_U) - max(H_U) <= gamma
    (at least one position). gamma = 0 reveals the lowest-entropy position and any others of zero entropy."""

    name = "eb"

    def __init__(self, gamma: float = 0.1) -> None:
        _check_number("eb", "gamma", gamma, 0)
        self.gamma = float(gamma)
        self.name = f"eb:{self.gamma:g}"

    def select(self, state: StepState) -> torch.Tensor:
        entropy = state.entropy
        ranked = entropy.masked_fill(~state.candidates, float("inf")).sort(-1).values
        finite = ranked.masked_fill(ranked.isinf(), 0)
        within = (finite.cumsum(-1) - finite.cummax(-1).values <= self.gamma) & ~ranked.isinf()
        count = within.sum(1).clamp(min=1)
        return top_k_mask(-entropy, state.candidates, count)
