"""One denoise step of each request's block under an unmask policy: what a serving engine's dLLM hook calls.

A block-diffusion server (SGLang's ``python/sglang/srt/dllm``) decodes each request one block of ``block_size``
positions at a time: a forward over the block gives its logits, the unmasking rule commits some masked positions
in place, and the block is done once a forward has seen it clean. :class:`BlockPolicy` is that rule for any unmask
policy, batched over the requests: it builds the :class:`~unmask.engine.state.StepState` unmask's engine builds
for a step of a block (:func:`unmask.engine.loop.generate` with ``block_length`` = ``block_size``, LLaDA's
argmax token rule at temperature 0, the count schedule of ``steps`` per block, the mask token's logit at -inf
unless ``suppress_mask_token`` is off), asks the policy, and writes the tokens it reveals.

What the policy sees is the block, not the whole answer: ``candidates`` and ``masked`` are the block's masked
positions, ``total`` the block's generated positions (so the diffusion time ``masked_fraction`` is the block's),
and its row memory (``StepState.recall``) starts afresh with each block. Policies that read the block's positions
alone (the heuristics but KLASS and DUS without ``block_length``; the count schedule of a block) decide as in the
engine for any number of blocks; KLASS, DUS over the whole region and a learned policy whose network looks across
positions (f_phi's attention) decide as in the engine where the engine's generation region is one block. Policies that need what the hook
does not give (hidden features, the gold answer, the whole answer's layout) are refused when loaded
(:func:`check_servable`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from unmask.core.config import Config, option
from unmask.engine.policy import Policy
from unmask.engine.schedules import BlockSchedule
from unmask.engine.state import RowMemory, StepState
from unmask.engine.streams import SharedStream
from unmask.engine.tokens import GumbelMaxTokens
from unmask.models.base import MaskedDiffusionModel
from unmask.policies import split_spec
from unmask.policies.learned import KINDS, LearnedPolicy
from unmask.policies.resolve import resolve_policy

SERVED = "the model SGLang serves"  # the served MDM's name when the config does not give one


@dataclass
class ServedPolicyConfig(Config):
    """The unmask policy a server runs and how (the keys of SGLang's ``--dllm-algorithm-config`` file; SGLang's
    own ``block_size`` may stand beside them)."""

    policy: str = option(
        "",
        "the policy spec, as unmask eval takes it: a heuristic (threshold:0.9, confidence, eb:0.1), a policy "
        "checkpoint directory (runs/NAME/best), hf://OWNER/NAME, with :key=value options (mode=greedy)",
    )
    steps: int | None = option(
        None,
        "denoising steps per block for policies that follow the count schedule (LLaDA's get_num_transfer_tokens "
        "over the block's masks); none: one token per step (variable-count policies ignore it)",
        low=1,
    )
    suppress_mask_token: bool = option(
        True,
        "set the mask token's logit to -inf before choosing tokens, as unmask's engine does; off: SGLang's "
        "LowConfidence / JointThreshold, which can commit the mask token (bit-exact parity with them)",
    )
    model: str = option(
        "",
        "the served MDM's unmask name (--model of unmask train-policy): picks the shipped policy of a kind "
        "(policy: bernoulli) and is checked against the MDM a learned policy was trained with",
    )
    alpha: float | None = option(None, "speed weight alpha of an alpha-conditioned learned policy", low=0.0)
    seed: int = option(0, "seed of the policy's random draws (sampling policies: mode=sample)", low=0)

    def check(self) -> None:
        if not self.policy.strip():
            raise ValueError(
                "the dLLM algorithm config names no unmask policy: add `policy: SPEC` (e.g. policy: threshold:0.9, "
                "or policy: runs/NAME/best from unmask train-policy)"
            )
        kind = split_spec(self.policy)[0]
        if kind in KINDS and not self.model:
            raise ValueError(
                f"policy: {kind} names unmask's shipped {kind} policy of a model: add `model: NAME` (the served MDM's "
                "unmask name), or give a policy checkpoint directory"
            )


class ServedModel(MaskedDiffusionModel):
    """The MDM as the server runs it, for policy resolution: its name and mask id (the forwards are the
    server's; no hidden features reach the hook)."""

    def __init__(self, name: str, mask_id: int) -> None:
        super().__init__()
        self.name, self.mask_id, self.vocab_size, self.hidden_size = name, mask_id, 0, 0


def check_servable(policy: Policy) -> None:
    """Refuse a policy that reads what a dLLM hook does not give: one error naming what it needs."""
    needs = []
    if policy.capabilities.needs_hidden:
        needs.append("the MDM's hidden features (the hook gets the block's logits only)")
    if policy.capabilities.needs_target:
        needs.append("the gold answer (an oracle: an upper bound, never deployable)")
    if isinstance(policy, LearnedPolicy) and (policy.coupling is not None or policy.planner is not None):
        needs.append("the whole answer's layout (its coupling / planner spans the generation region it was trained on)")
    if needs:
        raise ValueError(
            f"policy {policy.name!r} cannot run as a served dLLM algorithm: it needs {' and '.join(needs)}; serve a "
            "policy that reads confidences only (a heuristic, or a bernoulli / plackett-luce policy without "
            "--coupling-rounds or --planner)"
        )


@dataclass
class RequestBlock:
    """One request's progress through its current block (what the server keeps for it between steps)."""

    given: torch.Tensor  # (block_size,) bool: positions not generated (the prompt's tail in a first block)
    n0: int  # masked positions at the block's first step (the count schedule's n0)
    step: int = 0  # steps spent on the block
    memory: dict[str, torch.Tensor] = field(default_factory=dict)  # the policy's per-row memory (StepState.remember)


class BlockPolicy:
    """An unmask policy deciding each denoise step of a batch of blocks (see the module docstring)."""

    def __init__(self, config: ServedPolicyConfig, block_size: int, mask_id: int) -> None:
        self.config, self.block_size, self.mask_id = config, block_size, mask_id
        self.policy = resolve_policy(
            config.policy, ServedModel(config.model or SERVED, mask_id), config.alpha, check_servable
        )
        if config.alpha is not None and not self.policy.capabilities.conditioned:
            raise ValueError(
                f"alpha {config.alpha:g} applies to alpha-conditioned learned policies (trained with --alpha-range); "
                f"{self.policy.name!r} is not one: remove `alpha` from the dLLM algorithm config"
            )
        if self.policy.capabilities.needs_steps and config.steps is None:
            raise ValueError(
                f"policy {self.policy.name!r} may reveal nothing at a step and needs a fixed number of steps: add "
                "`steps: N` (per block) to the dLLM algorithm config"
            )
        self.plan = BlockSchedule(config.steps, block_size).plan(block_size, torch.device("cpu"))
        self.follows = self.policy.capabilities.follows_schedule and config.steps is not None
        self.tokens = GumbelMaxTokens()  # LLaDA's token rule at temperature 0: argmax, confidence = softmax
        self.device: torch.device | None = None
        self.streams = SharedStream()

    def max_steps(self) -> int:
        """The most steps a block can take, and the forward that sees it clean."""
        return max(self.config.steps or 0, self.block_size) + 1

    def start(self, block: torch.Tensor, prompt: torch.Tensor | None) -> list[RequestBlock]:
        """Each request's progress at the first step of its block ``block`` (B, block_size); ``prompt`` (B,
        block_size) marks the prompt's positions (None: the positions not masked)."""
        given = block != self.mask_id if prompt is None else prompt
        n0 = ((block == self.mask_id) & ~given).sum(1).tolist()
        return [RequestBlock(given[i], n0[i]) for i in range(len(block))]

    def step(self, block: torch.Tensor, logits: torch.Tensor, requests: list[RequestBlock]) -> list[bool]:
        """One denoise step: write the revealed tokens into ``block`` (B, block_size) in place from ``logits``
        (B, block_size, V); which blocks are done (clean, or their scheduled steps spent, when the step began:
        the forward that gave these logits has seen their final tokens)."""
        self._place(block.device)
        given = torch.stack([r.given for r in requests])
        masked = (block == self.mask_id) & ~given
        block_step = torch.tensor([r.step for r in requests], device=block.device)
        done = block_step >= self.plan.steps_per_block if self.follows else ~masked.any(1)
        active = (~done).nonzero().squeeze(1)
        if active.numel():
            self._decide(block, logits, masked, given, block_step, requests, active)
        return done.tolist()

    def _decide(
        self,
        block: torch.Tensor,
        logits: torch.Tensor,
        masked: torch.Tensor,
        given: torch.Tensor,
        block_step: torch.Tensor,
        requests: list[RequestBlock],
        active: torch.Tensor,
    ) -> None:
        """The policy's step for the ``active`` rows, as the engine's ``_observe``, policy and commit."""
        rows = active.tolist()
        draws = self.streams.bind(torch.arange(len(rows), device=block.device), 0, self.block_size, block.device)
        step_logits = logits[active].float()  # a copy: the server's logits stay as they are
        if self.config.suppress_mask_token:
            step_logits[..., self.mask_id] = float("-inf")
        probs, tokens, confidence = self.tokens.prepare(step_logits, draws)
        candidates = masked[active]
        n0 = torch.tensor([requests[i].n0 for i in rows], device=block.device)
        k, p = self.plan.count(n0, candidates.sum(1), block_step[active])
        memory = _gather_memory([requests[i] for i in rows])
        state = StepState(
            probs=probs,
            tokens=tokens,
            confidence=confidence,
            candidates=candidates,
            masked=candidates,
            num_transfer=k,
            transfer_probability=p,
            total=(~given[active]).sum(1),
            draws=draws,
            current=block[active],
            memory=memory,
        )
        reveal, _ = self.policy.act(state)
        block[active] = torch.where(reveal, tokens.to(block.dtype), block[active])
        for j, i in enumerate(rows):
            requests[i].step += 1
            requests[i].memory = {name: value[j] for name, value in memory.values.items()}

    def _place(self, device: torch.device) -> None:
        """Move the policy and its random stream to the server's device (once)."""
        if self.device != device:
            if isinstance(self.policy, torch.nn.Module):
                self.policy.to(device)
            self.streams = SharedStream(torch.Generator(device=device).manual_seed(self.config.seed))
            self.device = device


def _gather_memory(requests: list[RequestBlock]) -> RowMemory:
    """The step's :class:`RowMemory` from each request's own (a request without a value starts at zeros, as in the
    engine)."""
    memory = RowMemory(len(requests))
    for name in {name for r in requests for name in r.memory}:
        sample = next(r.memory[name] for r in requests if name in r.memory)
        memory.values[name] = torch.stack([r.memory.get(name, torch.zeros_like(sample)) for r in requests])
    return memory
