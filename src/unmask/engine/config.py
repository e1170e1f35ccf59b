"""Decoding settings (:class:`SamplingConfig`): the upstream loop reproduced and its options.

``SamplingConfig.sampler`` picks the upstream loop being reproduced, as a (count schedule, token rule) pair
(:meth:`SamplingConfig.build`): ``llada`` is LLaDA's ``generate()`` (blocks of ``block_length`` decoded left to right,
``steps`` spread evenly over them with ``get_num_transfer_tokens``, Gumbel-max tokens, untempered confidences,
``cfg_scale``, ``logits_eos_inf``, ``confidence_eos_eot_inf``); ``dream`` is Dream's ``diffusion_generate()``
(linear timesteps down to ``eps``, tempered top-p / top-k categorical tokens and confidences); ``block`` is LLaDA2's
``generate()`` for block-causal models (block diffusion: the model's blocks counted from the sequence start,
``steps`` per block, tempered top-k / top-p tokens, a row ending after the block that holds its first EOS);
``diffusion_gemma`` is DiffusionGemma's ``generate()`` on a renoised canvas (:mod:`unmask.engine.canvas`: ``steps``
per canvas, the ``t_max`` -> ``t_min`` temperature schedule, adaptive stopping). ``cache`` names the block cache
strategy (:data:`unmask.engine.cache.CACHES`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

from unmask.core.config import Config, option
from unmask.engine.cache import CACHES
from unmask.engine.schedules import (
    BlockDiffusionSchedule,
    BlockSchedule,
    CanvasSchedule,
    StableAndConfident,
    TimestepSchedule,
)
from unmask.engine.tokens import BlockDiffusionTokens, CategoricalTokens, GumbelMaxTokens, ScheduledTemperatureTokens
from unmask.models.base import MaskedDiffusionModel

SAMPLERS = ("auto", "llada", "dream", "block", "diffusion_gemma")
LOOPS = {
    "llada": "LLaDA generate()",
    "dream": "Dream diffusion_generate()",
    "block": "LLaDA2 generate()",
    "diffusion_gemma": "DiffusionGemma generate()",
}
LLADA_ONLY = ("cfg_scale", "logits_eos_inf", "confidence_eos_eot_inf", "confidence_float64")
DIFFUSION_GEMMA_ONLY = ("t_min", "t_max", "stability_threshold", "confidence_threshold")
MASKED_ONLY = ("temperature", "refine_complete_block", "cache_refresh", "suppress_mask_token")
# the options each sampler does not have (given with it: an error naming the loops that have them)
FOREIGN = {
    "llada": ("eps", "top_p", "top_k", "block_eos_stop", *DIFFUSION_GEMMA_ONLY),
    "dream": (*LLADA_ONLY, "block_length", "block_eos_stop", *DIFFUSION_GEMMA_ONLY),
    "block": (*LLADA_ONLY, "eps", *DIFFUSION_GEMMA_ONLY),
    "diffusion_gemma": (*LLADA_ONLY, *MASKED_ONLY, "block_length", "eps", "top_p", "top_k", "block_eos_stop"),
}
DIFFUSION_GEMMA_STEPS = 48  # generate()'s default max_denoising_steps


@dataclass
class SamplingConfig(Config):
    """Decoding settings; names follow LLaDA's ``generate()`` and Dream's ``diffusion_generate()``."""

    COMMON: ClassVar[tuple[str, ...]] = ("steps", "block_length", "temperature", "cache")  # shown by --help

    steps: int | None = option(
        None,
        "total decoding steps (LLaDA steps / Dream steps; block sampler: steps per block, LLaDA2 steps; "
        "diffusion_gemma: max_denoising_steps per canvas, none: 48); none: one token per step (NFE = masks; LLaDA "
        "sampler), the block length (block sampler)",
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
        "block diffusion in the model's blocks), diffusion_gemma (DiffusionGemma generate: renoised canvases); auto: "
        "the model's own (diffusion_gemma for uniform-state models, block for block-causal ones (LLaDA2, SDAR), "
        "dream for Dream models (logits shifted by one), else llada)",
        choices=SAMPLERS,
    )
    t_min: float = option(
        0.4, "diffusion_gemma: temperature at a canvas's last step (generate() t_min)", low=0.0, low_open=True
    )
    t_max: float = option(
        0.8,
        "diffusion_gemma: temperature at a canvas's first step, falling linearly to t_min (generate() t_max)",
        low=0.0,
        low_open=True,
    )
    stability_threshold: int | None = option(
        1,
        "diffusion_gemma: a canvas may stop once its argmax held for this many steps (generate() "
        "stability_threshold); none: no adaptive stopping",
        low=0,
    )
    confidence_threshold: float | None = option(
        0.005,
        "diffusion_gemma: ... and the mean entropy of its tempered logits is below this (generate() "
        "confidence_threshold); none: no adaptive stopping",
        low=0.0,
        low_open=True,
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
        if self.t_max < self.t_min:
            raise ValueError(
                f"t_max ({self.t_max}) must be at least t_min ({self.t_min}): the temperature falls from t_max"
            )
        if self.cache_refresh is not None and self.cache not in ("prefix", "dual"):
            stale = " that go stale (a block-causal model's are exact)" if self.cache == "block" else ""
            raise ValueError(
                f"cache_refresh (--cache-refresh) refreshes kept keys/values, but --cache {self.cache} keeps "
                f"none{stale}; use --cache prefix or --cache dual, or drop --cache-refresh"
            )

    def resolve(self, model: MaskedDiffusionModel) -> str:
        """The sampler for ``model`` ("llada", "dream", "block" or "diffusion_gemma"), after checking the options fit
        it."""
        sampler = self.sampler
        if sampler == "auto":
            uniform, shifted = model.canvas == "uniform", model.logit_shift == 1
            sampler = (
                "diffusion_gemma" if uniform else "block" if model.block_length else "dream" if shifted else "llada"
            )
        if (sampler == "diffusion_gemma") != (model.canvas == "uniform"):
            raise ValueError(
                f"the {sampler} sampler does not decode {model.name}, whose canvas is {model.canvas}: the "
                "diffusion_gemma sampler decodes uniform-state models (DiffusionGemma), the others masked ones; drop "
                "--sampler"
            )
        defaults = {f.name: f.default for f in fields(SamplingConfig)}
        given = [n for n in FOREIGN[sampler] if getattr(self, n) != defaults[n]]
        if given:
            having = [s for s in FOREIGN if s != sampler and given[0] not in FOREIGN[s]]
            switch = [s for s in having if (s == "diffusion_gemma") == (model.canvas == "uniform")]
            hint = f", or choose the sampler with --sampler ({', '.join(switch)})" if switch else ""
            raise ValueError(
                f"{', '.join(given)}: option(s) of {' / '.join(LOOPS[s] for s in having)}, but {model.name} decodes "
                f"with the {sampler} sampler; drop them{hint}"
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
    ) -> tuple[
        BlockSchedule | TimestepSchedule | BlockDiffusionSchedule | CanvasSchedule,
        GumbelMaxTokens | CategoricalTokens | ScheduledTemperatureTokens,
    ]:
        """(count schedule, token rule) of the sampler for ``model``."""
        sampler = self.resolve(model)
        if sampler == "diffusion_gemma":
            steps = self.steps or DIFFUSION_GEMMA_STEPS
            stopping = (
                None
                if self.stability_threshold is None or self.confidence_threshold is None
                else StableAndConfident(self.stability_threshold, self.confidence_threshold)
            )
            return CanvasSchedule(steps, model.canvas_length, stopping), ScheduledTemperatureTokens(
                self.t_min, self.t_max, steps
            )
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
