"""Reference policies g_ref and their regularisers (UPO Table 1, App. B.1).

* ``confidence``: g_conf (Eq. 28) is deterministic, so the regulariser is the
  cross-entropy CE(g_conf || g_phi) (Eq. 29), beta = 0.05.
* ``softmax``: g_conf^tau ∝ exp(confidence / tau) (Eq. 25), tau = 0.05, with the
  trajectory KL surrogate L_KL (Eq. 24), beta = 1e-4.
* ``topk``: g_Top-K uniform over the K most confident masked positions (Eq. 26),
  K = 5; g_phi is restricted to the same set (Eq. 27); L_KL with beta = 1e-3.
* ``none``: no regulariser (the DCOLT-like ablation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unmask.policies.distributions import ordered_top_k, plackett_luce_log_prob

DEFAULT_BETA = {"confidence": 0.05, "softmax": 1e-4, "topk": 1e-3, "none": 0.0}


@dataclass
class Reference:
    kind: str = "confidence"
    beta: float | None = None  # None: the paper's default for the kind
    temperature: float = 0.05  # tau of g_conf^tau
    k: int = 5  # K of g_Top-K

    def __post_init__(self) -> None:
        if self.kind not in DEFAULT_BETA:
            raise ValueError(f"unknown reference {self.kind!r}; valid: {', '.join(DEFAULT_BETA)}")
        if self.beta is None:
            self.beta = DEFAULT_BETA[self.kind]
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if self.temperature <= 0:
            raise ValueError(f"reference temperature must be > 0, got {self.temperature}")

    @property
    def divergence(self) -> str | None:
        """``"ce"``, ``"kl"`` or None."""
        if self.kind == "none" or self.beta == 0:
            return None
        return "ce" if self.kind == "confidence" else "kl"

    def policy_kwargs(self) -> dict:
        """How g_phi is parametrised for this reference (Table 1, 'Parametrization')."""
        return {"top_k": self.k} if self.kind == "topk" else {}

    def confidence_action(self, obs: dict[str, torch.Tensor], action: torch.Tensor) -> torch.Tensor:
        """g_conf's choice in the recorded state: the most confident allowed positions, as many as ``action``."""
        k = (action >= 0).sum(1)
        order = ordered_top_k(obs["confidence"], obs["allowed"], k)
        return (
            order[:, : action.shape[1]]
            if order.shape[1] >= action.shape[1]
            else torch.nn.functional.pad(order, (0, action.shape[1] - order.shape[1]), value=-1)
        )

    def log_prob(self, obs: dict[str, torch.Tensor], action: torch.Tensor) -> torch.Tensor:
        """log g_ref(a_n | x_n) for the KL references."""
        if self.kind == "softmax":
            scores = obs["confidence"] / self.temperature
        elif self.kind == "topk":
            scores = torch.zeros_like(obs["confidence"])
        else:
            raise ValueError(f"reference {self.kind!r} has no log-probability (it uses {self.divergence})")
        return plackett_luce_log_prob(scores, obs["allowed"], action)
