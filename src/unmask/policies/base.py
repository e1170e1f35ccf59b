"""The unmasking-policy interface (UPO §3.1, Jazbec §2).

A policy looks at one engine step (:class:`unmask.engine.StepState`) and
returns which masked positions of the current block to reveal: a bool mask
(b, Lg) with at least one position per row. Heuristics rank positions by a
score; learned policies (:mod:`unmask.policies.learned`) also return, when the
engine records a trajectory, what their RL update needs (UPO Algorithm 2).
"""

from __future__ import annotations

import torch

from unmask.engine import StepState


class Policy:
    """Base class; subclasses implement :meth:`select`."""

    name: str = "policy"
    needs_hidden: bool = False  # ask the MDM for hidden features (UPO's g_phi does)
    stochastic: bool = False  # whether repeated runs can differ (pass@N makes sense)

    def select(self, state: StepState) -> torch.Tensor:
        raise NotImplementedError

    def act(self, state: StepState, record: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The reveal mask and, when ``record``, the tensors to store for training."""
        return self.select(state), {}


def top_k_mask(scores: torch.Tensor, allowed: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Per row, the ``k[i]`` highest ``scores`` among ``allowed`` positions (ties: lowest index)."""
    s = scores.masked_fill(~allowed, float("-inf"))
    kmax = int(k.max())
    idx = s.topk(kmax, dim=1, sorted=True).indices
    keep = torch.arange(kmax, device=s.device)[None, :] < k[:, None]
    return torch.zeros_like(allowed).scatter(1, idx, keep) & allowed


class ScorePolicy(Policy):
    """Reveal the ``num_transfer`` highest-scoring candidates (LLaDA's ``remasking``, Dream's ``alg``)."""

    def score(self, state: StepState) -> torch.Tensor:
        raise NotImplementedError

    def select(self, state: StepState) -> torch.Tensor:
        return top_k_mask(self.score(state), state.candidates, state.num_transfer)
