"""The masked canvas of one :func:`unmask.engine.loop.generate` call: :class:`DecodeState` (per-row progress), its
step (:meth:`DecodeState.observe`: forward, token rule, the :class:`StepState` a policy sees; :meth:`DecodeState.commit`)
and what a call returns (:class:`GenerationOutput`, with the recorded :class:`StepRecord` s for training).

A masked canvas is LLaDA's and Dream's: positions to generate hold ``mask_id``, a revealed token is final. The
uniform-state canvas with renoising (DiffusionGemma) is the subclass :class:`unmask.engine.canvas.RenoisedCanvas`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from unmask.engine.cache import CacheStrategy, Window
from unmask.engine.schedules import Plan
from unmask.engine.state import RowMemory, StepState
from unmask.engine.streams import Draws, RandomStreams
from unmask.engine.tokens import BlockDiffusionTokens, CategoricalTokens, GumbelMaxTokens
from unmask.models.base import MaskedDiffusionModel

if TYPE_CHECKING:
    from unmask.engine.config import SamplingConfig
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

    def observe(
        self,
        model: MaskedDiffusionModel,
        cache: CacheStrategy,
        tokens: GumbelMaxTokens | CategoricalTokens | BlockDiffusionTokens,
        policy: Policy,
        config: SamplingConfig,
        streams: RandomStreams,
        active: torch.Tensor,
    ) -> StepState:
        """One step's forward, token rule and assembly for the ``active`` rows: the :class:`StepState` the policy sees
        (with the tokens of every masked position drawn, unless the policy draws them after it reveals)."""
        g, length = self.gen_start, self.block_of.shape[1]
        # a block's first step, or a refresh (cache_refresh)
        first = (self.block_step[active] == 0) | self.refresh[active]
        windows = run_forward(model, cache, self, active, first, config.cfg_scale, policy.capabilities.needs_hidden)
        draws = streams.bind(active, g, length, model.device)
        suppress = model.mask_id if config.suppress_mask_token else None
        step = cache.assemble(active, windows, token_values(tokens, windows, draws, suppress))
        masked = self.masked(active)
        current = self.block_of[active] == self.block[active, None]
        candidates = masked & (current if self.plan.capped else self.block_of[active] <= self.block[active, None])
        k, p = self.plan.count(self.n0[active], candidates.sum(1), self.block_step[active])
        state = StepState(
            probs=step["probs"],
            tokens=step["tokens"],
            confidence=step["confidence"],
            choose=tokens.choose(
                step["probs"], draws, block_start=self.block[active] * self.plan.block_length - self.plan.offset
            ),
            candidates=candidates,
            masked=masked,
            num_transfer=k,
            transfer_probability=p,
            total=self.total[active],
            draws=draws,
            hidden=step["hidden"],
            rows=active,
            current=self.x[active, g:],
            offset=g,
            inputs={name: value[active] for name, value in self.inputs.items()},
            memory=self.memory,
        )
        if not policy.capabilities.tokens_after_reveal:
            state.choose_tokens()
        return state


def token_values(
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


def run_forward(
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
