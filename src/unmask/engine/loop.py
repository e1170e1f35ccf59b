"""The sampling engine: one batched loop for every unmasking policy (UPO Algorithm 1).

Each step is forward, policy, commit: one MDM forward on the rows still decoding, run by the cache strategy
(:mod:`unmask.engine.cache`: the full sequence, or a window against kept keys/values), the token rule
(:mod:`unmask.engine.tokens`) proposing a token for every masked position on the positions each forward ran (under
a block cache the rest keep the block's first step's), the count schedule (:mod:`unmask.engine.schedules`) giving
how many positions this step reveals, the policy choosing which candidates to reveal, and the commit writing those
tokens. Rows leave the batch as soon as they are done, so every row's NFE is its own. Which upstream loop the
schedule and token rule reproduce (LLaDA ``generate()``, Dream ``diffusion_generate()``) is
``SamplingConfig.sampler`` (:mod:`unmask.engine.config`); policies are the LLaDA ``remasking`` / Dream ``alg``
strategies (see docs/samplers.md).

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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from unmask.engine.cache import CacheStrategy, Window, cache_strategy
from unmask.engine.config import SamplingConfig
from unmask.engine.schedules import Plan
from unmask.engine.state import RowMemory, StepState
from unmask.engine.streams import Draws, RandomStreams, as_streams
from unmask.engine.tokens import CategoricalTokens, GumbelMaxTokens
from unmask.models.base import MaskedDiffusionModel

if TYPE_CHECKING:
    from unmask.engine.policy import Policy


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


@dataclass
class DecodeState:
    """Per-row progress of one :func:`generate` call over B rows and the Lg generation positions from ``gen_start``.

    ``x`` is the canvas: the prompt, the revealed tokens and ``mask_id`` where still to generate (:meth:`masked`
    reads it, :meth:`commit` writes it). ``given`` are the positions not masked at the start (LLaDA's
    ``prompt_index``: what the unconditional forward masks), ``total`` the positions to generate and ``block_of`` the
    block of each generation position (``plan.block_length``)."""

    x: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor | None  # (B, L)
    inputs: dict[str, torch.Tensor]  # per-row policy inputs, (B, ...) each (StepState.inputs)
    gen_start: int
    mask_id: int
    plan: Plan
    given: torch.Tensor  # (B, L) bool
    total: torch.Tensor  # (B,)
    block_of: torch.Tensor  # (B, Lg)
    block: torch.Tensor  # (B,) current block (plan.num_blocks: done)
    block_step: torch.Tensor  # (B,) steps spent in the current block
    n0: torch.Tensor  # (B,) masked positions of the current block at its first step (the count schedule's n0)
    nfe: torch.Tensor  # (B,) model row-forwards (a cfg step counts 2)
    steps: torch.Tensor  # (B,) denoising steps
    order: torch.Tensor  # (B, Lg) step at which each position was revealed, -1 if given
    reveal_conf: torch.Tensor  # (B, Lg) confidence of each position when revealed (nan if given)
    positions_run: torch.Tensor  # (B,) positions run through the model over the row's forwards
    refresh: torch.Tensor  # (B,) bool: the row's next step runs full (cache_refresh)
    memory: RowMemory  # what the policy keeps per row from step to step (StepState.recall / remember)

    @classmethod
    def start(
        cls,
        model: MaskedDiffusionModel,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        inputs: dict[str, torch.Tensor],
        gen_start: int,
        plan: Plan,
    ) -> DecodeState:
        """Nothing revealed yet: every row at step 0 of block 0."""
        device = model.device
        x = input_ids.to(device, copy=True)
        B, Lg = x.shape[0], x.shape[1] - gen_start
        given = x != model.mask_id
        masked0 = ~given[:, gen_start:]
        total = masked0.sum(1)
        zeros = [torch.zeros(B, dtype=torch.long, device=device) for _ in range(6)]
        return cls(
            x=x,
            attention_mask=None if attention_mask is None else attention_mask.to(device),
            inputs=inputs,
            gen_start=gen_start,
            mask_id=model.mask_id,
            plan=plan,
            given=given,
            total=total,
            block_of=((torch.arange(Lg, device=device) + plan.offset) // plan.block_length).expand(B, Lg),
            block=zeros[0],
            block_step=zeros[1],
            n0=zeros[2],
            nfe=zeros[3],
            steps=zeros[4],
            positions_run=zeros[5],
            order=torch.where(masked0, torch.zeros_like(total)[:, None], torch.full_like(total, -1)[:, None]),
            reveal_conf=torch.full((B, Lg), float("nan"), device=device),
            refresh=torch.zeros(B, dtype=torch.bool, device=device),
            memory=RowMemory(B),
        )

    def masked(self, rows: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """(b, Lg) bool: the generation positions of ``rows`` still to generate."""
        return self.x[rows, self.gen_start :] == self.mask_id

    def advance(self, follows: bool, eos: int | None = None) -> torch.Tensor:
        """Move rows past blocks that are clean or, for policies that follow the schedule, spent; the rows still
        decoding (the active rows of this step). ``eos``: a row whose finished blocks hold that token is done, its
        masked positions filled with it (LLaDA2 ``generate()`` stops after the block holding an EOS)."""
        masked = self.masked()
        for _ in range(self.plan.num_blocks):
            in_block = masked & (self.block_of == self.block[:, None])
            spent = self.block_step >= self.plan.steps_per_block if follows else ~in_block.any(1)
            if self.plan.capped:  # LLaDA2: a block's loop runs at most its steps, masks left or not
                spent = spent | (self.block_step >= self.plan.steps_per_block)
            done = spent & (self.block < self.plan.num_blocks)
            if not done.any():
                break
            self.block = self.block + done.long()
            self.block_step = torch.where(done, torch.zeros_like(self.block_step), self.block_step)
        if eos is not None:
            finished = (self.x[:, self.gen_start :] == eos) & (self.block_of < self.block[:, None])
            stop = finished.any(1) & (self.block < self.plan.num_blocks)
            if stop.any():
                self.x[:, self.gen_start :] = torch.where(stop[:, None] & masked, eos, self.x[:, self.gen_start :])
                self.block = torch.where(stop, self.plan.num_blocks, self.block)
        self.n0 = torch.where(self.block_step == 0, (masked & (self.block_of == self.block[:, None])).sum(1), self.n0)
        return (self.block < self.plan.num_blocks).nonzero().squeeze(1)

    def commit(self, active: torch.Tensor, reveal: torch.Tensor, state: StepState, cache_refresh: float | None) -> None:
        """Write the tokens the policy revealed (``reveal`` (b, Lg)) with their step and confidence, and end the
        step of the ``active`` rows."""
        chosen, chosen_conf = state.chosen(reveal)
        g = self.gen_start
        self.x[active, g:] = self.x[active, g:].masked_scatter(reveal, chosen.to(self.x.dtype))
        self.order[active] = torch.where(reveal, self.steps[active, None], self.order[active])
        self.reveal_conf[active] = self.reveal_conf[active].masked_scatter(
            reveal, chosen_conf.to(self.reveal_conf.dtype)
        )
        if cache_refresh is not None:  # this step revealed at least that share of the block's masked positions
            self.refresh[active] = reveal.sum(1) / state.candidates.sum(1).clamp(min=1) >= cache_refresh
        self.steps[active] += 1
        self.block_step[active] += 1

    def output(self, trajectory: list[StepRecord]) -> GenerationOutput:
        return GenerationOutput(
            sequences=self.x,
            nfe=self.nfe,
            order=self.order,
            reveal_confidence=self.reveal_conf,
            trajectory=trajectory,
            positions_run=self.positions_run,
            steps=self.steps,
        )


@torch.no_grad()
def generate(
    model: MaskedDiffusionModel,
    input_ids: torch.Tensor,
    policy: Policy,
    config: SamplingConfig | None = None,
    attention_mask: torch.Tensor | None = None,
    gen_start: int = 0,
    generator: torch.Generator | RandomStreams | None = None,
    record: bool = False,
    inputs: dict[str, torch.Tensor] | None = None,
    cache: CacheStrategy | None = None,
) -> GenerationOutput:
    """Fill every ``mask_id`` position of ``input_ids`` (B, L) at or after ``gen_start``.

    ``generator``: :class:`unmask.engine.streams.ExampleStreams` (one stream per row), a torch.Generator (one
    batch-shaped stream) or None (torch's global generator, as the upstream loops draw). ``inputs``: per-row
    policy inputs, each (B, ...), that the policy reads as ``StepState.inputs`` for the rows of the step (e.g.
    ``{"alpha": ...}`` for alpha-conditioned policies, ``{"target": ...}`` (B, Lg) gold tokens for oracles).
    ``cache``: the cache strategy to run the forwards with (:class:`unmask.engine.cache.CacheStrategy`, of the mode
    ``config.cache`` names; e.g. to read its ``nbytes()`` after the call); none: a new one of that mode."""
    config = config or SamplingConfig()
    config.validate()
    inputs = _check_inputs(model, input_ids, attention_mask, gen_start, inputs)
    streams = as_streams(generator)
    streams.check(len(input_ids), model.device)
    schedule, tokens = config.build(model)
    length = input_ids.shape[1] - gen_start
    plan = schedule.plan(length, model.device, gen_start)
    follows = _follows(policy, plan, config, input_ids[:, gen_start:] == model.mask_id)
    eos = config.stop_token(model)
    limit = config.max_forwards or 4 * (length + (config.steps or 0))
    cache = cache_strategy(model, config.cache, cache)
    cache.prepare(model, len(input_ids), gen_start, plan.block_length)
    run = DecodeState.start(model, input_ids, attention_mask, inputs, gen_start, plan)
    trajectory: list[StepRecord] = []
    while (active := run.advance(follows, eos)).numel():
        if int(run.nfe[active].max()) >= limit:
            raise ValueError(
                f"a row needed more than {limit} forwards without finishing: the model keeps predicting "
                "the mask token; keep suppress_mask_token on (the default) or raise max_forwards"
            )
        state = _observe(model, cache, tokens, policy, config, streams, run, active)
        reveal, data = policy.act(state, record)
        _check_reveal(policy, reveal, state.candidates, follows)
        if record:
            trajectory.append(StepRecord(rows=active, reveal=reveal, data=data))
        run.commit(active, reveal, state, config.cache_refresh)
        if config.refine_complete_block and cache.partial and not follows:  # Fast-dLLM's cached while loop
            _refine(model, cache, run, active, config.cfg_scale)
    return run.output(trajectory)


def _check_inputs(
    model: MaskedDiffusionModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    gen_start: int,
    inputs: dict[str, torch.Tensor] | None,
) -> dict[str, torch.Tensor]:
    """Raise one clear error for arguments of :func:`generate` that do not fit; the policy inputs on the model's device."""
    model.check_input(input_ids)  # before any forward: a row without masks runs none
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}"
        )
    B, L = input_ids.shape
    if not 0 <= gen_start < L:
        raise ValueError(f"gen_start must lie in [0, {L}), got {gen_start}")
    inputs = dict(inputs or {})
    for name, value in inputs.items():
        if not isinstance(value, torch.Tensor) or value.dim() == 0 or value.shape[0] != B:
            raise ValueError(
                f"policy input {name!r} must be a tensor with one entry per row, shape ({B}, ...); got "
                f"{tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__}"
            )
        inputs[name] = value.to(model.device)
    return inputs


def _follows(policy: Policy, plan: Plan, config: SamplingConfig, masked: torch.Tensor) -> bool:
    """Whether blocks last their scheduled steps (a policy that follows a fixed schedule); raise for a policy that
    needs steps without them, warn when there are more steps than ``masked`` (B, Lg) positions in the fullest row."""
    if policy.capabilities.needs_steps and plan.steps_per_block is None:
        raise ValueError(
            f"policy {policy.name!r} reveals a random number of positions per step (possibly none) and "
            "needs a fixed number of steps; give steps (e.g. --steps 16)"
        )
    most = int(masked.sum(1).max())  # positions to generate in the fullest row
    if config.steps is not None and config.steps > most:
        warnings.warn(
            f"steps {config.steps} is more than the {most} masked positions to generate: the schedule "
            f"spreads {most} reveals over {config.steps} steps, so some run a forward that reveals nothing "
            f"(as LLaDA's generate() does); give steps <= {most} (--steps) to save those forwards",
            stacklevel=2,
        )
    return policy.capabilities.follows_schedule and plan.steps_per_block is not None


def _observe(
    model: MaskedDiffusionModel,
    cache: CacheStrategy,
    tokens: GumbelMaxTokens | CategoricalTokens,
    policy: Policy,
    config: SamplingConfig,
    streams: RandomStreams,
    run: DecodeState,
    active: torch.Tensor,
) -> StepState:
    """One step's forward, token rule and assembly for the ``active`` rows: the :class:`StepState` the policy sees
    (with the tokens of every masked position drawn, unless the policy draws them after it reveals)."""
    g, length = run.gen_start, run.block_of.shape[1]
    first = (run.block_step[active] == 0) | run.refresh[active]  # a block's first step, or a refresh (cache_refresh)
    windows = _forward(model, cache, run, active, first, config.cfg_scale, policy.capabilities.needs_hidden)
    draws = streams.bind(active, g, length, model.device)
    suppress = model.mask_id if config.suppress_mask_token else None
    step = cache.assemble(active, windows, _token_rule(tokens, windows, draws, suppress))
    masked = run.masked(active)
    current = run.block_of[active] == run.block[active, None]
    candidates = masked & (current if run.plan.capped else run.block_of[active] <= run.block[active, None])
    k, p = run.plan.count(run.n0[active], candidates.sum(1), run.block_step[active])
    state = StepState(
        probs=step["probs"],
        tokens=step["tokens"],
        confidence=step["confidence"],
        choose=tokens.choose(
            step["probs"], draws, block_start=run.block[active] * run.plan.block_length - run.plan.offset
        ),
        candidates=candidates,
        masked=masked,
        num_transfer=k,
        transfer_probability=p,
        total=run.total[active],
        draws=draws,
        hidden=step["hidden"],
        rows=active,
        current=run.x[active, g:],
        offset=g,
        inputs={name: value[active] for name, value in run.inputs.items()},
        memory=run.memory,
    )
    if not policy.capabilities.tokens_after_reveal:
        state.choose_tokens()
    return state


def _token_rule(
    tokens: GumbelMaxTokens | CategoricalTokens, windows: list[Window], draws: Draws, suppress: int | None
) -> list[dict[str, torch.Tensor | None]]:
    """The token rule's per-position work (``prepare``) on each forward's fresh positions only, with its share of
    the step's positional ``draws``; the logit of token ``suppress`` (the mask token) set to -inf first."""
    shares, values = draws.windows(), []
    for window in windows:
        logits = window.logits.float()
        if suppress is not None:
            logits[..., suppress] = float("-inf")
        probs, chosen, confidence = tokens.prepare(logits, shares.part(window.rows, window.lo, window.hi))
        values.append({"probs": probs, "tokens": chosen, "confidence": confidence, "hidden": window.hidden})
    return values


def _check_reveal(policy: Policy, reveal: torch.Tensor, candidates: torch.Tensor, follows: bool) -> None:
    """Raise when the policy's reveal mask is not a bool mask of candidates with (unless it follows the
    schedule) at least one per row."""
    if reveal.shape != candidates.shape or reveal.dtype != torch.bool:
        raise RuntimeError(
            f"policy {policy.name!r} returned {tuple(reveal.shape)} {reveal.dtype}; expected bool {tuple(candidates.shape)}"
        )
    if (reveal & ~candidates).any() or not (follows or reveal.any(1).all()):
        raise RuntimeError(
            f"policy {policy.name!r} must reveal at least one masked position of the current block per row, and only those"
        )


def _refine(
    model: MaskedDiffusionModel, cache: CacheStrategy, run: DecodeState, active: torch.Tensor, cfg_scale: float
) -> None:
    """Fast-dLLM's cached while loop (``refine_complete_block``): a row whose block's first step (the step just
    committed) revealed the whole block runs one more cached forward, which reveals nothing."""
    open_ = run.masked(active) & (run.block_of[active] == run.block[active, None])
    again = active[(run.block_step[active] == 1) & ~open_.any(1)]
    if again.numel():
        _forward(model, cache, run, again, torch.zeros_like(again, dtype=torch.bool), cfg_scale, False)


def _forward(
    model: MaskedDiffusionModel,
    cache: CacheStrategy,
    run: DecodeState,
    rows: torch.Tensor,
    first: torch.Tensor,
    cfg_scale: float,
    needs_hidden: bool,
) -> list[Window]:
    """One step's forwards for ``rows`` (ascending), counted in their NFE and positions run: their
    :class:`unmask.engine.cache.Window` s. The forward runs at a :func:`bucket` batch size (padded with copies of
    the first row, dropped from the windows) and, with ``cfg_scale > 0`` (``--cache none`` only: one full window),
    on the conditional rows and the unconditional ones (prompt masked) together, guided as LLaDA's ``generate()``:
    ``u + (s + 1)(c - u)``."""
    b = len(rows)
    pad = rows[:1].expand(bucket(b, len(run.x)) - b)
    batch = torch.cat([rows, pad])
    x = run.x[batch]
    mask = None if run.attention_mask is None else run.attention_mask[batch]
    blocks, firsts = run.block[batch], torch.cat([first, first[:1].expand(len(pad))])
    if cfg_scale > 0:
        un = x.masked_fill(run.given[batch], model.mask_id)
        (window,), positions = cache.forward(
            torch.cat([x, un]),
            None if mask is None else torch.cat([mask, mask]),
            torch.cat([batch, batch]),
            torch.cat([blocks, blocks]),
            torch.cat([firsts, firsts]),
            needs_hidden,
        )
        n = len(batch)
        cond, uncond = window.logits[:n], window.logits[n:]
        hidden = None if window.hidden is None else window.hidden[:n]
        windows = [
            Window(window.rows[:n], window.lo, window.hi, uncond + (cfg_scale + 1) * (cond - uncond), hidden, True)
        ]
        positions = positions[:n] * 2
    else:
        windows, positions = cache.forward(x, mask, batch, blocks, firsts, needs_hidden)
    run.positions_run[rows] += positions[:b]
    run.nfe[rows] += 2 if cfg_scale > 0 else 1
    return [w.below(b) for w in windows]
