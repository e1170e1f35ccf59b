"""The sampling engine: one batched loop for every unmasking policy (UPO Algorithm 1).

Each step runs one MDM forward (one NFE) on the rows that still hold masks,
chooses a token for every masked position (argmax, or Gumbel-max sampling at a
temperature as in LLaDA's ``add_gumbel_noise``), asks the policy which masked
positions of the current block to reveal, and writes those tokens. Rows leave
the batch as soon as they are complete, so every row's NFE is its own.

Schedules follow LLaDA's ``generate()``: the generation region (positions from
``gen_start`` on) is split into blocks of ``block_length`` decoded left to right
(semi-autoregressive; one block = full diffusion), and ``steps`` are spread
evenly over blocks, each step revealing ``ceil(masked_in_block / steps_left)``
tokens (LLaDA's ``get_num_transfer_tokens``). Variable-count policies
(thresholds, Bernoulli) may ignore that count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from unmask.models.base import MaskedDiffusionModel

if TYPE_CHECKING:
    from unmask.policies.base import Policy


@dataclass
class SamplingConfig:
    """Decoding settings; names follow LLaDA's ``generate()``."""

    steps: int | None = None  # None: one token per step (NFE = number of masks)
    block_length: int | None = None  # None: full diffusion (a single block)
    temperature: float = 0.0  # token sampling temperature; 0 = argmax

    def validate(self) -> None:
        for name in ("steps", "block_length"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{name} must be an integer or None, got {value!r}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be a positive integer or None (one token per step), got {self.steps}")
        if self.block_length is not None and self.block_length < 1:
            raise ValueError(f"block_length must be a positive integer or None (full diffusion), got {self.block_length}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")


@dataclass
class StepState:
    """What a policy sees at one step, for the active rows and the generation region only.

    ``probs`` is p_theta(x_0 | x_n) per position (UPO Eq. 2); ``confidence`` is the
    probability of the token the engine would write (LLaDA's ``low_confidence``).
    """

    probs: torch.Tensor  # (b, Lg, V)
    tokens: torch.Tensor  # (b, Lg) token each position would receive
    confidence: torch.Tensor  # (b, Lg)
    candidates: torch.Tensor  # (b, Lg) bool: masked positions of the current block
    masked: torch.Tensor  # (b, Lg) bool: all masked positions
    num_transfer: torch.Tensor  # (b,) tokens the count schedule reveals now
    step: torch.Tensor  # (b,) NFEs spent so far on the row
    total: torch.Tensor  # (b,) masked positions the row started with
    generator: torch.Generator | None
    hidden: torch.Tensor | None = None  # (b, Lg, D) MDM features, when the policy asks for them
    rows: torch.Tensor | None = None  # (b,) indices of these rows in the batch
    current: torch.Tensor | None = None  # (b, Lg) tokens written so far (mask id where masked)

    @property
    def token_probs(self) -> torch.Tensor:
        """(b, Lg, V): ``probs`` at masked positions, the one-hot of the written token elsewhere (needs ``current``)."""
        if self.current is None:
            raise ValueError("this policy needs the written tokens (StepState.current)")
        written = torch.nn.functional.one_hot(self.current, self.probs.shape[-1]).to(self.probs.dtype)
        return torch.where(self.masked[..., None], self.probs, written)

    @property
    def masked_fraction(self) -> torch.Tensor:
        """Diffusion time t in (0, 1]: the share of the row's generated positions still masked."""
        return self.masked.sum(1) / self.total.clamp(min=1)


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
    nfe: torch.Tensor  # (B,) forward passes spent on each row
    order: torch.Tensor  # (B, Lg) step index at which each position was revealed, -1 if given
    reveal_confidence: torch.Tensor  # (B, Lg) confidence of each position when revealed (nan if given)
    trajectory: list[StepRecord] = field(default_factory=list)


def _choose_tokens(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    if temperature == 0:
        return logits.argmax(-1)
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=torch.float64)
    gumbel = -torch.log(-torch.log(u.clamp_min(1e-20)))
    return (logits.double() / temperature + gumbel).argmax(-1)


@torch.no_grad()
def generate(
    model: MaskedDiffusionModel,
    input_ids: torch.Tensor,
    policy: "Policy",
    config: SamplingConfig | None = None,
    attention_mask: torch.Tensor | None = None,
    gen_start: int = 0,
    generator: torch.Generator | None = None,
    record: bool = False,
) -> GenerationOutput:
    """Fill every ``mask_id`` position of ``input_ids`` (B, L) at or after ``gen_start``."""
    config = config or SamplingConfig()
    config.validate()
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}")
    B, L = input_ids.shape
    if not 0 <= gen_start < L:
        raise ValueError(f"gen_start must lie in [0, {L}), got {gen_start}")
    device = model.device
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"the random generator is on {generator.device} but the model on {device}; "
                         f"create it with torch.Generator(device=model.device)")
    x = input_ids.to(device, copy=True)
    if attention_mask is not None:
        attention_mask = attention_mask.to(device)
    Lg = L - gen_start
    block_length = config.block_length or Lg
    num_blocks = math.ceil(Lg / block_length)
    masked0 = x[:, gen_start:] == model.mask_id
    total = masked0.sum(1)
    if config.steps is not None:
        if config.steps % num_blocks:
            raise ValueError(
                f"steps ({config.steps}) must be a multiple of the number of blocks ({num_blocks} = "
                f"ceil({Lg} / block_length {block_length})), as in LLaDA's generate()"
            )
        steps_per_block = config.steps // num_blocks
    block_of = (torch.arange(Lg, device=device) // block_length).expand(B, Lg)
    positions_big = torch.full((B, Lg), num_blocks, device=device)
    nfe = torch.zeros(B, dtype=torch.long, device=device)
    block_step = torch.zeros(B, dtype=torch.long, device=device)
    current_block = torch.full((B,), -1, dtype=torch.long, device=device)
    order = torch.where(masked0, torch.full_like(masked0, 0, dtype=torch.long), torch.full_like(masked0, -1, dtype=torch.long))
    reveal_conf = torch.full((B, Lg), float("nan"), device=device)
    trajectory: list[StepRecord] = []
    needs_hidden = getattr(policy, "needs_hidden", False)

    while True:
        masked = x[:, gen_start:] == model.mask_id
        active = masked.any(1).nonzero().squeeze(1)
        if active.numel() == 0:
            break
        xa = x[active]
        out = model(xa, None if attention_mask is None else attention_mask[active], output_hidden_states=needs_hidden)
        logits = out.logits[:, gen_start:].float()
        logits[..., model.mask_id] = float("-inf")
        probs = logits.softmax(-1)
        tokens = _choose_tokens(logits, config.temperature, generator)
        confidence = probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        m = masked[active]
        block = torch.where(m, block_of[active], positions_big[active]).min(1).values
        new_block = block != current_block[active]
        block_step[active] = torch.where(new_block, torch.zeros_like(block), block_step[active])
        current_block[active] = block
        candidates = m & (block_of[active] == block[:, None])
        n_cand = candidates.sum(1)
        if config.steps is None:
            k = torch.ones_like(n_cand)
        else:
            left = (steps_per_block - block_step[active]).clamp(min=1)
            k = torch.minimum((n_cand + left - 1) // left, n_cand)
        state = StepState(
            probs=probs, tokens=tokens, confidence=confidence, candidates=candidates, masked=m,
            num_transfer=k, step=nfe[active].clone(), total=total[active], generator=generator,
            hidden=None if out.hidden_states is None else out.hidden_states[:, gen_start:], rows=active,
            current=xa[:, gen_start:],
        )
        reveal, data = policy.act(state, record)
        if reveal.shape != candidates.shape or reveal.dtype != torch.bool:
            raise RuntimeError(f"policy {policy.name!r} returned {tuple(reveal.shape)} {reveal.dtype}; expected bool {tuple(candidates.shape)}")
        if (reveal & ~candidates).any() or not reveal.any(1).all():
            raise RuntimeError(f"policy {policy.name!r} must reveal at least one masked position of the current block per row, and only those")
        if record:
            trajectory.append(StepRecord(rows=active, reveal=reveal, data=data))
        region = x[active, gen_start:]
        x[active, gen_start:] = torch.where(reveal, tokens.to(x.dtype), region)
        ra = order[active]
        order[active] = torch.where(reveal, nfe[active, None].expand_as(ra), ra)
        rc = reveal_conf[active]
        reveal_conf[active] = torch.where(reveal, confidence, rc)
        nfe[active] += 1
        block_step[active] += 1
    return GenerationOutput(sequences=x, nfe=nfe, order=order, reveal_confidence=reveal_conf, trajectory=trajectory)
