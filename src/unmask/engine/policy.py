"""The unmasking-policy interface the engine drives (UPO §3.1, Jazbec §2).

A policy looks at one engine step (:class:`unmask.engine.state.StepState`, the interface's own input type) and
returns which masked positions of the current block to reveal: a bool mask (b, Lg), at least one position per
row unless the policy follows the count schedule (``Capabilities.follows_schedule``). Random numbers come from
``state.draws``. What a policy is (its inputs, whether it is random, how it uses the schedule) it declares in
:class:`Capabilities`, which the engine, the trainers and the evaluators read. The policies themselves live in
:mod:`unmask.policies`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unmask.engine.state import StepState


@dataclass(frozen=True)
class Capabilities:
    """What a policy is: read by the engine, the trainers and the evaluators (never probed with ``getattr``)."""

    needs_hidden: bool = False  # ask the MDM for hidden features (UPO's g_phi does)
    stochastic: bool = False  # repeated runs can differ (pass@N makes sense)
    follows_schedule: bool = False  # reveals exactly num_transfer per step: blocks last their scheduled steps
    tokens_after_reveal: bool = False  # tokens are drawn only where the policy reveals, after it (Dream origin)
    needs_steps: bool = False  # may reveal nothing at a step: only runs with a fixed number of steps
    conditioned: bool = False  # takes the speed weight alpha as an input (alpha-conditioned learned policies)
    needs_target: bool = False  # reads the gold tokens (StepState.inputs["target"]): oracles, never deployable


class Policy:
    """Base class; subclasses implement :meth:`select` (or :meth:`act`) and declare :attr:`capabilities`."""

    name: str = "policy"
    capabilities: Capabilities = Capabilities()
    OPTIONS: dict[str, str] = {}  # learned policies' decoding options (name -> valid values), see with_options

    def select(self, state: StepState) -> torch.Tensor:
        raise NotImplementedError

    def act(self, state: StepState, record: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The reveal mask and, when ``record``, the tensors to store for training."""
        return self.select(state), {}
