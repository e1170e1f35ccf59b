"""A planner that sees the whole answer: a learned residual over the scorer, read from every position at once.

The scorers of both papers rank a position by its own marginal (UPO's g_phi adds the MDM's features, Jazbec's
f_phi one attention layer over confidences). What decides whether a position's predicted token is right is
mostly what the *other* positions predict: two cells of a sudoku unit that both want a digit, or the only cell
of a unit that still can take it. The planner reads that directly, without being told the task's rules:

    r_psi(x_n)_i = MLP / Transformer( f_i ),   f_i = [log p_i(t_i), margin_i, entropy_i, c_i, masked_i,
                                                      allowed_i, t, s^1_i .. s^C_i, w^1_i .. w^C_i]

where t_i is the token position i would receive, c_i the confidence the policy reads (through its coupling,
:mod:`unmask.policies.coupling`, where it has one) and, per learned channel c (``pair_channels``),

    s^c_i = sum_{j masked} W^c_ij p_j(t_i),      w^c_i = sum_{j written} W^c_ij [x_j = t_i]

how strongly the positions related to i by W^c (learned, L x L: rows, columns, boxes or carries are found by
training) want, or already hold, the token i would receive. With ``planner_layers`` > 0 the per-position
features pass through a small bidirectional transformer with learned position embeddings (the Gt-Margin
planner of Asano et al., arXiv 2602.09501, §3.2) before the head; with 0 an MLP scores each position. The head
is zero-initialised, so an untrained planner adds nothing and the policy starts as its scorer ("start as the
reference"). It is trained by imitation of the ground-truth oracles (:mod:`unmask.training.imitation`), then GRPO.
Like the coupling, it needs a fixed answer layout (its W and position embeddings span the generation region).
"""

from __future__ import annotations

import torch
from torch import nn

BASE_FEATURES = 7


def pair_inputs(token_probs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """M (n, L_j, L_i) = p_j(t_i): position j's probability of the token position i would receive (a written j:
    1 where it holds t_i)."""
    n, length, _ = token_probs.shape
    return token_probs.gather(-1, tokens[:, None, :].expand(n, length, length))


class Planner(nn.Module):
    """r_psi over ``length`` positions (see the module docstring)."""

    def __init__(self, length: int, channels: int, layers: int, d_model: int, n_head: int) -> None:
        super().__init__()
        if length < 1:
            raise ValueError(f"a planner needs the generation length (>= 1 positions), got {length}")
        self.length, self.channels = length, channels
        self.pair = nn.Parameter(torch.randn(channels, length, length) * 0.1) if channels else None
        self.inp = nn.Sequential(
            nn.Linear(BASE_FEATURES + 2 * channels, d_model), nn.GELU(), nn.Linear(d_model, d_model)
        )
        self.position = nn.Parameter(torch.zeros(length, d_model)) if layers else None
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d_model, n_head, 2 * d_model, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(layers)
        )
        self.head = nn.Sequential(nn.GELU(), nn.Linear(d_model, d_model), nn.GELU(), nn.Linear(d_model, 1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def features(self, obs: dict[str, torch.Tensor], confidence: torch.Tensor) -> torch.Tensor:
        """f (n, L, F) from the observation's ``token_probs``, ``tokens``, ``masked``, ``allowed`` and the
        ``confidence`` (n, L) the policy reads (logs or probabilities)."""
        probs, tokens, masked = obs["token_probs"], obs["tokens"], obs["masked"]
        if probs.shape[1] != self.length:
            raise ValueError(
                f"the planner was learned over {self.length} generated positions; this generation "
                f"region has {probs.shape[1]}. Train a policy for this layout"
            )
        log_p = probs.clamp_min(1e-12).log()
        top2 = probs.topk(min(2, probs.shape[-1]), dim=-1).values
        margin = top2[..., 0] - (top2[..., 1] if top2.shape[-1] > 1 else 0)
        entropy = -(probs * log_p).sum(-1)
        m = masked.float()
        time = m.mean(1, keepdim=True).expand_as(m)
        own = log_p.gather(-1, tokens[..., None]).squeeze(-1)
        parts = [own * m, margin * m, entropy * m, confidence.float() * m, m, obs["allowed"].float(), time]
        f = torch.stack(parts, -1)
        if self.pair is not None:
            pairs = pair_inputs(probs, tokens)  # (n, j, i)
            wanted = torch.einsum("cij,nji->nic", self.pair, pairs * m[:, :, None])
            held = torch.einsum("cij,nji->nic", self.pair, pairs * (1 - m)[:, :, None])
            f = torch.cat([f, wanted, held], -1)
        return f

    def forward(self, obs: dict[str, torch.Tensor], confidence: torch.Tensor) -> torch.Tensor:
        """The residual r_psi (n, L) added to the scorer's logits."""
        h = self.inp(self.features(obs, confidence))
        if self.position is not None:
            h = h + self.position
        for layer in self.layers:
            h = layer(h)
        return self.head(h).squeeze(-1)
