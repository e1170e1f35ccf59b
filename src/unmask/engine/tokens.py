"""Token rules: which token each masked position would receive, and the distribution policies score.

* :class:`GumbelMaxTokens` is LLaDA's ``generate()``: ``x0 = argmax(exp(l) / (-log u) ** T)`` with
  ``u ~ U[0, 1)`` in float64 over (b, L, V) (``add_gumbel_noise``; Gumbel-max at temperature T), and
  confidences from the untempered ``softmax(l)`` (in the logits' dtype as LLaDA; in float64 with
  ``confidence_float64``, as Fast-dLLM's ``get_transfer_index``). ``logits_eos_inf`` bars EOS from being chosen;
  ``confidence_eos_eot_inf`` gives EOT (and, at temperature 0, EOS, since upstream's noised logits are then
  the logits themselves) zero confidence (LLaDA App. B.4).
* :class:`CategoricalTokens` is Dream's ``sample_tokens``: logits / T (T > 0), top-p then top-k filtering,
  ``probs = softmax``; tokens drawn from ``Categorical(probs)`` at T > 0 (``argmax`` otherwise) and
  confidences read from the same tempered, filtered ``probs``.
* :class:`ScheduledTemperatureTokens` is DiffusionGemma's ``generate()`` step on a renoised canvas: logits divided
  by a temperature falling linearly from ``t_max`` to ``t_min`` over the canvas's steps, tokens from
  ``multinomial(softmax)`` at every canvas position, with the argmax and the entropy of the tempered logits.

* :class:`BlockDiffusionTokens` is LLaDA2's ``_sample_with_temperature_topk_topp``: argmax of ``softmax(l)`` at
  temperature 0 (no filtering), else logits / T, top-k then top-p, ``multinomial`` over the result, drawn for every
  position of the row's current block at every step (given and revealed ones included), as LLaDA2 draws.

``prepare(logits, draws)`` returns ``(probs, tokens, confidence)`` position by position, so the engine may run
it on a forward's window alone (:mod:`unmask.engine.cache`): eager rules give tokens and confidences for every
position; lazy ones (Dream) give None for both, and ``choose(probs, draws, block_start=...)`` (``block_start``: each
row's current block's first generation position, for rules that draw per block) gives a token choice ``choose(where)``
that draws only where asked (None for eager rules).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from unmask.engine.streams import Draws

Choose = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class GumbelMaxTokens:
    """LLaDA ``generate()`` token choice (``temperature``, ``logits_eos_inf``, ``confidence_eos_eot_inf``)."""

    temperature: float = 0.0
    logits_eos_inf: bool = False
    confidence_eos_eot_inf: bool = False
    eos_token_id: int | None = None
    eot_token_id: int | None = None
    confidence_float64: bool = False  # Fast-dLLM get_transfer_index: softmax(logits.to(float64))

    def prepare(self, logits: torch.Tensor, draws: Draws):
        if self.logits_eos_inf:
            logits[..., self.eos_token_id] = float("-inf")
        if self.temperature == 0:
            tokens = logits.argmax(-1)
        else:
            u = draws.uniform(logits.shape[-1], dtype=torch.float64)
            tokens = (logits.double().exp() / (-torch.log(u)) ** self.temperature).argmax(-1)
        if self.confidence_eos_eot_inf:
            logits[..., self.eot_token_id] = float("-inf")
            if self.temperature == 0:
                logits[..., self.eos_token_id] = float("-inf")
        probs = logits.softmax(-1)
        if self.confidence_float64:
            confidence = float64_confidence(logits, tokens)
        else:
            confidence = probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        return probs, tokens, confidence

    def choose(self, probs: torch.Tensor, draws: Draws, *, block_start: torch.Tensor | None = None) -> None:
        """Tokens and confidences come from :meth:`prepare`."""
        return None


def float64_confidence(logits: torch.Tensor, tokens: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    """``softmax(logits.double()).gather(tokens)`` (Fast-dLLM ``get_transfer_index``), ``chunk`` positions at a
    time: softmax is computed per position, so the values are the same bit for bit, and the float64 copy stays
    small instead of twice the logits' size (on CPU a full (b, L, V) float64 softmax took ~3x as long)."""
    flat, index = logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1, 1)
    confidence = torch.empty(index.shape, dtype=torch.float64, device=logits.device)
    for i in range(0, len(flat), chunk):
        confidence[i : i + chunk] = flat[i : i + chunk].double().softmax(-1).gather(-1, index[i : i + chunk])
    return confidence.view(tokens.shape)


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering as Dream's ``top_p_logits``: keep the most probable tokens until their cumulative
    probability exceeds ``top_p`` (the first always kept); the rest get the dtype's lowest value."""
    sorted_logits, order = logits.sort(-1, descending=True)
    beyond = sorted_logits.softmax(-1).cumsum(-1) > top_p
    drop = torch.zeros_like(beyond)
    drop[..., 1:] = beyond[..., :-1]
    return logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), torch.finfo(logits.dtype).min)


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the ``top_k`` largest logits (and ties), as Dream's ``top_k_logits``."""
    kth = logits.topk(min(top_k, logits.shape[-1]), -1).values[..., -1:]
    return logits.masked_fill(logits < kth, torch.finfo(logits.dtype).min)


@dataclass
class CategoricalTokens:
    """Dream ``diffusion_generate()`` token choice (``temperature``, ``top_p``, ``top_k``)."""

    temperature: float = 0.0
    top_p: float | None = None
    top_k: int | None = None

    def prepare(self, logits: torch.Tensor, draws: Draws):
        if self.temperature > 0:
            logits = logits / self.temperature
        if self.top_p is not None and self.top_p < 1:
            logits = top_p_filter(logits, self.top_p)
        if self.top_k is not None:
            logits = top_k_filter(logits, self.top_k)
        return logits.softmax(-1), None, None

    def choose(self, probs: torch.Tensor, draws: Draws, *, block_start: torch.Tensor | None = None) -> Choose:
        """Draw the tokens of the positions ``where`` (b, Lg) from ``probs`` (b, Lg, V), as Dream does: argmax at
        temperature 0, else ``Categorical(probs)`` (its ``multinomial``). ``block_start``: unused (block rules)."""

        def choose(where: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            p = probs[where]
            if self.temperature == 0:
                confidence, tokens = p.max(-1)
                return tokens, confidence
            tokens = multinomial(p, draws.exponential_at(where, p.shape[-1], dtype=p.dtype))
            return tokens, p.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)

        return choose


@dataclass
class BlockDiffusionTokens(CategoricalTokens):
    """LLaDA2 ``generate()`` token choice: untempered, unfiltered ``softmax`` at temperature 0; else top-k before
    top-p (Dream filters top-p first) and one ``multinomial`` draw per position of the current block of
    ``block_length`` (``torch.multinomial(p, 1)`` is ``argmax(p / Exp(1))`` over the block's (B, V) draws)."""

    block_length: int = 1

    def choose(self, probs: torch.Tensor, draws: Draws, *, block_start: torch.Tensor | None = None) -> Choose:
        """At temperature > 0, tokens of the current block (from ``block_start`` (b,), generation positions, the
        first block's may be negative: its prompt part) drawn as LLaDA2 draws them; other masked positions (later
        blocks, never revealed this step) get the argmax."""
        if self.temperature == 0 or block_start is None:
            return super().choose(probs, draws)
        b, Lg, V = probs.shape
        span = block_start[:, None] + torch.arange(self.block_length, device=probs.device)  # (b, B) positions
        inside = (span >= 0) & (span < Lg)
        at = span.clamp(0, Lg - 1)
        q = draws.exponential_rows(self.block_length, V, dtype=probs.dtype)
        drawn = (probs.gather(1, at[..., None].expand(-1, -1, V)) / q).argmax(-1)
        tokens = probs.argmax(-1)
        rows = torch.arange(b, device=probs.device)[:, None].expand_as(at)
        tokens[rows[inside], at[inside]] = drawn[inside]

        def choose(where: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            chosen = tokens[where]
            return chosen, probs[where].gather(-1, chosen.unsqueeze(-1)).squeeze(-1)

        return choose

    def prepare(self, logits: torch.Tensor, draws: Draws):
        if self.temperature > 0:
            logits = logits / self.temperature
            if self.top_k is not None:
                logits = top_k_filter(logits, self.top_k)
            if self.top_p is not None and self.top_p < 1:
                logits = top_p_filter(logits, self.top_p)
        return logits.softmax(-1), None, None


def multinomial(probs: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``torch.multinomial(probs, 1)`` over the last dimension given its ``Exp(1)`` draws ``q`` (same shape): the
    argmax of ``p / sum(p) / q``, the numbers torch's own kernel draws and compares."""
    return (probs / probs.sum(-1, keepdim=True) / q).argmax(-1)


@dataclass
class ScheduledTemperatureTokens:
    """DiffusionGemma ``generate()`` (``LinearTemperatureScheduleLogitsProcessor``, then ``multinomial``): at step j
    of a canvas of ``steps`` steps the logits are divided by ``t_min + (t_max - t_min) (steps - j) / steps``."""

    t_min: float
    t_max: float
    steps: int

    def prepare(self, logits: torch.Tensor, draws: Draws, block_step: torch.Tensor) -> dict[str, torch.Tensor]:
        """For logits (b, C, V) at each row's ``block_step`` (b,): the tempered ``logits``, ``probs``, a drawn token
        per position (``tokens``, with its probability ``confidence``), the ``argmax`` and the ``entropy``."""
        remaining = (self.steps - block_step).to(torch.int32)  # generate()'s cur_step, counting down
        temperature = self.t_min + (self.t_max - self.t_min) * (remaining / self.steps)
        tempered = logits / temperature[:, None, None].to(logits.dtype)
        probs = torch.softmax(tempered, dim=-1, dtype=torch.float32)
        tokens = multinomial(probs, draws.exponential_rows(*probs.shape[1:], dtype=probs.dtype))
        return {
            "logits": tempered,
            "probs": probs,
            "tokens": tokens,
            "confidence": probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1),
            "argmax": tempered.argmax(-1),
            "entropy": torch.distributions.Categorical(logits=tempered, validate_args=False).entropy(),
        }
