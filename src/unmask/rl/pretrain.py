"""Supervised pre-training of a policy's coupling (:mod:`unmask.policies.coupling`) before GRPO.

The policy decodes training prompts by sampling (Algorithm 2's sampling phase: MDM and policy under no-grad),
and every state up to the trajectory's first wrong reveal is kept with the true tokens of its positions
(:meth:`unmask.tasks.base.Task.targets`). Then only the coupling is fitted: ``epochs`` passes of Adam over the
stored states, minimising the negative log-likelihood of the true tokens under the refined marginals
(:func:`unmask.policies.coupling.coupling_nll`). The signal is dense (every masked position of every state),
where GRPO's is one scalar per trajectory; the MDM is not called during the fit.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from unmask.engine import SamplingConfig, generate
from unmask.models import MaskedDiffusionModel
from unmask.policies.coupling import coupling_nll
from unmask.policies.base import LearnedPolicy
from unmask.tasks import Task

KEEP = ("token_probs", "masked", "tokens")


@torch.no_grad()
def collect_states(task: Task, model: MaskedDiffusionModel, policy: LearnedPolicy, examples: list,
                   sampling: SamplingConfig, generator: torch.Generator, batch_size: int = 64,
                   progress: bool = True) -> dict[str, torch.Tensor]:
    """``token_probs``, ``masked``, ``tokens`` and ``target`` of every state of sampled rollouts before the
    first reveal of a wrong token (later states condition on a contradiction of the target)."""
    policy.eval()
    policy.mode = "sample"
    parts: list[dict[str, torch.Tensor]] = []
    for i in tqdm(range(0, len(examples), batch_size), desc=f"coupling rollouts ({len(examples)} prompts)",
                  disable=not progress, dynamic_ncols=True):
        batch = examples[i : i + batch_size]
        target = task.targets(batch, model).to(model.device)
        enc = task.encode(batch, model)
        out = generate(model, enc.input_ids, policy, sampling, enc.attention_mask, enc.gen_start, generator, record=True)
        alive = torch.ones(len(batch), dtype=torch.bool, device=model.device)
        for rec in out.trajectory:
            keep = alive[rec.rows]
            rows_target = target[rec.rows]
            parts.append({**{k: rec.data[k][keep] for k in KEEP}, "target": rows_target[keep]})
            wrong = (rec.reveal & (rec.data["tokens"] != rows_target)).any(1)
            alive[rec.rows[wrong]] = False
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def pretrain_coupling(task: Task, model: MaskedDiffusionModel, policy: LearnedPolicy, examples: list,
                      sampling: SamplingConfig, generator: torch.Generator, epochs: int, learning_rate: float = 0.05,
                      batch_size: int = 512, progress: bool = True) -> list[float]:
    """Fit ``policy.coupling`` (see the module docstring); returns the mean NLL of each epoch."""
    if not policy.config.coupling_rounds:
        raise ValueError("this policy has no coupling to pre-train (coupling_rounds = 0)")
    states = collect_states(task, model, policy, examples, sampling, generator, progress=progress)
    opt = torch.optim.Adam(policy.coupling.parameters(), lr=learning_rate)
    policy.train()
    history = []
    bar = tqdm(range(epochs), desc=f"coupling ({len(states['target'])} states)", disable=not progress, dynamic_ncols=True)
    for _ in bar:
        perm = torch.randperm(len(states["target"]), generator=generator, device=generator.device)
        total = 0.0
        for idx in perm.split(batch_size):
            loss = coupling_nll(policy.coupling, states["token_probs"][idx], states["masked"][idx], states["target"][idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        history.append(total / len(perm))
        bar.set_postfix(nll=f"{history[-1]:.4f}")
    return history
