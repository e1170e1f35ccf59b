"""The unmasking-policy interface (UPO §3.1, Jazbec §2).

A policy looks at one engine step (:class:`unmask.policies.state.StepState`, the
interface's own input type) and returns which masked positions of the current block to
reveal: a bool mask (b, Lg), at least one position per row unless the policy follows the
count schedule (``follows_schedule``). Random numbers come from ``state.draws``. Heuristics rank positions by a
score; learned policies (:mod:`unmask.policies.learned`) also return, when the
engine records a trajectory, what their RL update needs (UPO Algorithm 2).
Decoding options a policy takes (``OPTIONS``; a spec's ``:key=value``) are set when it is resolved.
"""

from __future__ import annotations

import math

import torch

from unmask.policies.state import StepState


class Policy:
    """Base class; subclasses implement :meth:`select`."""

    name: str = "policy"
    needs_hidden: bool = False  # ask the MDM for hidden features (UPO's g_phi does)
    stochastic: bool = False  # whether repeated runs can differ (pass@N makes sense)
    follows_schedule: bool = False  # reveals exactly num_transfer per step: blocks last their scheduled steps
    tokens_after_reveal: bool = False  # tokens are drawn only where the policy reveals, after it (Dream origin)
    needs_steps: bool = False  # may reveal nothing at a step: only runs with a fixed number of steps
    conditioned: bool = False  # takes the speed weight alpha as an input (alpha-conditioned learned policies)
    needs_target: bool = False  # reads the gold tokens (StepState.inputs["target"]): oracles, never deployable
    OPTIONS: dict[str, str] = {}  # learned policies' decoding options (name -> valid values), see with_options

    def select(self, state: StepState) -> torch.Tensor:
        raise NotImplementedError

    def act(self, state: StepState, record: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The reveal mask and, when ``record``, the tensors to store for training."""
        return self.select(state), {}


def top_k_mask(scores: torch.Tensor, allowed: torch.Tensor, k: torch.Tensor, offset: int = 0,
               take: torch.Tensor | None = None) -> torch.Tensor:
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
        keep = torch.ones_like(idx, dtype=torch.bool) if take is None else (
            torch.arange(idx.shape[1], device=s.device)[None, :] < take[rows, None])
        out[rows] = out[rows].scatter(1, idx, keep)
    return out[:, offset:] & allowed


class ScorePolicy(Policy):
    """Reveal the ``num_transfer`` highest-scoring candidates (LLaDA's ``remasking``, Dream's ``alg``).

    ``alg_temp > 0`` (Dream ``alg_temp``): draw them without replacement with probability
    ``softmax(score / alg_temp)`` over the candidates instead (``torch.multinomial``, as ``topk(p / Exp(1))``)."""

    follows_schedule = True

    def __init__(self, alg_temp: float = 0.0) -> None:
        if not (isinstance(alg_temp, (int, float)) and math.isfinite(alg_temp) and alg_temp >= 0):
            raise ValueError(f"{self.name}: alg_temp must be a finite number >= 0 (0: deterministic), got {alg_temp!r}")
        self.alg_temp = float(alg_temp)
        if self.alg_temp > 0:
            self.name = f"{self.name}:alg_temp={self.alg_temp:g}"
            self.stochastic = True

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
