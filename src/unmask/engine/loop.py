"""The sampling engine: one batched loop for every unmasking policy (UPO Algorithm 1).

Each step runs one MDM forward on the rows still decoding, lets the token sampler
(:mod:`unmask.engine.tokens`) propose a token for every masked position (under a block cache,
:mod:`unmask.engine.cache`, on the positions each forward ran; the rest keep the block's first step's),
asks the count schedule
(:mod:`unmask.engine.schedules`) how many positions this step reveals, asks the policy which
candidates to reveal, and writes those tokens. Rows leave the batch as soon as they are done,
so every row's NFE is its own.

``SamplingConfig.sampler`` picks the upstream loop being reproduced, as a (schedule, token sampler) pair:
``llada`` is LLaDA's ``generate()`` (blocks of ``block_length`` decoded left to right, ``steps`` spread
evenly over them with ``get_num_transfer_tokens``, Gumbel-max tokens, untempered confidences,
``cfg_scale``, ``logits_eos_inf``, ``confidence_eos_eot_inf``); ``dream`` is Dream's
``diffusion_generate()`` (linear timesteps down to ``eps``, tempered top-p / top-k categorical tokens
and confidences). Policies are the LLaDA ``remasking`` / Dream ``alg`` strategies (see docs/samplers.md).

A block ends when it is clean or, for policies that follow the schedule (``Capabilities.follows_schedule``),
when its scheduled steps are spent (LLaDA and Dream run every scheduled step, revealing nothing in some).

The one intended deviation from the upstream loops: the mask token's logit is set to -inf
(``suppress_mask_token``), so a revealed position never receives [MASK]; turn it off for bit-exact parity.
NFE counts the model's row-forwards: with ``cfg_scale > 0`` a step runs the conditional and the
unconditional (prompt masked) row together and costs 2; ``GenerationOutput.steps`` counts steps.
Random numbers come from :mod:`unmask.engine.streams` (per-example streams or one shared stream).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import torch

from unmask.engine.cache import CACHE_MODES, BlockCache, Window
from unmask.core.config import Config, option
from unmask.models.base import MaskedDiffusionModel
from unmask.engine.state import RowMemory, StepState
from unmask.engine.schedules import BlockSchedule, TimestepSchedule
from unmask.engine.streams import RandomStreams, as_streams
from unmask.engine.tokens import CategoricalTokens, GumbelMaxTokens

if TYPE_CHECKING:
    from unmask.engine.policy import Policy

SAMPLERS = ("auto", "llada", "dream")
DREAM_ONLY = ("eps", "top_p", "top_k")
LLADA_ONLY = ("block_length", "cfg_scale", "logits_eos_inf", "confidence_eos_eot_inf", "confidence_float64")


@dataclass
class SamplingConfig(Config):
    """Decoding settings; names follow LLaDA's ``generate()`` and Dream's ``diffusion_generate()``."""

    steps: int | None = option(None, "total decoding steps (LLaDA steps / Dream steps); none: one token per step "
                               "(NFE = masks; LLaDA sampler only)", low=1)
    block_length: int | None = option(None, "semi-autoregressive block length (LLaDA block_length); none: full "
                                      "diffusion (a single block)", low=1)
    temperature: float = option(0.0, "token sampling temperature (LLaDA add_gumbel_noise, Dream temperature); "
                                "0 = argmax", low=0.0)
    cache: str = option("none", "block key/value cache (Fast-dLLM): prefix keeps the keys/values before the current "
                        "block, dual also those after it, from the block's first step; see docs/cache.md",
                        choices=CACHE_MODES)
    refine_complete_block: bool = option(False, "with --cache prefix|dual: when a block's first (full) step reveals "
                                         "the whole block, run one more cached forward that reveals nothing, as "
                                         "Fast-dLLM's cached loops do (bit-exact forward counts; +1 NFE per such "
                                         "block); off: go on to the next block")
    cache_refresh: float | None = option(None, "with --cache prefix|dual: after a step that reveals at least this share "
                                         "of the current block's masked positions (per row), that row's next step runs "
                                         "the full sequence and refreshes its kept keys/values, as a block's first step "
                                         "does (beyond Fast-dLLM; 0: every step, the tokens of --cache none); none: at "
                                         "block starts only (Fast-dLLM)", low=0.0, high=1.0)
    confidence_float64: bool = option(False, "softmax the confidences in float64, as Fast-dLLM's get_transfer_index "
                                      "(bit-exact Fast-dLLM tokens); off: in the logits' dtype, as LLaDA generate(), "
                                      "where confidences within float32's resolution of 1 (~6e-8) tie and the "
                                      "leftmost wins")
    sampler: str = option("auto", "upstream loop to reproduce: llada (LLaDA generate: blocks, Gumbel-max tokens), "
                          "dream (Dream diffusion_generate: eps timesteps, tempered top-p/top-k tokens), auto: dream "
                          "for Dream models (logits shifted by one), else llada", choices=SAMPLERS)
    cfg_scale: float = option(0.0, "classifier-free guidance scale (LLaDA cfg_scale): logits = u + (s + 1)(c - u) "
                              "with u from the prompt masked; each step then costs 2 NFE", low=0.0)
    logits_eos_inf: bool = option(False, "never choose EOS (LLaDA logits_eos_inf; needs the EOS id)")
    confidence_eos_eot_inf: bool = option(False, "give EOT (and, at temperature 0, EOS) zero confidence "
                                          "(LLaDA confidence_eos_eot_inf; needs the EOS and EOT ids)")
    eos_token_id: int | None = option(None, "EOS id for the two options above; none: the model's eos_token_id", low=0)
    eot_token_id: int | None = option(None, "EOT id for confidence_eos_eot_inf; none: the model's eot_token_id", low=0)
    eps: float = option(1e-3, "last diffusion time of Dream's schedule (timesteps = linspace(1, eps, steps + 1))",
                        low=0.0, high=1.0, low_open=True, high_open=True)
    top_p: float | None = option(None, "nucleus sampling mass (Dream top_p), in (0, 1]; none: off", low=0.0,
                                 high=1.0, low_open=True)
    top_k: int | None = option(None, "sample among the top-k tokens (Dream top_k); none: off", low=1)
    suppress_mask_token: bool = option(True, "set the mask token's logit to -inf (the one intended deviation from "
                                       "LLaDA / Dream / Fast-dLLM); off: bit-exact parity, but a model that predicts "
                                       "[MASK] can then stall (an error after max_forwards)")
    max_forwards: int | None = option(None, "stop with an error when a row needs more forwards (only reachable with "
                                      "suppress_mask_token off); none: 4 x (positions + steps)", low=1)

    def check(self) -> None:
        if self.cache_refresh is not None and self.cache == "none":
            raise ValueError("cache_refresh (--cache-refresh) refreshes kept keys/values, but --cache none keeps none; "
                             "use --cache prefix or --cache dual, or drop --cache-refresh")

    def resolve(self, model: MaskedDiffusionModel) -> str:
        """The sampler for ``model`` ("llada" or "dream"), after checking the options fit it."""
        sampler = self.sampler
        if sampler == "auto":
            sampler = "dream" if int(getattr(model, "logit_shift", 0)) == 1 else "llada"
        defaults = {f.name: f.default for f in fields(SamplingConfig)}
        other = LLADA_ONLY if sampler == "dream" else DREAM_ONLY
        given = [n for n in other if getattr(self, n) != defaults[n]]
        if given:
            owner = "LLaDA generate()" if sampler == "dream" else "Dream diffusion_generate()"
            raise ValueError(f"{', '.join(given)}: {owner} option(s), but {model.name} decodes with the {sampler} sampler; "
                             f"drop them, or choose the sampler with --sampler {'llada' if sampler == 'dream' else 'dream'}")
        if sampler == "dream" and self.steps is None:
            raise ValueError("the dream sampler needs steps (Dream's diffusion_generate steps), e.g. --steps 64")
        if self.cfg_scale > 0 and self.cache != "none":
            raise ValueError("cfg_scale > 0 runs an unconditional forward each step, which the block caches do not "
                             "serve; use --cache none")
        return sampler

    def build(self, model: MaskedDiffusionModel):
        """(schedule, token sampler) for ``model``."""
        sampler = self.resolve(model)
        if sampler == "dream":
            return TimestepSchedule(self.steps, self.eps), CategoricalTokens(self.temperature, self.top_p, self.top_k)
        ids = {}
        for name, used in (("eos_token_id", self.logits_eos_inf or self.confidence_eos_eot_inf),
                           ("eot_token_id", self.confidence_eos_eot_inf)):
            value = getattr(self, name) if getattr(self, name) is not None else getattr(model, name, None)
            if used and value is None:
                raise ValueError(f"{name} is unknown: {model.name} defines none; give it (--{name.replace('_', '-')} ID)")
            if used and not 0 <= int(value) < model.vocab_size:
                raise ValueError(f"{name} {value} lies outside the vocabulary [0, {model.vocab_size})")
            ids[name] = None if value is None else int(value)
        tokens = GumbelMaxTokens(self.temperature, self.logits_eos_inf, self.confidence_eos_eot_inf, **ids,
                                 confidence_float64=self.confidence_float64)
        return BlockSchedule(self.steps, self.block_length), tokens


@dataclass
class StepRecord:
    """One step of a recorded trajectory (UPO Algorithm 2, sampling phase): the batch rows
    that took part and what the policy chose to keep for its update (observation, action,
    old log-probability)."""

    rows: torch.Tensor
    reveal: torch.Tensor  # (b, Lg) bool revealed positions
    data: dict[str, torch.Tensor]


@dataclass
class GenerationOutput:
    sequences: torch.Tensor  # (B, L)
    nfe: torch.Tensor  # (B,) model row-forwards spent on each row (a cfg step counts 2)
    order: torch.Tensor  # (B, Lg) step index at which each position was revealed, -1 if given
    reveal_confidence: torch.Tensor  # (B, Lg) confidence of each position when revealed (nan if given)
    trajectory: list[StepRecord] = field(default_factory=list)
    positions_run: torch.Tensor | None = None  # (B,) positions run through the model for each row, over its forwards
    steps: torch.Tensor | None = None  # (B,) denoising steps spent on each row


def bucket(b: int, batch_size: int) -> int:
    """The batch size a forward of ``b`` active rows runs at: the smallest ``ceil(B / 2^(i/2))`` >= b.

    Threshold-style policies shrink the active batch step by step; each distinct shape makes the CPU
    kernels (oneDNN) cache new primitives, so memory grew with the number of examples. Rounding up to
    these ~2 log2(B) sizes bounds it (at most 41% padded rows, duplicates whose outputs are dropped)."""
    size, i = batch_size, 0
    while True:
        smaller = math.ceil(batch_size / 2 ** ((i + 1) / 2))
        if smaller < b or size == 1:
            return size
        size, i = smaller, i + 1


@torch.no_grad()
def generate(
    model: MaskedDiffusionModel,
    input_ids: torch.Tensor,
    policy: "Policy",
    config: SamplingConfig | None = None,
    attention_mask: torch.Tensor | None = None,
    gen_start: int = 0,
    generator: "torch.Generator | RandomStreams | None" = None,
    record: bool = False,
    inputs: dict[str, torch.Tensor] | None = None,
) -> GenerationOutput:
    """Fill every ``mask_id`` position of ``input_ids`` (B, L) at or after ``gen_start``.

    ``generator``: :class:`unmask.engine.streams.ExampleStreams` (one stream per row), a torch.Generator (one
    batch-shaped stream) or None (torch's global generator, as the upstream loops draw). ``inputs``: per-row
    policy inputs, each (B, ...), that the policy reads as ``StepState.inputs`` for the rows of the step (e.g.
    ``{"alpha": ...}`` for alpha-conditioned policies, ``{"target": ...}`` (B, Lg) gold tokens for oracles)."""
    config = config or SamplingConfig()
    config.validate()
    model.check_input(input_ids)  # before any forward: a row without masks runs none
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}")
    B, L = input_ids.shape
    if not 0 <= gen_start < L:
        raise ValueError(f"gen_start must lie in [0, {L}), got {gen_start}")
    device = model.device
    inputs = dict(inputs or {})
    for name, value in inputs.items():
        if not isinstance(value, torch.Tensor) or value.dim() == 0 or value.shape[0] != B:
            raise ValueError(f"policy input {name!r} must be a tensor with one entry per row, shape ({B}, ...); got "
                             f"{tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__}")
        inputs[name] = value.to(device)
    streams = as_streams(generator)
    streams.check(B, device)
    schedule, sampler = config.build(model)
    x = input_ids.to(device, copy=True)
    if attention_mask is not None:
        attention_mask = attention_mask.to(device)
    Lg = L - gen_start
    plan = schedule.plan(Lg, device)
    follows = policy.capabilities.follows_schedule and plan.steps_per_block is not None
    if policy.capabilities.needs_steps and plan.steps_per_block is None:
        raise ValueError(f"policy {policy.name!r} reveals a random number of positions per step (possibly none) and "
                         "needs a fixed number of steps; give steps (e.g. --steps 16)")
    most = int((x[:, gen_start:] == model.mask_id).sum(1).max())  # positions to generate in the fullest row
    if config.steps is not None and config.steps > most:
        warnings.warn(f"steps {config.steps} is more than the {most} masked positions to generate: the schedule "
                      f"spreads {most} reveals over {config.steps} steps, so some run a forward that reveals nothing "
                      f"(as LLaDA's generate() does); give steps <= {most} (--steps) to save those forwards")
    limit = config.max_forwards or 4 * (Lg + (config.steps or 0))
    cost = 2 if config.cfg_scale > 0 else 1
    given = x != model.mask_id  # LLaDA's prompt_index: what the unconditional forward masks
    masked0 = ~given[:, gen_start:]
    total = masked0.sum(1)
    block_of = (torch.arange(Lg, device=device) // plan.block_length).expand(B, Lg)
    block = torch.zeros(B, dtype=torch.long, device=device)
    block_step = torch.zeros(B, dtype=torch.long, device=device)
    n0 = torch.zeros(B, dtype=torch.long, device=device)
    nfe = torch.zeros(B, dtype=torch.long, device=device)
    steps = torch.zeros(B, dtype=torch.long, device=device)
    order = torch.where(masked0, torch.zeros_like(total)[:, None], torch.full_like(total, -1)[:, None])
    reveal_conf = torch.full((B, Lg), float("nan"), device=device)
    trajectory: list[StepRecord] = []
    needs_hidden = policy.capabilities.needs_hidden
    cache = BlockCache(model, config.cache, B, gen_start, plan.block_length)
    positions_run = torch.zeros(B, dtype=torch.long, device=device)
    refresh = torch.zeros(B, dtype=torch.bool, device=device)  # rows whose next step runs full (cache_refresh)
    memory = RowMemory(B)  # what the policy keeps per row from step to step (StepState.recall / remember)

    while True:
        masked = x[:, gen_start:] == model.mask_id
        for _ in range(plan.num_blocks):  # advance blocks that are clean, or (scheduled policies) spent
            in_block = masked & (block_of == block[:, None])
            spent = block_step >= plan.steps_per_block if follows else ~in_block.any(1)
            done = spent & (block < plan.num_blocks)
            if not done.any():
                break
            block = block + done.long()
            block_step = torch.where(done, torch.zeros_like(block_step), block_step)
        n0 = torch.where(block_step == 0, (masked & (block_of == block[:, None])).sum(1), n0)
        active = (block < plan.num_blocks).nonzero().squeeze(1)
        if active.numel() == 0:
            break
        if int(nfe[active].max()) >= limit:
            raise ValueError(f"a row needed more than {limit} forwards without finishing: the model keeps predicting "
                             "the mask token; keep suppress_mask_token on (the default) or raise max_forwards")
        xa = x[active]
        first = (block_step[active] == 0) | refresh[active]  # a block's first step, or a refresh (cache_refresh)
        windows, positions = _forward(model, cache, xa, attention_mask, active, block[active], first, given,
                                      config.cfg_scale, needs_hidden, B)
        positions_run[active] += positions
        draws = streams.bind(active, gen_start, Lg, device)
        shares, values = draws.windows(), []
        for window in windows:  # the sampler runs on each forward's fresh positions only
            logits = window.logits.float()
            if config.suppress_mask_token:
                logits[..., model.mask_id] = float("-inf")
            probs, tokens, confidence = sampler.prepare(logits, shares.part(window.rows, window.lo, window.hi))
            values.append({"probs": probs, "tokens": tokens, "confidence": confidence, "hidden": window.hidden})
        step = cache.assemble(active, windows, values)
        probs, hidden = step["probs"], step["hidden"]
        m = masked[active]
        candidates = m & (block_of[active] <= block[active, None])
        k, p = plan.count(n0[active], candidates.sum(1), block_step[active])
        state = StepState(
            probs=probs, tokens=step["tokens"], confidence=step["confidence"], choose=sampler.choose(probs, draws),
            candidates=candidates, masked=m, num_transfer=k, transfer_probability=p, total=total[active], draws=draws,
            hidden=hidden, rows=active, current=xa[:, gen_start:], offset=gen_start,
            inputs={name: value[active] for name, value in inputs.items()}, memory=memory,
        )
        if not policy.capabilities.tokens_after_reveal:
            state.choose_tokens()
        reveal, data = policy.act(state, record)
        if reveal.shape != candidates.shape or reveal.dtype != torch.bool:
            raise RuntimeError(f"policy {policy.name!r} returned {tuple(reveal.shape)} {reveal.dtype}; expected bool {tuple(candidates.shape)}")
        if (reveal & ~candidates).any() or not (follows or reveal.any(1).all()):
            raise RuntimeError(f"policy {policy.name!r} must reveal at least one masked position of the current block per row, and only those")
        if record:
            trajectory.append(StepRecord(rows=active, reveal=reveal, data=data))
        chosen, chosen_conf = state.chosen(reveal)
        region = x[active, gen_start:]
        x[active, gen_start:] = region.masked_scatter(reveal, chosen.to(x.dtype))
        order[active] = torch.where(reveal, steps[active, None], order[active])
        reveal_conf[active] = reveal_conf[active].masked_scatter(reveal, chosen_conf.to(reveal_conf.dtype))
        nfe[active] += cost
        if config.cache_refresh is not None:  # this step revealed at least that share of the block's masked positions
            refresh[active] = reveal.sum(1) / candidates.sum(1).clamp(min=1) >= config.cache_refresh
        if config.refine_complete_block and config.cache != "none" and not follows:  # Fast-dLLM's cached while loop
            open_ = (x[active, gen_start:] == model.mask_id) & (block_of[active] == block[active, None])
            again = active[(block_step[active] == 0) & ~open_.any(1)]
            if again.numel():
                _, positions = _forward(model, cache, x[again], attention_mask, again, block[again],
                                        torch.zeros_like(again, dtype=torch.bool), given, config.cfg_scale, False, B)
                positions_run[again] += positions
                nfe[again] += cost
        steps[active] += 1
        block_step[active] += 1
    return GenerationOutput(sequences=x, nfe=nfe, order=order, reveal_confidence=reveal_conf, trajectory=trajectory,
                            positions_run=positions_run, steps=steps)


def _forward(model, cache, xa, attention_mask, active, block, first, given, cfg_scale, needs_hidden, batch_size):
    """One step's forwards for the active rows: (their :class:`unmask.engine.cache.Window` s, positions run per row). The
    forward runs at a :func:`bucket` batch size (padded with copies of the first row, dropped from the windows)
    and, with ``cfg_scale > 0`` (``--cache none`` only: one full window), on the conditional rows and the
    unconditional ones (prompt masked) together, guided as LLaDA's ``generate()``: ``u + (s + 1)(c - u)``."""
    b = len(active)
    pad = active[:1].expand(bucket(b, batch_size) - b)
    rows = torch.cat([active, pad])
    x = torch.cat([xa, xa[:1].expand(len(pad), -1)])
    mask = None if attention_mask is None else attention_mask[rows]
    blocks, firsts = torch.cat([block, block[:1].expand(len(pad))]), torch.cat([first, first[:1].expand(len(pad))])
    if cfg_scale > 0:
        un = x.masked_fill(given[rows], model.mask_id)
        (window,), positions = cache.forward(torch.cat([x, un]), None if mask is None else torch.cat([mask, mask]),
                                             torch.cat([rows, rows]), torch.cat([blocks, blocks]),
                                             torch.cat([firsts, firsts]), needs_hidden)
        n = len(rows)
        cond, uncond = window.logits[:n], window.logits[n:]
        hidden = None if window.hidden is None else window.hidden[:n]
        windows = [Window(window.rows[:n], window.lo, window.hi, uncond + (cfg_scale + 1) * (cond - uncond), hidden, True)]
        positions = positions[:n] * 2
    else:
        windows, positions = cache.forward(x, mask, rows, blocks, firsts, needs_hidden)
    windows = [w.below(b) for w in windows]
    return windows, positions[:b]
