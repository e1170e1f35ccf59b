"""Scorers of learned policies: the network that maps one engine step to a logit per position.

A scorer reads its observation of a :class:`~unmask.engine.state.StepState` (:meth:`Scorer.observe`,
what UPO's Algorithm 2 stores per step) and returns logits (n, L) and a pooled state (n, d) or None.
The confidences it reads come from the policy: the MDM's p_i(token_i), or q_i(token_i) refined by a
learned coupling (:mod:`unmask.policies.coupling`). Two scorers:

* :class:`UPOScorer`: UPO's g_phi (§3.3, App. B.1, Fig. 2). It reads the frozen MDM's features H_n, refines
  them with a one-layer transformer (phi_TF), concatenates the Top-K token probabilities of each position
  (Eq. 21) and maps the result through a 3-layer MLP (phi_MLP) to h_phi. Following "start as the
  reference", the score is ``log(confidence) / tau0`` plus that residual, whose last layer is
  zero-initialised, so an untrained policy already is the softmax-confidence reference (``tau0=None`` drops
  the base term: then an untrained Top-K policy is uniform over the Top-K set, as in the paper).
* :class:`unmask.policies.confidence_net.ConfidenceNet`: Jazbec's confidence-only f_phi (§3.2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unmask.engine.state import StepState
from unmask.models.base import MaskedDiffusionModel
from unmask.policies.base import top_k_mask
from unmask.policies.configs import UPOConfig


class Scorer(nn.Module):
    """The interface of a policy's scorer (see the module docstring)."""

    needs_hidden: bool = False  # reads the MDM's hidden features
    reads_log_confidence: bool = False  # :meth:`forward` takes log-confidences
    conditioned: bool = False  # reads the speed weight alpha (``obs["alpha"]``)

    def observe(self, state: StepState) -> dict[str, torch.Tensor]:
        """The step's inputs the scorer reads, with ``confidence`` (n, L) and ``allowed`` (n, L): the
        positions the action may choose."""
        raise NotImplementedError

    def forward(
        self, obs: dict[str, torch.Tensor], confidence: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (n, L) and a pooled state (n, d) or None from ``obs`` and the ``confidence`` it reads."""
        raise NotImplementedError

    def check_model(self, model: MaskedDiffusionModel) -> None:
        """Raise when ``model``'s outputs do not fit the scorer's inputs; confidences fit every MDM."""


class UPOScorer(Scorer):
    """UPO's g_phi (Fig. 2) over the MDM's features; ``config.top_k`` restricts the action to the K most
    confident candidates (the Top-K realisation, Eq. 27)."""

    needs_hidden = True
    reads_log_confidence = True

    def __init__(self, config: UPOConfig) -> None:
        super().__init__()
        self.config = c = config
        self.inp = nn.Linear(c.feature_size, c.d_model)
        self.tf = nn.TransformerEncoderLayer(
            c.d_model, c.n_head, 4 * c.d_model, dropout=0.0, batch_first=True, norm_first=True
        )
        self.mlp = nn.Sequential(
            nn.Linear(c.d_model + c.prob_features, c.mlp_hidden),
            nn.GELU(),
            nn.Linear(c.mlp_hidden, c.mlp_hidden),
            nn.GELU(),
            nn.Linear(c.mlp_hidden, 1),
        )
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def observe(self, state: StepState) -> dict[str, torch.Tensor]:
        if state.hidden is None:
            raise ValueError("UPO policy needs the MDM's hidden features; the model returned none")
        if state.hidden.shape[-1] != self.config.feature_size:
            raise ValueError(
                f"UPO policy was trained on features of size {self.config.feature_size} "
                f"(MDM {self.config.mdm_name!r}), this MDM gives {state.hidden.shape[-1]}; use a policy trained for this model"
            )
        k = self.config.prob_features
        top = state.probs.topk(min(k, state.probs.shape[-1]), dim=-1).values
        if top.shape[-1] < k:
            top = F.pad(top, (0, k - top.shape[-1]))
        allowed = state.candidates
        if self.config.top_k is not None:
            allowed = top_k_mask(state.confidence, allowed, torch.full_like(state.num_transfer, self.config.top_k))
        return {"hidden": state.hidden.float(), "top_probs": top, "confidence": state.confidence, "allowed": allowed}

    def forward(self, obs: dict[str, torch.Tensor], confidence: torch.Tensor) -> tuple[torch.Tensor, None]:
        """h_phi(x_n) per position (n, L), plus log(confidence) / tau0 (UPO Eq. 20 with the reference's base
        score); -inf outside the allowed set."""
        s = self.mlp(torch.cat([self.tf(self.inp(obs["hidden"])), obs["top_probs"]], -1)).squeeze(-1)
        if self.config.base_temperature is not None:
            s = s + confidence / self.config.base_temperature
        return s.masked_fill(~obs["allowed"], float("-inf")), None

    def check_model(self, model: MaskedDiffusionModel) -> None:
        c = self.config
        if (model.vocab_size, model.hidden_size, model.mask_id) != (c.mdm_vocab_size, c.feature_size, c.mdm_mask_id):
            raise ValueError(
                f"policy was trained with MDM {c.mdm_name!r} (vocab {c.mdm_vocab_size}, features {c.feature_size}, "
                f"mask id {c.mdm_mask_id}); model {model.name!r} has vocab {model.vocab_size}, features "
                f"{model.hidden_size}, mask id {model.mask_id}. Evaluate it with --model {c.mdm_name} or train one for this model"
            )
