"""Decoding settings (:class:`SamplingConfig`): the upstream loop reproduced and its options.

``SamplingConfig.sampler`` picks the upstream loop being reproduced, as a (count schedule, token rule) pair
(:meth:`SamplingConfig.build`): ``llada`` is LLaDA's ``generate()`` (blocks of ``block_length`` decoded left to right,
``steps`` spread evenly over them with ``get_num_transfer_tokens``, Gumbel-max tokens, untempered confidences,
``cfg_scale``, ``logits_eos_inf``, ``confidence_eos_eot_inf``); ``dream`` is Dream's ``diffusion_generate()``
(linear timesteps down to ``eps``, tempered top-p / top-k categorical tokens and confidences); ``diffusion_gemma`` is
DiffusionGemma's ``generate()`` on a renoised canvas (:mod:`unmask.engine.canvas`: ``steps`` per canvas, the
``t_max`` -> ``t_min`` temperature schedule, adaptive stopping). ``cache`` names the block cache strategy
(:data:`unmask.engine.cache.CACHES`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

from unmask.core.config import Config, option
from unmask.engine.cache import CACHES
from unmask.engine.schedules import BlockSchedule, CanvasSchedule, StableAndConfident, TimestepSchedule
from unmask.engine.tokens import CategoricalTokens, GumbelMaxTokens, ScheduledTemperatureTokens
from unmask.models.base import MaskedDiffusionModel

SAMPLERS = ("auto", "llada", "dream", "diffusion_gemma")
DREAM_ONLY = ("eps", "top_p", "top_k")
LLADA_ONLY = ("block_length", "cfg_scale", "logits_eos_inf", "confidence_eos_eot_inf", "confidence_float64")
DIFFUSION_GEMMA_ONLY = ("t_min", "t_max", "stability_threshold", "confidence_threshold")
# each sampler's own options (given with another sampler: an error); the masked samplers share the rest
OWN = {"llada": LLADA_ONLY, "dream": DREAM_ONLY, "diffusion_gemma": DIFFUSION_GEMMA_ONLY}
OWNERS = {
    "llada": "LLaDA generate()",
    "dream": "Dream diffusion_generate()",
    "diffusion_gemma": "DiffusionGemma generate()",
}
MASKED_ONLY = ("temperature", "refine_complete_block", "cache_refresh", "suppress_mask_token")
DIFFUSION_GEMMA_STEPS = 48  # generate()'s default max_denoising_steps


@dataclass
class SamplingConfig(Config):
    """Decoding settings; names follow LLaDA's ``generate()`` and Dream's ``diffusion_generate()``."""

    COMMON: ClassVar[tuple[str, ...]] = ("steps", "block_length", "temperature", "cache")  # shown by --help

    steps: int | None = option(
        None,
        "total decoding steps (LLaDA steps / Dream steps; diffusion_gemma: max_denoising_steps per canvas, none: 48); "
        "none: one token per step (NFE = masks; LLaDA sampler only)",
        low=1,
    )
    block_length: int | None = option(
        None, "semi-autoregressive block length (LLaDA block_length); none: full diffusion (a single block)", low=1
    )
    temperature: float = option(
        0.0, "token sampling temperature (LLaDA add_gumbel_noise, Dream temperature); 0 = argmax", low=0.0
    )
    cache: str = option(
        "none",
        "block key/value cache (Fast-dLLM): prefix keeps the keys/values before the current "
        "block, dual also those after it, from the block's first step; see docs/cache.md",
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
        "dream (Dream diffusion_generate: eps timesteps, tempered top-p/top-k tokens), diffusion_gemma "
        "(DiffusionGemma generate: renoised canvases); auto: the model's own (dream for Dream models, "
        "diffusion_gemma for uniform-state models, else llada)",
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
        if self.cache_refresh is not None and self.cache == "none":
            raise ValueError(
                "cache_refresh (--cache-refresh) refreshes kept keys/values, but --cache none keeps none; "
                "use --cache prefix or --cache dual, or drop --cache-refresh"
            )

    def resolve(self, model: MaskedDiffusionModel) -> str:
        """The sampler for ``model`` ("llada", "dream" or "diffusion_gemma"), after checking the options fit it."""
        sampler = self.sampler
        if sampler == "auto":
            sampler = "diffusion_gemma" if model.canvas == "uniform" else "dream" if model.logit_shift == 1 else "llada"
        if (sampler == "diffusion_gemma") != (model.canvas == "uniform"):
            raise ValueError(
                f"the {sampler} sampler does not decode {model.name}, whose canvas is {model.canvas}: the diffusion_gemma "
                "sampler decodes uniform-state models (DiffusionGemma), llada and dream masked ones; drop --sampler"
            )
        defaults = {f.name: f.default for f in fields(SamplingConfig)}
        owners = {name: (OWNERS[owner], owner) for owner, own in OWN.items() if owner != sampler for name in own}
        if sampler == "diffusion_gemma":
            owners.update(dict.fromkeys(MASKED_ONLY, ("the masked samplers' (LLaDA / Dream)", None)))
        given = [n for n in owners if getattr(self, n) != defaults[n]]
        if given:
            owner, other = owners[given[0]]
            switch = f", or choose the sampler with --sampler {other}" if other and other != "diffusion_gemma" else ""
            if sampler == "diffusion_gemma" or other == "diffusion_gemma":
                switch = ""  # a model has one kind of canvas: the other kind's sampler cannot decode it
            raise ValueError(
                f"{', '.join(given)}: {owner} option(s), but {model.name} decodes with the {sampler} sampler; "
                f"drop them{switch}"
            )
        if sampler == "dream" and self.steps is None:
            raise ValueError("the dream sampler needs steps (Dream's diffusion_generate steps), e.g. --steps 64")
        if self.cfg_scale > 0 and self.cache != "none":
            raise ValueError(
                "cfg_scale > 0 runs an unconditional forward each step, which the block caches do not "
                "serve; use --cache none"
            )
        return sampler

    def build(
        self, model: MaskedDiffusionModel
    ) -> tuple[
        BlockSchedule | TimestepSchedule | CanvasSchedule,
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
