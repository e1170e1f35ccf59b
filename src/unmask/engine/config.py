"""Decoding settings (:class:`SamplingConfig`): the upstream loop reproduced and its options.

``SamplingConfig.sampler`` picks the upstream loop being reproduced, as a (count schedule, token rule) pair
(:meth:`SamplingConfig.build`): ``llada`` is LLaDA's ``generate()`` (blocks of ``block_length`` decoded left to right,
``steps`` spread evenly over them with ``get_num_transfer_tokens``, Gumbel-max tokens, untempered confidences,
``cfg_scale``, ``logits_eos_inf``, ``confidence_eos_eot_inf``); ``dream`` is Dream's ``diffusion_generate()``
(linear timesteps down to ``eps``, tempered top-p / top-k categorical tokens and confidences); ``block`` is LLaDA2's
``generate()`` for block-causal models (block diffusion: the model's blocks counted from the sequence start,
``steps`` per block, tempered top-k / top-p tokens, a row ending after the block that holds its first EOS).
``cache`` names the block cache strategy (:data:`unmask.engine.cache.CACHES`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

from unmask.core.config import Config, option
from unmask.engine.cache import CACHES
from unmask.engine.schedules import BlockDiffusionSchedule, BlockSchedule, TimestepSchedule
from unmask.engine.tokens import BlockDiffusionTokens, CategoricalTokens, GumbelMaxTokens
from unmask.models.base import MaskedDiffusionModel

SAMPLERS = ("auto", "llada", "dream", "block")
LLADA_ONLY = ("cfg_scale", "logits_eos_inf", "confidence_eos_eot_inf", "confidence_float64")
# the options each sampler does not have, and the loop that has them
FOREIGN = {
    "llada": (("eps", "top_p", "top_k", "block_eos_stop"), "Dream diffusion_generate() / LLaDA2 generate()"),
    "dream": ((*LLADA_ONLY, "block_length", "block_eos_stop"), "LLaDA generate() / LLaDA2 generate()"),
    "block": ((*LLADA_ONLY, "eps"), "LLaDA generate() / Dream diffusion_generate()"),
}


@dataclass
class SamplingConfig(Config):
    """Decoding settings; names follow LLaDA's ``generate()`` and Dream's ``diffusion_generate()``."""

    COMMON: ClassVar[tuple[str, ...]] = ("steps", "block_length", "temperature", "cache")  # shown by --help

    steps: int | None = option(
        None,
        "total decoding steps (LLaDA steps / Dream steps; block sampler: steps per block, LLaDA2 steps); none: one "
        "token per step (NFE = masks; LLaDA sampler), the block length (block sampler)",
        low=1,
    )
    block_length: int | None = option(
        None,
        "semi-autoregressive block length (LLaDA block_length); none: full diffusion (a single block), or a "
        "block-causal model's own block",
        low=1,
    )
    temperature: float = option(
        0.0, "token sampling temperature (LLaDA add_gumbel_noise, Dream temperature); 0 = argmax", low=0.0
    )
    cache: str = option(
        "none",
        "block key/value cache (Fast-dLLM): prefix keeps the keys/values before the current "
        "block, dual also those after it, from the block's first step; see docs/cache.md; block: the exact cache of "
        "block-causal models (LLaDA2, SDAR): finished blocks' keys/values, see docs/block_diffusion.md",
        choices=tuple(CACHES),
    )
    refine_complete_block: bool = option(
        False,
        "with --cache prefix|dual: when a block's first (full) step reveals "
        "the whole block, run one more cached forward that reveals nothing, as "
        "Fast-dLLM's cached loops do (bit-exact forward counts; +1 NFE per such "
        "block); off: go on to the next block",
    )
    cache_refresh: float | None = option(
        None,
        "with --cache prefix|dual: after a step that reveals at least this share "
        "of the current block's masked positions (per row), that row's next step runs "
        "the full sequence and refreshes its kept keys/values, as a block's first step "
        "does (beyond Fast-dLLM; 0: every step, the tokens of --cache none); none: at "
        "block starts only (Fast-dLLM)",
        low=0.0,
        high=1.0,
    )
    confidence_float64: bool = option(
        False,
        "softmax the confidences in float64, as Fast-dLLM's get_transfer_index "
        "(bit-exact Fast-dLLM tokens); off: in the logits' dtype, as LLaDA generate(), "
        "where confidences within float32's resolution of 1 (~6e-8) tie and the "
        "leftmost wins",
    )
    sampler: str = option(
        "auto",
        "upstream loop to reproduce: llada (LLaDA generate: blocks, Gumbel-max tokens), "
        "dream (Dream diffusion_generate: eps timesteps, tempered top-p/top-k tokens), block (LLaDA2 generate: "
        "block diffusion in the model's blocks), auto: block for block-causal models (LLaDA2), dream for Dream "
        "models (logits shifted by one), else llada",
        choices=SAMPLERS,
    )
    cfg_scale: float = option(
        0.0,
        "classifier-free guidance scale (LLaDA cfg_scale): logits = u + (s + 1)(c - u) "
        "with u from the prompt masked; each step then costs 2 NFE",
        low=0.0,
    )
    logits_eos_inf: bool = option(False, "never choose EOS (LLaDA logits_eos_inf; needs the EOS id)")
    confidence_eos_eot_inf: bool = option(
        False,
        "give EOT (and, at temperature 0, EOS) zero confidence "
        "(LLaDA confidence_eos_eot_inf; needs the EOS and EOT ids)",
    )
    eos_token_id: int | None = option(None, "EOS id for the two options above; none: the model's eos_token_id", low=0)
    eot_token_id: int | None = option(None, "EOT id for confidence_eos_eot_inf; none: the model's eot_token_id", low=0)
    eps: float = option(
        1e-3,
        "last diffusion time of Dream's schedule (timesteps = linspace(1, eps, steps + 1))",
        low=0.0,
        high=1.0,
        low_open=True,
        high_open=True,
    )
    top_p: float | None = option(
        None, "nucleus sampling mass (Dream top_p), in (0, 1]; none: off", low=0.0, high=1.0, low_open=True
    )
    top_k: int | None = option(None, "sample among the top-k tokens (Dream top_k); none: off", low=1)
    block_eos_stop: bool = option(
        True,
        "block sampler: a row stops after the block in which it has an EOS, its later positions filled with EOS "
        "(LLaDA2 generate()); off: every block is decoded",
    )
    suppress_mask_token: bool = option(
        True,
        "set the mask token's logit to -inf (the one intended deviation from "
        "LLaDA / Dream / Fast-dLLM); off: bit-exact parity, but a model that predicts "
        "[MASK] can then stall (an error after max_forwards)",
    )
    max_forwards: int | None = option(
        None,
        "stop with an error when a row needs more forwards (only reachable with "
        "suppress_mask_token off); none: 4 x (positions + steps)",
        low=1,
    )

    def check(self) -> None:
        if self.cache_refresh is not None and self.cache not in ("prefix", "dual"):
            stale = " that go stale (a block-causal model's are exact)" if self.cache == "block" else ""
            raise ValueError(
                f"cache_refresh (--cache-refresh) refreshes kept keys/values, but --cache {self.cache} keeps "
                f"none{stale}; use --cache prefix or --cache dual, or drop --cache-refresh"
            )

    def resolve(self, model: MaskedDiffusionModel) -> str:
        """The sampler for ``model`` ("llada", "dream" or "block"), after checking the options fit it."""
        sampler = self.sampler
        if sampler == "auto":
            sampler = "block" if model.block_length else "dream" if model.logit_shift == 1 else "llada"
        defaults = {f.name: f.default for f in fields(SamplingConfig)}
        foreign, owner = FOREIGN[sampler]
        given = [n for n in foreign if getattr(self, n) != defaults[n]]
        if given:
            raise ValueError(
                f"{', '.join(given)}: option(s) of {owner}, but {model.name} decodes with the {sampler} sampler; "
                f"drop them, or choose the sampler with --sampler ({', '.join(s for s in SAMPLERS if s != sampler)})"
            )
        if model.block_length and sampler != "block":
            raise ValueError(
                f"{model.name} is block-causal (block diffusion, blocks of {model.block_length}): it decodes with "
                "the block sampler; drop --sampler or give --sampler block"
            )
        if sampler == "block":
            if model.block_length and self.block_length not in (None, model.block_length):
                raise ValueError(
                    f"block_length {self.block_length}: {model.name} attends causally across blocks of "
                    f"{model.block_length}, so the engine decodes in those; drop --block-length (or give "
                    f"{model.block_length})"
                )
            if not (model.block_length or self.block_length):
                raise ValueError(f"the block sampler needs block_length for {model.name} (e.g. --block-length 32)")
        if sampler == "dream" and self.steps is None:
            raise ValueError("the dream sampler needs steps (Dream's diffusion_generate steps), e.g. --steps 64")
        if self.cfg_scale > 0 and self.cache != "none":
            raise ValueError(
                "cfg_scale > 0 runs an unconditional forward each step, which the block caches do not "
                "serve; use --cache none"
            )
        return sampler

    def stop_token(self, model: MaskedDiffusionModel) -> int | None:
        """The EOS id after whose block a row stops (block sampler with ``block_eos_stop``; None: no stop)."""
        if self.resolve(model) != "block" or not self.block_eos_stop:
            return None
        return self.eos_token_id if self.eos_token_id is not None else getattr(model, "eos_token_id", None)

    def build(
        self, model: MaskedDiffusionModel
    ) -> tuple[BlockSchedule | TimestepSchedule | BlockDiffusionSchedule, GumbelMaxTokens | CategoricalTokens]:
        """(count schedule, token rule) of the sampler for ``model``."""
        sampler = self.resolve(model)
        if sampler == "block":
            # LLaDA2's block loop ends after its steps; that leaves masks only where a step revealed [MASK] (the
            # scheduled count is a floor for its rule), so with the mask token suppressed blocks run until clean
            capped = not self.suppress_mask_token
            schedule = BlockDiffusionSchedule(model.block_length or self.block_length, self.steps, capped)
            return schedule, BlockDiffusionTokens(self.temperature, self.top_p, self.top_k, schedule.block_length)
        if sampler == "dream":
            return TimestepSchedule(self.steps, self.eps), CategoricalTokens(self.temperature, self.top_p, self.top_k)
        ids = {}
        for name, used in (
            ("eos_token_id", self.logits_eos_inf or self.confidence_eos_eot_inf),
            ("eot_token_id", self.confidence_eos_eot_inf),
        ):
            value = getattr(self, name) if getattr(self, name) is not None else getattr(model, name, None)
            if used and value is None:
                raise ValueError(
                    f"{name} is unknown: {model.name} defines none; give it (--{name.replace('_', '-')} ID)"
                )
            if used and not 0 <= int(value) < model.vocab_size:
                raise ValueError(f"{name} {value} lies outside the vocabulary [0, {model.vocab_size})")
            ids[name] = None if value is None else int(value)
        tokens = GumbelMaxTokens(
            self.temperature,
            self.logits_eos_inf,
            self.confidence_eos_eot_inf,
            **ids,
            confidence_float64=self.confidence_float64,
        )
        return BlockSchedule(self.steps, self.block_length), tokens
