"""The uniform-state canvas with renoising (DiffusionGemma's ``generate()``; ``MaskedDiffusionModel.canvas`` "uniform").

A masked canvas (:class:`unmask.engine.decode.DecodeState`) fills ``[MASK]`` positions and never changes a revealed
token. A renoised canvas holds tokens everywhere: each canvas of ``C`` positions (the model's ``canvas_length``)
starts as uniform random tokens, and every step the decoder predicts every position, a token is drawn for each
(:class:`unmask.engine.tokens.ScheduledTemperatureTokens`), the policy chooses which positions **keep** their drawn
token and every other position is renoised with a fresh uniform token (``EntropyBoundSampler.accept_canvas`` /
``renoise_canvas``). The canvas ends after ``steps`` steps or when the stopping rule says so
(:class:`unmask.engine.schedules.StableAndConfident`), and its final tokens are the **argmax** of its last step's
tempered logits, which the encoder then reads before the next canvas.

So the decision unmask learns is the same one: at each step the policy gets a :class:`StepState` whose region is the
current canvas, every position a candidate, and returns the positions to keep (DiffusionGemma's own rule is the
entropy bound, ``eb:GAMMA``, :class:`unmask.policies.heuristics.EntropyBoundedPolicy`). Rows decode their canvases in
lockstep, as ``generate()`` does: a row whose canvas stopped early waits (no forward, no NFE) until every row's has,
and a row whose canvas holds an end-of-sequence token stops generating; its later positions hold ``pad_id``, as do
the positions after its first end-of-sequence token (``generate()``'s ``_finalize_canvas``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from unmask.engine.cache import CacheStrategy
from unmask.engine.decode import DecodeState, run_forward
from unmask.engine.state import StepState
from unmask.engine.streams import RandomStreams
from unmask.engine.tokens import ScheduledTemperatureTokens
from unmask.models.base import MaskedDiffusionModel

if TYPE_CHECKING:
    from unmask.engine.config import SamplingConfig
    from unmask.engine.policy import Policy


@dataclass
class RenoisedCanvas(DecodeState):
    """:class:`DecodeState` of a uniform-state model. ``block`` is each row's canvas, ``block_step`` its step in it;
    ``stopped`` marks rows whose canvas the stopping rule ended, ``history`` (B, S, C) their last S argmax canvases,
    ``argmax`` / ``argmax_conf`` (B, C) the latest argmax canvas and its probabilities, ``stop_ids`` the tokens that end
    a row and ``pad_id`` what fills its positions after them."""

    stopped: torch.Tensor | None = None  # (B,) bool
    history: torch.Tensor | None = None  # (B, S, C)
    argmax: torch.Tensor | None = None  # (B, C)
    argmax_conf: torch.Tensor | None = None  # (B, C)
    stop_ids: torch.Tensor | None = None  # (n,)
    pad_id: int = 0
    vocab_size: int = 0
    last: dict | None = None  # this step's token-rule values (argmax, entropy), from observe to commit

    @classmethod
    def start(cls, model, input_ids, attention_mask, inputs, gen_start, plan) -> RenoisedCanvas:
        run = super().start(model, input_ids, attention_mask, inputs, gen_start, plan)
        if not (run.x[:, gen_start:] == model.mask_id).all():
            raise ValueError(
                f"{model.name} generates whole canvases: every position from gen_start must be one to generate "
                f"(the placeholder id {model.mask_id}); a uniform-state model cannot fill in given tokens"
            )
        B, C = len(run.x), plan.block_length
        depth = 0 if plan.stopping is None else plan.stopping.stability_threshold
        run.stopped = torch.zeros(B, dtype=torch.bool, device=run.x.device)
        run.history = torch.full((B, depth, C), -1, dtype=torch.long, device=run.x.device)
        run.argmax = torch.zeros((B, C), dtype=torch.long, device=run.x.device)
        run.argmax_conf = torch.zeros((B, C), device=run.x.device)
        run.stop_ids = torch.tensor(model.stop_ids, dtype=torch.long, device=run.x.device)
        run.pad_id, run.vocab_size = int(model.pad_id), int(model.vocab_size)
        return run

    def masked(self, rows: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """(b, Lg) bool: the positions of ``rows`` not final yet (the current canvas and the ones after it)."""
        return self.block_of[rows] >= self.block[rows, None]

    def advance(self, follows: bool, eos: int | None = None) -> torch.Tensor:
        """End the current canvas of every row once each live row's canvas has stopped or spent its steps (lockstep);
        the rows to step now. (A row's end is its canvas's end-of-sequence token, ``model.stop_ids``: ``eos`` is
        the block sampler's and never given here.)"""
        live = self.block < self.plan.num_blocks
        over = self.stopped | (self.block_step >= self.plan.steps_per_block)
        if live.any() and over[live].all():
            self._finish(live.nonzero().squeeze(1))
            live = self.block < self.plan.num_blocks
            over = self.stopped
        return (live & ~over).nonzero().squeeze(1)

    def _finish(self, rows: torch.Tensor) -> None:
        """Write the argmax canvas of ``rows`` as their final tokens; rows that produced an end-of-sequence token
        stop generating (pad after it and in every later position), the others go on to their next canvas."""
        C, g = self.plan.block_length, self.gen_start
        lo = int(self.block[rows[0]]) * C
        final = self.argmax[rows]
        ended = torch.isin(final, self.stop_ids)
        first_end = ended.long().cumsum(-1)
        final = final.masked_fill((first_end > 0) & ~((first_end == 1) & ended), self.pad_id)
        self.x[rows, g + lo : g + lo + C] = final
        self.order[rows, lo : lo + C] = (self.steps[rows] - 1)[:, None]
        self.reveal_conf[rows, lo : lo + C] = self.argmax_conf[rows]
        done = ended.any(1)
        self.x[rows[done], g + lo + C :] = self.pad_id
        self.block[rows] = torch.where(done, self.plan.num_blocks, self.block[rows] + 1)
        self.block_step[rows] = 0
        self.stopped[rows] = False
        self.history[rows] = -1

    def observe(
        self,
        model: MaskedDiffusionModel,
        cache: CacheStrategy,
        tokens: ScheduledTemperatureTokens,
        policy: Policy,
        config: SamplingConfig,
        streams: RandomStreams,
        active: torch.Tensor,
    ) -> StepState:
        """One denoising step of the ``active`` rows' canvas: a fresh uniform canvas at its first step, the decoder
        forward, the tokens drawn at every position; the :class:`StepState` over the canvas."""
        C, g = self.plan.block_length, self.gen_start
        lo = int(self.block[active[0]]) * C
        span = slice(g + lo, g + lo + C)
        draws = streams.bind(active, g + lo, C, model.device)
        first = self.block_step[active] == 0
        if bool(first[0]):  # generate()'s initialize_canvas: uniform tokens over the whole vocabulary
            self.x[active, span] = draws.integers(self.vocab_size, C)
        windows = run_forward(model, cache, self, active, first, 0.0, policy.capabilities.needs_hidden)
        (window,) = windows
        values = tokens.prepare(window.logits, draws, self.block_step[active])
        values["hidden"] = window.hidden
        step = cache.assemble(active, windows, [values])
        every = torch.ones((len(active), C), dtype=torch.bool, device=self.x.device)
        n = every.sum(1)
        k, p = self.plan.count(n, n, self.block_step[active])
        self.last = step
        return StepState(
            probs=step["probs"],
            tokens=step["tokens"],
            confidence=step["confidence"],
            candidates=every,
            masked=every,
            num_transfer=k,
            transfer_probability=p,
            total=n,
            draws=draws,
            hidden=step["hidden"],
            rows=active,
            current=self.x[active, span],
            offset=g + lo,
            inputs={name: value[active] for name, value in self.inputs.items()},
            memory=self.memory,
            entropy=step["entropy"],
            time=1 - self.block_step[active].float() / self.plan.steps_per_block,
        )

    def commit(self, active: torch.Tensor, reveal: torch.Tensor, state: StepState, cache_refresh: float | None) -> None:
        """Keep the drawn tokens the policy chose, renoise every other position with a fresh uniform token
        (``renoise_canvas``), then let the stopping rule end canvases (``StableAndConfidentStoppingCriteria``)."""
        C, g = self.plan.block_length, self.gen_start
        lo = int(self.block[active[0]]) * C
        noise = state.draws.integers(self.vocab_size, C)
        self.x[active, g + lo : g + lo + C] = torch.where(reveal, state.tokens, noise)
        argmax = self.last["argmax"]
        self.argmax[active] = argmax
        self.argmax_conf[active] = state.probs.gather(-1, argmax.unsqueeze(-1)).squeeze(-1)
        stopping = self.plan.stopping
        if stopping is not None:
            history = self.history[active]
            self.stopped[active] = stopping.stop(history, argmax, self.last["entropy"])
            self.history[active] = torch.cat([history, argmax[:, None]], 1)[:, 1:]
        self.steps[active] += 1
        self.block_step[active] += 1
