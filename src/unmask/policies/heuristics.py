"""Heuristic unmasking policies: the baselines of UPO Table 2 and Jazbec §4."""

from __future__ import annotations

import torch

from unmask.engine import StepState
from unmask.policies.base import Policy, ScorePolicy, top_k_mask


class RandomPolicy(ScorePolicy):
    """Uniformly random order (LLaDA ``remasking="random"``, Dream ``alg="origin"``)."""

    name = "random"
    stochastic = True

    def score(self, state: StepState) -> torch.Tensor:
        return torch.rand(state.confidence.shape, generator=state.generator, device=state.confidence.device)


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


class EntropyPolicy(ScorePolicy):
    """Lowest predictive entropy first (Dream ``entropy``)."""

    name = "entropy"

    def score(self, state: StepState) -> torch.Tensor:
        p = state.probs
        return (p * p.clamp_min(1e-12).log()).sum(-1)


class LeftToRightPolicy(ScorePolicy):
    """Autoregressive order: leftmost masked position first."""

    name = "left_to_right"

    def score(self, state: StepState) -> torch.Tensor:
        Lg = state.confidence.shape[1]
        return -torch.arange(Lg, dtype=torch.float32, device=state.confidence.device).expand_as(state.confidence)


class TopKSoftmaxPolicy(Policy):
    """UPO's Top-K reference (Table 1): sample among the K most confident candidates
    with probability ∝ exp(confidence / temperature), without replacement (Gumbel-top-k)."""

    name = "topk_softmax"
    stochastic = True

    def __init__(self, k: int = 5, temperature: float = 0.1) -> None:
        if k < 1:
            raise ValueError(f"topk_softmax: k must be >= 1, got {k}")
        if temperature <= 0:
            raise ValueError(f"topk_softmax: temperature must be > 0, got {temperature}")
        self.k, self.temperature = int(k), float(temperature)
        self.name = f"topk_softmax:k={self.k}:temperature={self.temperature:g}"

    def select(self, state: StepState) -> torch.Tensor:
        conf = state.confidence
        top = top_k_mask(conf, state.candidates, torch.full_like(state.num_transfer, self.k).minimum(state.candidates.sum(1)))
        u = torch.rand(conf.shape, generator=state.generator, device=conf.device).clamp_min(1e-20)
        perturbed = conf / self.temperature - torch.log(-torch.log(u))
        return top_k_mask(perturbed, top, state.num_transfer)


class ThresholdPolicy(Policy):
    """Fast-dLLM confidence-aware parallel decoding: reveal every candidate with confidence
    above the threshold, and the most confident one when none is."""

    name = "threshold"

    def __init__(self, threshold: float = 0.9) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must lie in (0, 1], got {threshold}")
        self.threshold = float(threshold)
        self.name = f"threshold:{self.threshold:g}"

    def select(self, state: StepState) -> torch.Tensor:
        above = state.candidates & (state.confidence >= self.threshold)
        best = top_k_mask(state.confidence, state.candidates, torch.ones_like(state.num_transfer))
        return above | best
