"""Supervised pre-training of a policy's coupling (:mod:`unmask.policies.coupling`): the step before GRPO.

The policy decodes training prompts by sampling (Algorithm 2's sampling phase: MDM and policy under no-grad),
and every state up to the trajectory's first wrong reveal is kept with the true tokens of its positions
(:meth:`unmask.tasks.base.Task.targets`; :func:`unmask.training.imitation.collect_states`, which imitation shares).
Then only the coupling is fitted: ``epochs`` passes of Adam over the stored states, minimising the negative
log-likelihood of the true tokens under the refined marginals (:func:`unmask.policies.coupling.coupling_nll`). The signal is dense (every masked position of every state),
where GRPO's is one scalar per trajectory; the MDM is not called during the fit.

It is its own step (:func:`pretrain_step`) and command: ``unmask pretrain-coupling --config RECIPE --output-dir
DIR`` writes the pre-trained policy, and ``unmask train-policy --config RECIPE --init-policy DIR`` starts GRPO
from it. ``train-policy`` without ``--init-policy`` runs the same step first (``--coupling-prompts`` > 0); both
paths give the same weights, as the step draws from its own random stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from unmask.core.tracking import progress_bar
from unmask.engine.config import SamplingConfig
from unmask.engine.streams import ExampleStreams
from unmask.models import MaskedDiffusionModel
from unmask.policies.coupling import coupling_nll
from unmask.policies.learned import LearnedPolicy
from unmask.tasks import Task
from unmask.training.imitation import collect_states

if TYPE_CHECKING:
    from unmask.training.grpo import GRPOTrainer

KEEP = ("token_probs", "masked", "tokens")
STREAM = 2**40  # the step's random stream: ExampleStreams.seed_of(run seed, STREAM), beyond any example id


def pretrain_coupling(
    task: Task,
    model: MaskedDiffusionModel,
    policy: LearnedPolicy,
    examples: list,
    sampling: SamplingConfig,
    generator: torch.Generator,
    epochs: int,
    learning_rate: float = 0.05,
    batch_size: int = 512,
    progress: bool = True,
) -> list[float]:
    """Fit ``policy.coupling`` (see the module docstring); returns the mean NLL of each epoch."""
    if not policy.config.coupling_rounds:
        raise ValueError("this policy has no coupling to pre-train: set --coupling-rounds (e.g. 3)")
    states = collect_states(task, model, policy, examples, sampling, generator, keys=KEEP, progress=progress)
    opt = torch.optim.Adam(policy.coupling.parameters(), lr=learning_rate)
    policy.train()
    history = []
    bar = progress_bar(range(epochs), desc=f"coupling ({len(states['target'])} states)", disable=not progress)
    for _ in bar:
        perm = torch.randperm(len(states["target"]), generator=generator, device=generator.device)
        total = 0.0
        for idx in perm.split(batch_size):
            loss = coupling_nll(
                policy.coupling, states["token_probs"][idx], states["masked"][idx], states["target"][idx]
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        history.append(total / len(perm))
        bar.set_postfix(nll=f"{history[-1]:.4f}")
    return history


def coupling_examples(trainer: GRPOTrainer) -> list:
    """The ``coupling_prompts`` prompts of the step: the first ones of the run's data file, or freshly generated
    ones (their own seed, spread over the difficulties)."""
    n, run = trainer.cfg.coupling_prompts, trainer.cfg.run
    if trainer.train_examples is not None:
        return trainer.train_examples[:n]
    k = len(run.difficulties)
    return [
        ex
        for i, c in enumerate(run.difficulties)
        for ex in trainer.task.generate(n // k + (i < n % k), seed=2_000_000 + run.seed, difficulty=c)
    ]


def pretrain_step(trainer: GRPOTrainer) -> list[float]:
    """Pre-train the coupling of ``trainer.policy`` on the run's settings (``coupling_prompts``,
    ``coupling_epochs``, the task, MDM and sampling of its rollouts); the NLL of each epoch."""
    cfg = trainer.cfg
    if not cfg.coupling_prompts:
        raise ValueError("--coupling-prompts 0 pre-trains nothing; give the number of prompts (e.g. 3000)")
    examples = coupling_examples(trainer)
    try:  # fail before any rollout
        trainer.task.targets(examples[:1], trainer.model)
    except NotImplementedError as e:
        raise ValueError(str(e)) from None
    generator = torch.Generator(device=trainer.model.device).manual_seed(ExampleStreams.seed_of(cfg.run.seed, STREAM))
    return pretrain_coupling(
        trainer.task,
        trainer.model,
        trainer.policy,
        examples,
        trainer.sampling,
        generator,
        cfg.coupling_epochs,
        progress=trainer.progress,
    )
