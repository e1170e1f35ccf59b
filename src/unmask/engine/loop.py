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

import warnings
from typing import TYPE_CHECKING

import torch

from unmask.engine.cache import CacheStrategy, cache_strategy
from unmask.engine.canvas import RenoisedCanvas
from unmask.engine.config import SamplingConfig
from unmask.engine.decode import DecodeState, GenerationOutput, StepRecord, run_forward
from unmask.engine.schedules import Plan
from unmask.engine.streams import RandomStreams, as_streams
from unmask.models.base import MaskedDiffusionModel

if TYPE_CHECKING:
    from unmask.engine.policy import Policy

CANVASES: dict[str, type[DecodeState]] = {"masked": DecodeState, "uniform": RenoisedCanvas}  # MDM.canvas -> state


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
    follows = _follows(policy, plan, config, input_ids[:, gen_start:] == model.mask_id, model.canvas == "masked")
    eos = config.stop_token(model)
    limit = config.max_forwards or 4 * (length + (config.steps or 0)) + plan.num_blocks * (plan.steps_per_block or 0)
    cache = cache_strategy(model, config.cache, cache)
    cache.prepare(model, len(input_ids), gen_start, plan.block_length)
    run = CANVASES[model.canvas].start(model, input_ids, attention_mask, inputs, gen_start, plan)
    trajectory: list[StepRecord] = []
    while (active := run.advance(follows, eos)).numel():
        if int(run.nfe[active].max()) >= limit:
            raise ValueError(
                f"a row needed more than {limit} forwards without finishing: the model keeps predicting "
                "the mask token; keep suppress_mask_token on (the default) or raise max_forwards"
            )
        state = run.observe(model, cache, tokens, policy, config, streams, active)
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


def _follows(policy: Policy, plan: Plan, config: SamplingConfig, masked: torch.Tensor, per_total: bool) -> bool:
    """Whether blocks last their scheduled steps (a policy that follows a fixed schedule); raise for a policy that
    needs steps without them, warn when there are more steps than ``masked`` (B, Lg) positions in the fullest row
    (``per_total``: the steps are the whole decode's, not each canvas's)."""
    if policy.capabilities.needs_steps and plan.steps_per_block is None:
        raise ValueError(
            f"policy {policy.name!r} reveals a random number of positions per step (possibly none) and "
            "needs a fixed number of steps; give steps (e.g. --steps 16)"
        )
    most = int(masked.sum(1).max())  # positions to generate in the fullest row
    if per_total and config.steps is not None and config.steps > most:
        warnings.warn(
            f"steps {config.steps} is more than the {most} masked positions to generate: the schedule "
            f"spreads {most} reveals over {config.steps} steps, so some run a forward that reveals nothing "
            f"(as LLaDA's generate() does); give steps <= {most} (--steps) to save those forwards",
            stacklevel=2,
        )
    return policy.capabilities.follows_schedule and plan.steps_per_block is not None


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
        run_forward(model, cache, run, again, torch.zeros_like(again, dtype=torch.bool), cfg_scale, False)
