"""A learned pairwise coupling between positions that refines the MDM's marginals (beyond UPO and Jazbec).

Max-confidence, and g_phi's ``log(confidence) / tau0`` base score, read each position's marginal
p_theta(x_0 | x_n)_i alone: two cells of a sudoku row that both want the same digit each look safe.
:class:`MeanFieldCoupling` reads them together. It treats the MDM's marginals as unary potentials of a pairwise
model whose potential -A_ij [x_i = x_j] penalises positions i, j taking the same token, and runs ``rounds``
steps of mean-field inference:

    log q_i(v) = log p_i(v) - sum_{j != i} A_ij q_j(v)   (then normalised over v),

starting from q = p. Written positions count as the one-hot of their token. The updates are parallel and
undamped: under a strong coupling two cells that want the same token both drop it in one round and take it
back in the next, so R is best odd (the recipes use 3). A = softplus(W) is symmetric,
non-negative, zero on the diagonal and learned; it starts near 0, so an untrained coupling returns ~p.
A is a matrix over the generation region's positions, so it needs a fixed answer layout (sudoku, zebra grids).

It is learned by :func:`coupling_nll` (the negative log-likelihood of the true tokens at masked positions)
over states of the policy's own rollouts (:mod:`unmask.training.pretrain`); on sudoku it finds the rows, columns
and boxes by itself (``benchmarks/results/upo/README.md``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unmask.engine.state import StepState
from unmask.models.base import MaskedDiffusionModel

MAX_VOCAB = 1024  # policies that read whole distributions (the coupling, UPO's token_probs) stop here


def coupling_observation(state: StepState) -> dict[str, torch.Tensor]:
    """What the coupling reads of a step: every position's distribution (one-hot once written), the mask, the
    tokens the engine would write."""
    return {"token_probs": state.token_probs.float(), "masked": state.masked, "tokens": state.tokens}


def check_vocab(model: MaskedDiffusionModel, what: str, fix: str) -> None:
    """Refuse ``model`` when its vocabulary is too large for a policy that reads whole distributions."""
    if model.vocab_size > MAX_VOCAB:
        raise ValueError(
            f"{what} read all {model.vocab_size} token probabilities of {model.name!r} per position; "
            f"they are meant for vocabularies of at most {MAX_VOCAB} tokens (the built-in models). {fix}"
        )


class MeanFieldCoupling(nn.Module):
    """``rounds`` of mean-field refinement over ``length`` positions (see the module docstring)."""

    def __init__(self, length: int, rounds: int, init: float = -4.0) -> None:
        super().__init__()
        if length < 1 or rounds < 1:
            raise ValueError(f"a coupling needs length >= 1 and rounds >= 1, got length {length}, rounds {rounds}")
        self.rounds = rounds
        self.weight = nn.Parameter(torch.full((length, length), init))

    @property
    def strength(self) -> torch.Tensor:
        """A (L, L): symmetric, non-negative, zero diagonal."""
        w = 0.5 * (self.weight + self.weight.t())
        return F.softplus(w) * (1 - torch.eye(len(w), device=w.device))

    def token_log_prob(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """log q_i(token_i) (n, L) from a policy observation (``token_probs``, ``masked``, ``tokens``)."""
        return self(obs["token_probs"], obs["masked"]).gather(-1, obs["tokens"][..., None]).squeeze(-1)

    def forward(self, probs: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """Refined log-marginals (n, L, V) from ``probs`` (n, L, V: marginals at masked positions, one-hot of
        the written token elsewhere) and ``masked`` (n, L)."""
        if probs.shape[1] != self.weight.shape[0]:
            raise ValueError(
                f"the coupling was learned over {self.weight.shape[0]} generated positions; this "
                f"generation region has {probs.shape[1]}. Train a policy for this layout"
            )
        log_p = probs.clamp_min(1e-12).log()
        a, q, log_q = self.strength, probs, log_p
        for _ in range(self.rounds):
            log_q = (log_p - torch.einsum("ij,njv->niv", a, q)).log_softmax(-1)
            q = torch.where(masked[..., None], log_q.exp(), probs)
        return torch.where(masked[..., None], log_q, log_p)


def coupling_nll(
    coupling: MeanFieldCoupling, probs: torch.Tensor, masked: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """Mean -log q_i(target_i) over the masked positions (``target``: (n, L) true token ids)."""
    log_q = coupling(probs, masked).gather(-1, target[..., None]).squeeze(-1)
    return -(log_q * masked).sum() / masked.sum().clamp(min=1)
