"""Action distributions of learned unmasking policies, with exact log-probabilities for GRPO.

Every action is an index tensor (n, k) of chosen positions, ``-1`` padded, so rollout
buffers store all policies alike:

* **Plackett-Luce, fixed count** (UPO Eq. 9/20; ``k`` from the engine's schedule): an
  ordered draw of k positions without replacement from softmax(scores).
* **Bernoulli** (Jazbec §3.2): an independent draw u_i ~ Bernoulli(sigmoid(b_i / tau_pi))
  per allowed position; the action is the sampled set in position order, possibly empty
  (the engine's fallback then reveals the most confident position, a deterministic
  function of the state, so log P(action) is the all-zeros probability).
* **Plackett-Luce with STOP** (Jazbec's dynamic Plackett-Luce sampler): a first position
  drawn from softmax(scores) over the allowed set (so at least one is revealed), then
  draws without replacement from the remaining positions plus a STOP item until STOP.
  Scores carry the STOP utility as their last column.

:class:`PlackettLuce` and :class:`Bernoulli` bundle each family's draw, log-probability, entropy and
encoding for :class:`unmask.policies.learned.LearnedPolicy`; every draw is the mode of the distribution
when no random draws are given (greedy decoding).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from unmask.engine.streams import Draws

Draw = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def plackett_luce_log_prob(scores: torch.Tensor, allowed: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """log P(order) of drawing ``order`` (n, k; -1 = no draw) without replacement from softmax(scores) over ``allowed``."""
    s = scores.masked_fill(~allowed, float("-inf"))
    remaining = allowed.clone()
    total = torch.zeros(scores.shape[0], device=scores.device)
    for j in range(order.shape[1]):
        idx = order[:, j]
        valid = idx >= 0
        safe = idx.clamp(min=0)
        logz = s.masked_fill(~remaining, float("-inf")).logsumexp(1)
        step = s.gather(1, safe[:, None]).squeeze(1) - logz
        total = total + torch.where(valid, step, torch.zeros_like(step))
        remaining = remaining & ~F.one_hot(safe, scores.shape[1]).bool().logical_and(valid[:, None])
    return total


def gumbel_top_k(scores: torch.Tensor, allowed: torch.Tensor, k: torch.Tensor, draws: Draws) -> torch.Tensor:
    """Ordered draw without replacement (Plackett-Luce) of k[i] positions per row: (n, max k), -1 padded."""
    u = draws.uniform_rows(*scores.shape[1:]).clamp_min(1e-20)
    perturbed = scores.masked_fill(~allowed, float("-inf")) - torch.log(-torch.log(u))
    return ordered_top_k(perturbed, allowed, k)


def ordered_top_k(scores: torch.Tensor, allowed: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The k[i] highest-scoring allowed positions per row, best first: (n, max k), -1 padded."""
    kmax = int(k.max())
    idx = scores.masked_fill(~allowed, float("-inf")).topk(kmax, dim=1).indices
    keep = torch.arange(kmax, device=scores.device)[None, :] < torch.minimum(k, allowed.sum(1))[:, None]
    return torch.where(keep, idx, torch.full_like(idx, -1))


def order_to_mask(order: torch.Tensor, length: int) -> torch.Tensor:
    """Bool (n, length) mask of the positions named in ``order`` (-1 entries ignored)."""
    mask = torch.zeros(order.shape[0], length + 1, dtype=torch.bool, device=order.device)
    mask.scatter_(1, torch.where(order >= 0, order, torch.full_like(order, length)), True)
    return mask[:, :length]


def mask_to_order(mask: torch.Tensor) -> torch.Tensor:
    """The positions of ``mask`` (n, L) in increasing order: (n, max(1, max count)), -1 padded."""
    n, length = mask.shape
    width = max(1, int(mask.sum(1).max()))
    positions = torch.arange(length, device=mask.device).expand(n, length)
    idx = torch.where(mask, positions, torch.full_like(positions, length)).sort(1).values[:, :width]
    return torch.where(idx < length, idx, torch.full_like(idx, -1))


def trim(order: torch.Tensor) -> torch.Tensor:
    """Drop the all-padding columns at the end of an action (at least one column stays)."""
    return order[:, : max(1, int((order >= 0).sum(1).max()))]


# ----- Bernoulli (Jazbec §3.2) -----
def bernoulli_draw(logits: torch.Tensor, allowed: torch.Tensor, draws: Draws) -> torch.Tensor:
    """u_i ~ Bernoulli(sigmoid(logits_i)) on allowed positions, as an action (possibly empty)."""
    u = draws.uniform_rows(*logits.shape[1:]) < logits.sigmoid()
    return mask_to_order(u & allowed)


def bernoulli_log_prob(logits: torch.Tensor, allowed: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """log P(u) = sum over allowed i of u_i log sigmoid(b_i) + (1 - u_i) log sigmoid(-b_i)."""
    u = order_to_mask(action, logits.shape[1])
    per = torch.where(u, F.logsigmoid(logits), F.logsigmoid(-logits))
    return torch.where(allowed, per, torch.zeros_like(per)).sum(1)


def bernoulli_entropy(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Entropy of the set distribution: the sum of the per-position binary entropies."""
    p = logits.sigmoid()
    h = -(p * F.logsigmoid(logits) + (1 - p) * F.logsigmoid(-logits))
    return torch.where(allowed, h, torch.zeros_like(h)).sum(1)


# ----- Plackett-Luce with a STOP item (Jazbec's dynamic Plackett-Luce) -----
def _with_stop(allowed: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """Positions left after the first draw, plus the STOP item (last column)."""
    left = allowed & ~order_to_mask(first, allowed.shape[1])
    return torch.cat([left, torch.ones_like(left[:, :1])], 1)


def stop_order(scores: torch.Tensor, allowed: torch.Tensor, draw: Draw) -> torch.Tensor:
    """Draw an ordered non-empty subset: a forced first position, then positions until STOP.

    ``scores`` (n, L + 1) hold the STOP utility last; ``draw(scores, allowed, k)`` is
    :func:`ordered_top_k` (the mode of each draw) or a :func:`gumbel_top_k` sampler.
    """
    length = scores.shape[1] - 1
    first = draw(scores[:, :length], allowed, torch.ones(scores.shape[0], dtype=torch.long, device=scores.device))
    rest_allowed = _with_stop(allowed, first)
    rest = draw(scores, rest_allowed, rest_allowed.sum(1))
    before_stop = (rest == length).long().cumsum(1) == 0
    return trim(torch.cat([first, torch.where(before_stop, rest, torch.full_like(rest, -1))], 1))


def stop_log_prob(scores: torch.Tensor, allowed: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """log P(action) under :func:`stop_order`: the first draw over the allowed positions, then
    Plackett-Luce over the rest and STOP, ending with STOP right after the last chosen position."""
    length = scores.shape[1] - 1
    first = action[:, :1]
    count = (action >= 0).sum(1)
    rest = F.pad(action[:, 1:], (0, 1), value=-1).scatter(1, (count - 1).clamp(min=0)[:, None], length)
    return plackett_luce_log_prob(scores[:, :length], allowed, first) + plackett_luce_log_prob(
        scores, _with_stop(allowed, first), rest
    )


def first_draw_entropy(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Entropy of the first position drawn (softmax over the allowed positions)."""
    logp = scores[:, : allowed.shape[1]].masked_fill(~allowed, float("-inf")).log_softmax(-1)
    return -(logp.exp() * logp.masked_fill(~allowed, 0.0)).sum(-1)


# ----- the action distributions of learned policies -----
class ActionDistribution(nn.Module):
    """pi(a | utilities) over the ``allowed`` positions: what a learned policy draws, scores and encodes.
    ``utilities`` (n, L) come from the policy's scorer (plus a STOP column where the distribution has one)."""

    fixed_count: bool = False  # reveals the schedule's count per step; has a noisy mode (UPO App. D)

    def utilities(self, logits: torch.Tensor, pooled: torch.Tensor | None) -> torch.Tensor:
        """The scorer's logits (n, L) and pooled state (n, d) as this distribution's utilities."""
        return logits

    def draw(self, scores: torch.Tensor, allowed: torch.Tensor, k: torch.Tensor, draws: Draws | None) -> torch.Tensor:
        """An action (n, k_max), -1 padded, of ``k`` (n,) positions where the count is fixed; ``draws`` None:
        the mode (greedy decoding)."""
        raise NotImplementedError

    def log_prob(self, scores: torch.Tensor, allowed: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def entropy(self, scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, scores: torch.Tensor, reveal: torch.Tensor) -> torch.Tensor:
        """The action that reveals exactly ``reveal`` (to score another policy's choice, e.g. an expert's)."""
        raise NotImplementedError


class PlackettLuce(ActionDistribution):
    """Ordered draws without replacement from softmax(utilities): ``k`` positions from the engine's schedule
    (UPO Eq. 9/20, one per step in the paper; ``stop=None``), or until a STOP item (Jazbec's dynamic
    Plackett-Luce; ``stop`` a fixed STOP utility, or ``"learned"``: a zero-initialised linear head on the
    scorer's pooled state of width ``d_pooled``)."""

    def __init__(self, stop: float | str | None = None, d_pooled: int = 0) -> None:
        super().__init__()
        self.stops = stop is not None
        self.fixed_count = not self.stops
        self.stop_logit = None if stop in (None, "learned") else float(stop)
        self.stop_head = None
        if stop == "learned":
            self.stop_head = nn.Linear(d_pooled, 1)
            nn.init.zeros_(self.stop_head.weight)
            nn.init.zeros_(self.stop_head.bias)

    def utilities(self, logits: torch.Tensor, pooled: torch.Tensor | None) -> torch.Tensor:
        """The logits, with the STOP utility appended as column L when the distribution stops."""
        if not self.stops:
            return logits
        stop = (
            self.stop_head(pooled) if self.stop_head is not None else logits.new_full((len(logits), 1), self.stop_logit)
        )
        return torch.cat([logits, stop], 1)

    def draw(self, scores: torch.Tensor, allowed: torch.Tensor, k: torch.Tensor, draws: Draws | None) -> torch.Tensor:
        if draws is None:
            rank: Draw = ordered_top_k
        else:

            def rank(s: torch.Tensor, allowed: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
                return gumbel_top_k(s, allowed, k, draws)

        if self.stops:
            return stop_order(scores, allowed, rank)
        return rank(scores, allowed, k)

    def noisy_mode(
        self, scores: torch.Tensor, allowed: torch.Tensor, k: torch.Tensor, draws: Draws, sigma: float
    ) -> torch.Tensor:
        """The k highest of softmax(utilities) + N(0, sigma^2) noise (UPO App. D, multi-shot sampling)."""
        probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
        noisy = probs + draws.normal() * sigma
        return ordered_top_k(noisy.masked_fill(~allowed, float("-inf")), allowed, k)

    def log_prob(self, scores: torch.Tensor, allowed: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        if self.stops:
            return stop_log_prob(scores, allowed, action)
        return plackett_luce_log_prob(scores, allowed, action)

    def entropy(self, scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Entropy of the first draw."""
        return first_draw_entropy(scores, allowed)

    def encode(self, scores: torch.Tensor, reveal: torch.Tensor) -> torch.Tensor:
        """The positions of ``reveal`` in decreasing utility: the most likely order of that set."""
        return ordered_top_k(scores[:, : reveal.shape[1]], reveal, reveal.sum(1))


class Bernoulli(ActionDistribution):
    """Independent reveal decisions u_i ~ Bernoulli(sigmoid(utility_i)) (Jazbec §3.2); the mode reveals the
    positions of positive utility."""

    def draw(self, scores: torch.Tensor, allowed: torch.Tensor, k: torch.Tensor, draws: Draws | None) -> torch.Tensor:
        if draws is None:
            return mask_to_order((scores > 0) & allowed)
        return bernoulli_draw(scores, allowed, draws)

    def log_prob(self, scores: torch.Tensor, allowed: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Exact log P(u) of the drawn set (the empty set when the fallback revealed a position)."""
        return bernoulli_log_prob(scores, allowed, action)

    def entropy(self, scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        return bernoulli_entropy(scores, allowed)

    def encode(self, scores: torch.Tensor, reveal: torch.Tensor) -> torch.Tensor:
        return mask_to_order(reveal)
