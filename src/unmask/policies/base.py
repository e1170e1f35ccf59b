"""The unmasking-policy interface (UPO §3.1, Jazbec §2).

A policy looks at one engine step (:class:`unmask.engine.StepState`) and
returns which masked positions of the current block to reveal: a bool mask
(b, Lg) with at least one position per row. Heuristics rank positions by a
score; learned policies (:mod:`unmask.policies.learned`) also return, when the
engine records a trajectory, what their RL update needs (UPO Algorithm 2).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from unmask.checkpoint import save_checkpoint
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


class LearnedPolicy(Policy):
    """What trained policies share (mixed into an ``nn.Module`` with a dataclass ``config``):
    a sampling ``mode``, spec options (``PATH:key=value``) and safetensors checkpoints."""

    kind: str = "learned"
    default_mode: str = "greedy"  # how the policy decodes unless told otherwise
    OPTIONS: dict[str, str] = {"mode": "greedy|sample"}

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.mode == "sample"

    def set_option(self, key: str, value: str) -> None:
        """Apply one spec option; ``key`` is one of :attr:`OPTIONS` (subclasses handle theirs first)."""
        if key == "mode" and value in ("greedy", "sample"):
            self.mode = value
            return
        raise ValueError(f"{key} takes {self.OPTIONS.get(key, 'nothing')}, got {value!r}")

    def check_model(self, model) -> None:
        """Raise when ``model``'s outputs do not fit the policy's inputs; confidences fit every MDM."""

    def select(self, state: StepState) -> torch.Tensor:
        return self.act(state)[0]

    def save(self, directory: str | Path, extra: dict | None = None) -> None:
        save_checkpoint(directory, self, {"policy": {"kind": self.kind, **asdict(self.config)}, **(extra or {})})
