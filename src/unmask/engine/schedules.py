"""Count schedules: how many masked positions a step reveals, and how long a block lasts.

* :class:`BlockSchedule` is LLaDA's ``generate()``: the generation region is cut into blocks of
  ``block_length`` decoded left to right; ``steps`` are spread evenly over the blocks and, within a block,
  ``get_num_transfer_tokens`` gives step j ``n0 // s + (j < n0 % s)`` of the block's ``n0`` masks.
  ``steps=None``: one token per step, the block lasting until it is clean.
* :class:`BlockDiffusionSchedule` is LLaDA2's ``generate()`` (block diffusion): blocks of the model's
  ``block_length`` counted from the sequence start (the prompt's last block is the first decoded, its prompt
  positions given), ``steps`` per block, and step j's count ``B // s + (j < B % s)`` of the full block length B
  (``_get_num_transfer_tokens(block_length, steps)``), whatever the block's masks.
* :class:`TimestepSchedule` is Dream's ``diffusion_generate()``: ``timesteps = linspace(1, eps, steps + 1)``,
  step i (t = timesteps[i], s = timesteps[i + 1]) reveals ``int(masked * (1 - s / t))`` positions (all of
  them at the last step), so a step may reveal nothing and still costs a forward.
* :class:`CanvasSchedule` is DiffusionGemma's ``generate()``: canvases of ``canvas_length`` decoded left to right,
  each for at most ``steps`` (``max_denoising_steps``) steps, ended early by :class:`StableAndConfident`. On a
  renoised canvas every position is re-decided each step, so the count it gives a policy that follows a
  schedule is cumulative: step j keeps ``ceil(C (j + 1) / steps)`` of the canvas's C positions.

A schedule gives a :class:`Plan` for one generation length; the engine asks the plan for each step's count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class Plan:
    """The block layout of one decode and the per-step counts (``steps_per_block`` None: a block lasts until clean)."""

    block_length: int
    num_blocks: int
    steps_per_block: int | None
    offset: int = 0  # generation positions the first block lacks (its start lies before gen_start)
    capped: bool = False  # a block ends after steps_per_block steps even if masks are left (LLaDA2's for loop)

    def count(
        self, n0: torch.Tensor, n_cand: torch.Tensor, block_step: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(k, transfer probability), each (b,): what step ``block_step`` of a block that began with ``n0`` masks
        reveals among the ``n_cand`` masked candidates."""
        raise NotImplementedError


@dataclass
class _BlockPlan(Plan):
    def count(self, n0, n_cand, block_step):
        s = self.steps_per_block
        if s is None:
            k = torch.ones_like(n_cand)
        else:
            scheduled = n0 // s + (block_step < n0 % s).long()
            k = torch.where(block_step < s, scheduled, n_cand)  # past the schedule (variable-count policies): all
        k = torch.minimum(k, n_cand)
        return k, k / n_cand.clamp(min=1)


@dataclass
class BlockSchedule:
    """LLaDA ``generate()`` (``steps``, ``block_length``; ``get_num_transfer_tokens``)."""

    steps: int | None = None
    block_length: int | None = None

    def plan(self, length: int, device: torch.device, gen_start: int = 0) -> Plan:
        block_length = self.block_length or length
        num_blocks = math.ceil(length / block_length)
        if self.steps is None:
            return _BlockPlan(block_length, num_blocks, None)
        if self.steps % num_blocks:
            raise ValueError(
                f"steps ({self.steps}) must be a multiple of the number of blocks ({num_blocks} = "
                f"ceil({length} / block_length {block_length})), as in LLaDA's generate()"
            )
        return _BlockPlan(block_length, num_blocks, self.steps // num_blocks)


@dataclass
class _BlockDiffusionPlan(Plan):
    def count(self, n0, n_cand, block_step):
        B, s = self.block_length, self.steps_per_block
        scheduled = B // s + (block_step < B % s).long()
        k = torch.where(block_step < s, scheduled, n_cand)  # past the schedule: everything left
        k = torch.minimum(k, n_cand)
        return k, k / n_cand.clamp(min=1)


@dataclass
class BlockDiffusionSchedule:
    """LLaDA2 ``generate()`` (``block_length``, ``steps`` per block; ``_get_num_transfer_tokens``)."""

    block_length: int
    steps: int | None = None  # per block; none: block_length (one position per step at least)
    capped: bool = True  # end a block after its steps even with masks left (LLaDA2, when a [MASK] can be revealed)

    def plan(self, length: int, device: torch.device, gen_start: int = 0) -> Plan:
        offset = gen_start % self.block_length
        steps = min(self.steps or self.block_length, self.block_length)
        blocks = math.ceil((length + offset) / self.block_length)
        return _BlockDiffusionPlan(self.block_length, blocks, steps, offset, capped=self.capped)


@dataclass
class _TimestepPlan(Plan):
    timesteps: torch.Tensor | None = None

    def count(self, n0, n_cand, block_step):
        last = block_step >= self.steps_per_block - 1
        i = block_step.clamp(max=self.steps_per_block - 1)
        t, s = self.timesteps[i], self.timesteps[i + 1]
        p = torch.where(last, torch.ones_like(t), 1 - s / t)
        k = torch.where(last, n_cand, (n_cand.to(t.dtype) * (1 - s / t)).long())
        return k, p


@dataclass
class TimestepSchedule:
    """Dream ``diffusion_generate()`` (``steps``, ``eps``): one block, ``steps`` forwards, linear time."""

    steps: int
    eps: float = 1e-3

    def plan(self, length: int, device: torch.device, gen_start: int = 0) -> Plan:
        timesteps = torch.linspace(1, self.eps, self.steps + 1, device=device)
        return _TimestepPlan(length, 1, self.steps, timesteps=timesteps)


@dataclass
class StableAndConfident:
    """DiffusionGemma's adaptive stopping (transformers' ``StableAndConfidentStoppingCriteria``): a canvas ends after a
    step whose argmax canvas equals those of the ``stability_threshold`` steps before it (0: always stable) and whose
    tempered logits have mean entropy below ``confidence_threshold``."""

    stability_threshold: int
    confidence_threshold: float

    def stop(self, history: torch.Tensor, argmax: torch.Tensor, entropy: torch.Tensor) -> torch.Tensor:
        """(b,) bool: the rows whose canvas ends now, from ``history`` (b, S, C) (the previous argmax canvases, -1
        before a canvas's first steps), this step's ``argmax`` (b, C) and per-position ``entropy`` (b, C)."""
        stable = (history == argmax[:, None]).all(-1).all(-1)
        return stable & (entropy.mean(-1) < self.confidence_threshold)


@dataclass
class _CanvasPlan(Plan):
    stopping: StableAndConfident | None = None

    def count(self, n0, n_cand, block_step):
        s = self.steps_per_block
        k = torch.minimum(((block_step + 1) * n_cand + s - 1) // s, n_cand)
        return k, k / n_cand.clamp(min=1)


@dataclass
class CanvasSchedule:
    """DiffusionGemma ``generate()`` (``max_denoising_steps``, ``canvas_length``, adaptive stopping)."""

    steps: int
    canvas_length: int
    stopping: StableAndConfident | None = None

    def plan(self, length: int, device: torch.device, gen_start: int = 0) -> Plan:
        if length % self.canvas_length:
            raise ValueError(
                f"{length} positions to generate are not a whole number of canvases of {self.canvas_length} tokens "
                f"(the model's canvas_length); generate a multiple of {self.canvas_length} (e.g. --gen-length "
                f"{math.ceil(length / self.canvas_length) * self.canvas_length})"
            )
        return _CanvasPlan(self.canvas_length, length // self.canvas_length, self.steps, stopping=self.stopping)
