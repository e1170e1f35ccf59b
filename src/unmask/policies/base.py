"""What the heuristic policies share: top-k selection as the upstream samplers' ``topk`` calls break ties, and
:class:`ScorePolicy`, the policy that reveals the schedule's count of best-scoring positions. The policy
interface itself (:class:`Policy`, :class:`Capabilities`) is the engine's, :mod:`unmask.engine.policy`.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from unmask.engine.policy import Capabilities, Policy
from unmask.engine.state import StepState


def top_k_mask(
    scores: torch.Tensor, allowed: torch.Tensor, k: torch.Tensor, offset: int = 0, take: torch.Tensor | None = None
) -> torch.Tensor:
    """Per row, the ``k[i]`` highest ``scores`` among ``allowed`` positions, as ``torch.topk(row, k[i])`` on the
    upstream layout: the row prefixed by ``offset`` positions (the prompt) and -inf outside ``allowed``, so ties
    break as in LLaDA's / Fast-dLLM's / Dream's own ``topk`` calls. ``take``: of those (sorted), keep the first
    ``take[i]`` only (Fast-dLLM keeps the first of ``topk(row, masked)``)."""
    s = scores.masked_fill(~allowed, float("-inf"))
    if offset:
        s = torch.cat([s.new_full((s.shape[0], offset), float("-inf")), s], 1)
    out = torch.zeros(s.shape, dtype=torch.bool, device=s.device)
    for kv in k.unique().tolist():
        if kv <= 0:
            continue
        rows = (k == kv).nonzero().squeeze(1)
        idx = s[rows].topk(min(kv, s.shape[1]), dim=1, sorted=True).indices
        keep = (
            torch.ones_like(idx, dtype=torch.bool)
            if take is None
            else (torch.arange(idx.shape[1], device=s.device)[None, :] < take[rows, None])
        )
        out[rows] = out[rows].scatter(1, idx, keep)
    return out[:, offset:] & allowed


class ScorePolicy(Policy):
    """Reveal the ``num_transfer`` highest-scoring candidates (LLaDA's ``remasking``, Dream's ``alg``).

    ``alg_temp > 0`` (Dream ``alg_temp``): draw them without replacement with probability
    ``softmax(score / alg_temp)`` over the candidates instead (``torch.multinomial``, as ``topk(p / Exp(1))``)."""

    capabilities = Capabilities(follows_schedule=True)

    def __init__(self, alg_temp: float = 0.0) -> None:
        if not (isinstance(alg_temp, (int, float)) and math.isfinite(alg_temp) and alg_temp >= 0):
            raise ValueError(f"{self.name}: alg_temp must be a finite number >= 0 (0: deterministic), got {alg_temp!r}")
        self.alg_temp = float(alg_temp)
        if self.alg_temp > 0:
            self.name = f"{self.name}:alg_temp={self.alg_temp:g}"
            self.capabilities = replace(self.capabilities, stochastic=True)

    def score(self, state: StepState) -> torch.Tensor:
        raise NotImplementedError

    def select(self, state: StepState) -> torch.Tensor:
        scores = self.score(state)
        if self.alg_temp == 0:
            return top_k_mask(scores, state.candidates, state.num_transfer, state.offset)
        drawing = state.num_transfer > 0  # Dream draws only when the step reveals something
        reveal = torch.zeros_like(state.candidates)
        if drawing.any():
            p = (scores[drawing] / self.alg_temp).masked_fill(~state.candidates[drawing], float("-inf")).softmax(-1)
            q = state.draws.subset(drawing).exponential(dtype=p.dtype)
            reveal[drawing] = top_k_mask(p / q, state.candidates[drawing], state.num_transfer[drawing], state.offset)
        return reveal
