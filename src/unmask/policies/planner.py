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
training) want, or already hold, the token i would receive. With ``cliques`` (``planner_pairs="cliques"``) the
pairwise inputs are instead read per clique k of the policy's frozen coupling graph {A_ij > threshold}
(:func:`cliques`: on sudoku9 the rows, columns and boxes, found by the coupling, not written in):

    s_ki = sum_{j in k masked, j != i} p_j(t_i),      w_ki = sum_{j in k written} [x_j = t_i],

each position's values over the cliques holding it sorted descending and kept for ``slots`` cliques (the MLP
then reads "the unit where the token is least wanted elsewhere" directly; docs/imitation.md). With
``planner_layers`` > 0 the per-position
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
INPUTS = ("token_probs", "tokens", "masked", "allowed")  # what the planner reads of an observation


MAX_CLIQUES_PER_POSITION = 16  # beyond this the graph is no set of units (sudoku: 3 per cell)


def cliques(strength: torch.Tensor, threshold: float, min_size: int) -> torch.Tensor:
    """(K, L) membership of the maximal cliques of the graph {A_ij > ``threshold``} over the L positions with at
    least ``min_size`` positions, sorted (Bron-Kerbosch with pivoting, Tomita et al. 2006): the units a coupling's
    strength A (:attr:`unmask.policies.coupling.MeanFieldCoupling.strength`) found, read without a task rule. A
    graph with more than ``MAX_CLIQUES_PER_POSITION`` cliques through a position is refused (a dense coupling, e.g.
    zebra's at 0.3: thousands of overlapping cliques, no units)."""
    graph = {i: set(torch.nonzero(strength[i] > threshold).flatten().tolist()) - {i} for i in range(len(strength))}
    found: list[set[int]] = []
    not_units = (
        f"the coupling graph {{A_ij > {threshold:g}}} over {len(strength)} positions holds %s: it is no set of units "
        "(rows, columns, boxes) to read; raise --clique-threshold, or use --planner-pairs learned"
    )

    def extend(r: set[int], p: set[int], x: set[int]) -> None:
        if not p and not x:
            found.append(r)
            if len(found) > MAX_CLIQUES_PER_POSITION * len(strength):  # a dense graph: stop before it explodes
                raise ValueError(not_units % f"more than {len(found) - 1} maximal cliques")
            return
        pivot = max(p | x, key=lambda v: len(graph[v] & p))
        for v in list(p - graph[pivot]):
            extend(r | {v}, p & graph[v], x & graph[v])
            p, x = p - {v}, x | {v}

    extend(set(), set(graph), set())
    keep = sorted(sorted(c) for c in found if len(c) >= min_size)
    if not keep:
        largest = max(map(len, found))
        raise ValueError(
            f"the coupling graph {{A_ij > {threshold:g}}} has no clique of >= {min_size} positions (the largest "
            f"has {largest}): lower --clique-threshold or --clique-min-size"
        )
    members = torch.zeros(len(keep), len(strength))
    for k, c in enumerate(keep):
        members[k, c] = 1.0
    if members.sum(0).max() > MAX_CLIQUES_PER_POSITION:
        raise ValueError(not_units % f"{len(keep)} cliques, {int(members.sum(0).max())} of them through one position")
    return members


def pair_inputs(token_probs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """M (n, L_j, L_i) = p_j(t_i): position j's probability of the token position i would receive (a written j:
    1 where it holds t_i)."""
    n, length, _ = token_probs.shape
    return token_probs.gather(-1, tokens[:, None, :].expand(n, length, length))


class Planner(nn.Module):
    """r_psi over ``length`` positions (see the module docstring); ``cliques``: a (K, L) membership
    (:func:`cliques`) whose per-clique sums, ``slots`` per position, are inputs too (a buffer: saved with the
    weights)."""

    def __init__(
        self,
        length: int,
        channels: int,
        layers: int,
        d_model: int,
        n_head: int,
        cliques: torch.Tensor | None = None,
        slots: int = 0,
    ) -> None:
        super().__init__()
        if length < 1:
            raise ValueError(f"a planner needs the generation length (>= 1 positions), got {length}")
        self.length, self.channels, self.slots = length, channels, slots if cliques is not None else 0
        self.pair = nn.Parameter(torch.randn(channels, length, length) * 0.1) if channels else None
        self.register_buffer("cliques", cliques)
        self.inp = nn.Sequential(
            nn.Linear(BASE_FEATURES + 2 * channels + 2 * self.slots, d_model), nn.GELU(), nn.Linear(d_model, d_model)
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
        if self.pair is None and self.cliques is None:
            return f
        pairs = pair_inputs(probs, tokens)  # (n, j, i)
        if self.pair is not None:
            wanted = torch.einsum("cij,nji->nic", self.pair, pairs * m[:, :, None])
            held = torch.einsum("cij,nji->nic", self.pair, pairs * (1 - m)[:, :, None])
            f = torch.cat([f, wanted, held], -1)
        if self.cliques is not None:
            f = torch.cat([f, self.clique_features(pairs, m)], -1)
        return f

    def clique_features(self, pairs: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """(n, L, 2 slots): s_ki (j != i) then w_ki over the cliques k holding i, each sorted descending, the first
        ``slots`` (zero where i is in fewer cliques, and at written positions)."""
        members = self.cliques
        own = pairs.diagonal(dim1=1, dim2=2)  # p_i(t_i)
        wanted = torch.einsum("kj,nji->nki", members, pairs * m[:, :, None]) - members * (own * m)[:, None]
        held = torch.einsum("kj,nji->nki", members, pairs * (1 - m)[:, :, None])
        holds = members.bool()[None].expand_as(wanted)
        pooled = [
            x.masked_fill(~holds, float("-inf")).sort(1, descending=True).values[:, : self.slots]
            for x in (wanted, held)
        ]
        extra = torch.cat(pooled, 1).transpose(1, 2)
        return extra.masked_fill(extra.isinf(), 0.0) * m[..., None]

    def forward(self, obs: dict[str, torch.Tensor], confidence: torch.Tensor) -> torch.Tensor:
        """The residual r_psi (n, L) added to the scorer's logits."""
        h = self.inp(self.features(obs, confidence))
        if self.position is not None:
            h = h + self.position
        for layer in self.layers:
            h = layer(h)
        return self.head(h).squeeze(-1)
