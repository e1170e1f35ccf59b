"""GRPO for unmasking policies with the memory-efficient two-phase loop (UPO Algorithm 2).

Sampling phase (no grad): G rollouts per prompt with the frozen MDM and the
current policy g_phi_old; each step stores only what the update needs (the
policy's observation, the action and its old log-probability).
Update phase: mu passes of minibatches over the stored steps, training g_phi
alone with the token-wise clipped surrogate of Prop. 1 / Eq. 19 and the
reference regulariser of Table 1. The MDM is never called in the update.

One trainer serves UPO's g_phi (``policy="upo"``) and Jazbec's parallel policies
(``"bernoulli"``, ``"plackett-luce"``): every policy exposes ``log_prob(obs, action)``, and each policy config
declares how it trains (``regularised``, ``speed_aware``, ``variable_count``;
:class:`unmask.policies.configs.StructureConfig`); the trainer reads those, never a kind's name.
The parallel ones train on the speed-aware reward of Jazbec §3.3
(:mod:`unmask.training.rewards`), optionally alpha-conditioned (alpha drawn per group from
``alpha_range``) and with expert steering (:mod:`unmask.training.steering`); the reference
regulariser stays UPO's.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from unmask.core.checkpoint import (
    LAST,
    TrainingState,
    check_new_run,
    check_resume_settings,
    load_training_checkpoint,
    resumable_checkpoint,
)
from unmask.core.config import Config, kind_of, option
from unmask.core.distributed import current
from unmask.core.tracking import MetricsLogger, progress_bar
from unmask.engine.decode import GenerationOutput, StepRecord
from unmask.engine.loop import generate
from unmask.engine.policy import Policy
from unmask.engine.streams import ExampleStreams
from unmask.evaluation.run_config import RunConfig, load_data, resolve_task
from unmask.models import MaskedDiffusionModel, load_model
from unmask.policies import check_spec, get_policy
from unmask.policies.configs import (
    CLIQUE_FIELDS,
    CONFIG_TYPES,
    DEFAULT_ALPHA,
    PLANNER_FIELDS,
    ParallelConfig,
    PlackettLuceConfig,
    UPOConfig,
)
from unmask.policies.learned import LearnedPolicy, load_policy
from unmask.policies.planner import cliques
from unmask.tasks.base import EncodedBatch, Scores, Task
from unmask.training.reference import DEFAULT_BETA, Reference
from unmask.training.rewards import REWARD_FORMS, speed_reward, trajectory_logprob
from unmask.training.steering import ExpertSteering, mixture_log_prob


@dataclass
class GRPOConfig(Config):
    """GRPO training of a learned unmasking policy: trainer hyper-parameters (TRL's names where they exist; UPO
    App. E defaults where they apply), the ``run`` (task, model, data, sampling) and the ``policy``'s architecture,
    a config of its kind. Build one from flat names with :meth:`from_flat` (as flags and recipe files do)."""

    COMMON: ClassVar[tuple[str, ...]] = (
        "output_dir",
        "max_steps",
        "num_generations",
        "prompts_per_step",
        "learning_rate",
        "eval_steps",
        "alpha",
        "init_policy",
        "imitation_rounds",
        "report_to",
        "policy",
    )

    output_dir: str = option(
        "runs/upo", "run directory: metrics.csv, best/ (best held-out metric) and last/ (resumable)"
    )
    max_steps: int = option(100, "GRPO steps (TRL max_steps); 0 = only the step-0 evaluation and checkpoint", low=0)
    num_generations: int = option(6, "G: rollouts per prompt, compared within their group (TRL num_generations)", low=1)
    prompts_per_step: int = option(8, "prompts per GRPO step (each decoded num_generations times)", low=1)
    num_iterations: int = option(2, "mu: update passes over each batch of rollouts (TRL num_iterations)", low=1)
    minibatch_size: int = option(2048, "stored (trajectory, step) pairs per gradient step", low=1)
    epsilon: float = option(0.2, "PPO clip range of the ratio (TRL epsilon; UPO Eq. 19)", low=0.0, low_open=True)
    reference: str = option(
        "auto",
        "reference policy of the regulariser (UPO Table 1); auto = confidence for upo, none for the parallel policies",
        choices=("auto", *DEFAULT_BETA),
    )
    beta: float | None = option(
        None,
        "weight of the reference regulariser (TRL beta); none = the reference's paper default (UPO Table 1)",
        low=0.0,
    )
    learning_rate: float = option(3e-4, "AdamW learning rate (TRL learning_rate)", low=0.0, low_open=True)
    lr_scheduler_type: str = option(
        "constant", "learning-rate schedule over max_steps (TRL lr_scheduler_type)", choices=("constant", "cosine")
    )
    weight_decay: float = option(0.1, "AdamW weight decay (none on a coupling's weights)", low=0.0)
    max_grad_norm: float = option(0.2, "gradient clipping norm (TRL max_grad_norm)", low=0.0, low_open=True)
    eval_steps: int = option(
        10, "evaluate on the held-out prompts and checkpoint every N steps (TRL eval_steps)", low=1
    )
    eval_size: int = option(256, "held-out prompts (the first N of --eval-data, or generated ones)", low=1)
    eval_data: str = option("", "held-out prompts from this file; '' = generated ones (a disjoint seed)")
    report_to: str = option(
        "none", "experiment trackers besides metrics.csv (TRL report_to): tensorboard, wandb, none or a comma list"
    )
    reward_form: str = option(
        "auto",
        "the reward: none = the task's reward, multiplicative / additive = "
        "speed-aware (Jazbec §3.3); auto = none for upo, multiplicative otherwise",
        choices=("auto", *REWARD_FORMS),
    )
    baseline: str = option(
        "group",
        "advantage baseline: group = the group mean (GRPO), greedy = the policy's greedy decode (ReMax)",
        choices=("group", "greedy"),
    )
    advantage_scale: str = option(
        "std",
        "std = divide by the group's std (GRPO), none = reward minus baseline (Dr. GRPO)",
        choices=("std", "none"),
    )
    alpha: float = option(
        DEFAULT_ALPHA,
        "speed weight alpha of the reward (Jazbec §3.3); the held-out alpha, and the "
        "default input of alpha-conditioned policies",
        low=0.0,
    )
    expert_steering: list[str] = option(
        [], "heuristic policy specs, one extra trajectory per group each (Jazbec §3.4), e.g. threshold:0.9"
    )
    coupling_prompts: int = option(
        3000,
        "with --coupling-rounds: training prompts whose rollouts pre-train the "
        "coupling before GRPO (unmask.training.pretrain, also `unmask "
        "pretrain-coupling`); 0 = no pre-training",
        low=0,
    )
    coupling_epochs: int = option(6, "passes over those rollouts' states", low=1)
    imitation_rounds: int = option(
        0,
        "rounds of imitation of the ground-truth oracle before GRPO (DAgger: the "
        "policy decodes, the oracle labels; unmask.training.imitation); 0 = none",
        low=0,
    )
    imitation_prompts: int = option(1000, "training prompts decoded per imitation round", low=1)
    imitation_actor: str = option(
        "",
        "a policy spec (e.g. confidence, as for eval) that decodes round 0's prompts instead of the learner: its states "
        "(where it errs) are labelled by the oracle and recorded as the learner observes them; '' = the learner",
    )
    imitation_actor_prompts: int | None = option(
        None, "training prompts of round 0 (the --imitation-actor's round); none = --imitation-prompts", low=1
    )
    imitation_mode: str = option(
        "sample",
        "how the learner decodes its imitation rounds: sample (its own sampled states) or greedy (the states of its "
        "greedy decode, as benchmarks/imitation_dagger.py's DAgger rounds)",
        choices=("sample", "greedy"),
    )
    imitation_reset_optimizer: bool = option(
        False,
        "each imitation round starts a new Adam (as benchmarks/imitation_dagger.py); false = the moments carry over",
    )
    imitation_aggregate: bool = option(
        False,
        "DAgger proper (Ross et al. 2011): each round fits on its states and every earlier round's (kept in "
        "imitation/states/ for --resume); false = on its own states only",
    )
    imitation_epochs: int = option(3, "passes over each round's states", low=1)
    imitation_learning_rate: float = option(1e-3, "Adam learning rate of the imitation fit", low=0.0, low_open=True)
    imitation_batch_size: int = option(256, "states per imitation gradient step", low=1)
    imitation_top_k: int | None = option(
        None,
        "fit the labels of each state's K highest-utility candidates only "
        "(where one-per-step decisions are made; UPO's Top-K, Eq. 27); "
        "none = every candidate",
        low=1,
    )
    imitation_anchor: float = option(
        0.0,
        "lambda of lambda * mean(r^2) on the planner's residual in the imitation "
        "fit: keeps the order of the policy imitation starts from where the labels "
        "give no preference (all near-certain positions are gold)",
        low=0.0,
    )
    imitation_negative_weight: float = option(
        1.0,
        "weight of the 'not gold' labels in the imitation loss (> 1: fewer wrong reveals, for parallel policies)",
        low=0.0,
        low_open=True,
    )
    init_policy: str = option(
        "",
        "start from this policy checkpoint (e.g. written by unmask pretrain-coupling) "
        "instead of a fresh policy: its kind and settings must be the run's, except that "
        "the run may add a planner (--planner, starting at zero); no coupling "
        "pre-training then",
    )
    run: RunConfig = option(default_factory=RunConfig, help="task, model, data and sampling of the rollouts")
    policy: UPOConfig | ParallelConfig | PlackettLuceConfig = option(
        default_factory=UPOConfig,
        help="the learned policy: upo = UPO's g_phi, bernoulli / plackett-luce = Jazbec §3.2's parallel policies",
        kinds=CONFIG_TYPES,
    )

    def check(self) -> None:
        kind = self.policy_kind
        if not self.policy.regularised and self.reference not in ("auto", "none"):
            raise ValueError(
                f"reference {self.reference!r}: the reference regulariser (UPO Table 1) is for --policy "
                f"upo; {kind} policies train without one (Jazbec §3): use --reference none"
            )
        if self.expert_steering and not self.policy.variable_count:
            raise ValueError(
                f"expert_steering (--expert-steering) needs a variable-count policy: bernoulli, or "
                f"plackett-luce with pl_count 'stop' (not {kind})"
            )
        for spec in self.expert_steering:
            get_policy(spec)
        if self.imitation_actor:
            check_spec(self.imitation_actor)
        if self.policy.planner and self.policy.planner_pairs == "cliques" and not self.init_policy:
            raise ValueError(
                "planner_pairs (--planner-pairs) cliques reads the cliques of a trained coupling: start from a "
                "policy with one (--init-policy DIR: a shipped policy, or one written by `unmask pretrain-coupling "
                "--no-planner`) or use --planner-pairs learned"
            )
        if self.baseline == "greedy" and self.expert_steering:
            raise ValueError(
                "the greedy baseline compares the policy with itself; it does not combine with expert steering"
            )
        alpha_range = getattr(self.policy, "alpha_range", None)
        if alpha_range is not None and not alpha_range[0] <= self.alpha <= alpha_range[1]:
            raise ValueError(f"alpha {self.alpha:g} lies outside the alpha range {alpha_range}")
        if self.num_generations == 1 and self.baseline == "group" and not self.expert_steering:
            raise ValueError(
                "num_generations (--num-generations) 1 with the group baseline gives every rollout a zero "
                "advantage (nothing trains): use --num-generations 2 or more, --baseline greedy or "
                "--expert-steering"
            )

    @property
    def policy_kind(self) -> str:
        return kind_of(self.policy, CONFIG_TYPES)

    @property
    def reference_kind(self) -> str:
        """The reference with ``auto`` resolved."""
        return self.reference if self.reference != "auto" else ("confidence" if self.policy.regularised else "none")

    @property
    def reward_kind(self) -> str:
        """The reward form with ``auto`` resolved."""
        return (
            self.reward_form
            if self.reward_form != "auto"
            else ("multiplicative" if self.policy.speed_aware else "none")
        )


@dataclass
class RolloutBuffer:
    """Flat storage of every (trajectory, step) of a batch of rollouts."""

    obs: dict[str, torch.Tensor]
    action: torch.Tensor
    old_log_prob: torch.Tensor
    traj: torch.Tensor  # trajectory index of each stored step
    advantage: torch.Tensor  # per trajectory
    length: torch.Tensor  # steps per trajectory
    steered: torch.Tensor | None = None  # per trajectory: decoded by an expert (old log-probs already mixed)
    group: tuple[int, int] = (0, 0)  # (G policy rollouts, E expert ones) of each group

    @classmethod
    def from_records(
        cls,
        records: Sequence[StepRecord],
        advantage: torch.Tensor,
        nfe: torch.Tensor,
        steered: torch.Tensor | None = None,
        group: tuple[int, int] = (0, 0),
    ) -> RolloutBuffer:
        keys = [k for k in records[0].data if k not in ("action", "old_log_prob")]
        kmax = max(r.data["action"].shape[1] for r in records)
        pad = lambda a: torch.nn.functional.pad(a, (0, kmax - a.shape[1]), value=-1)  # noqa: E731
        return cls(
            obs={k: torch.cat([r.data[k] for r in records]) for k in keys},
            action=torch.cat([pad(r.data["action"]) for r in records]),
            old_log_prob=torch.cat([r.data["old_log_prob"] for r in records]),
            traj=torch.cat([r.rows for r in records]),
            advantage=advantage,
            length=nfe.clamp(min=1).float(),
            steered=steered,
            group=group,
        )

    def __len__(self) -> int:
        return len(self.traj)

    def take(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v[idx] for k, v in self.obs.items()}

    def nbytes(self) -> int:
        tensors = list(self.obs.values()) + [self.action, self.old_log_prob, self.traj]
        return sum(t.numel() * t.element_size() for t in tensors)


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4, scale: bool = True) -> torch.Tensor:
    """A_g = (r_g - mean) / (std + eps) within each group of G rollouts of one prompt (GRPO); ``scale=False``
    leaves out the division (Dr. GRPO, Liu et al. 2025), so a group that differs only by a small reward term
    (e.g. the speed term when every rollout is correct) gets small advantages instead of +-1."""
    r = rewards.view(-1, group_size)
    centred = r - r.mean(1, keepdim=True)
    return (centred / (r.std(1, keepdim=True) + eps) if scale else centred).view(-1)


def greedy_baseline_advantages(
    rewards: torch.Tensor, group_size: int, greedy: torch.Tensor, eps: float = 1e-4, scale: bool = True
) -> torch.Tensor:
    """A_g = (r_g - r_greedy) / (std + eps) per prompt (ReMax, Li et al. 2023): the baseline is the reward of the
    policy's own greedy decode, so moving toward greedy earns nothing and only samples that beat it are
    reinforced; std is over the group and the greedy reward (all equal: zero advantages); ``scale`` as in
    :func:`group_advantages`."""
    r = rewards.view(-1, group_size)
    centred = r - greedy[:, None]
    spread = torch.cat([r, greedy[:, None]], 1).std(1, keepdim=True)
    return (centred / (spread + eps) if scale else centred).view(-1)


def upo_loss(
    policy: LearnedPolicy,
    buf: RolloutBuffer,
    idx: torch.Tensor,
    reference: Reference,
    epsilon: float,
    kappa: torch.Tensor | None,
    n_traj: int,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Minibatch part of -L_UPO (Eq. 19/22): clipped token-wise surrogate / L per trajectory,
    plus beta * CE(g_conf || g_phi) (Eq. 29) or beta * kappa * log g_phi (L_KL, Eq. 24).
    Any policy's ``log_prob`` serves; expert-steered steps use the mixture log-probability."""
    obs, action, traj = buf.take(idx), buf.action[idx], buf.traj[idx]
    scores = policy.scores(obs)
    logp = policy.log_prob(obs, action, scores)
    if buf.steered is not None:
        logp = torch.where(buf.steered[traj], mixture_log_prob(logp, *buf.group), logp)
    ratio = (logp - buf.old_log_prob[idx]).exp()
    adv = buf.advantage[traj]
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - epsilon, 1 + epsilon) * adv) / buf.length[traj]
    loss = -surrogate.sum() / n_traj
    stats = {
        "clip_frac": ((ratio - 1).abs() > epsilon).float().mean().item(),
        # KL(pi_old || pi_theta) over the sampled actions, two estimators (Schulman 2020, "Approximating KL
        # divergence"): k1 = -log r, unbiased but noisy and signed; k3 = (r - 1) - log r >= 0, what TRL and
        # PPO implementations log as approx_kl
        "kl_k1": (buf.old_log_prob[idx] - logp).mean().item(),
        "approx_kl": ((ratio - 1) - (logp - buf.old_log_prob[idx])).mean().item(),
        "entropy": policy.entropy(obs, scores.detach()).mean().item(),
    }
    if reference.divergence == "ce":
        ce = -policy.log_prob(obs, reference.confidence_action(obs, action), scores)
        loss = loss + reference.beta * ce.sum() / n_traj
        stats["ce"] = ce.mean().item()
    elif reference.divergence == "kl":
        loss = loss + reference.beta * (kappa[traj] * logp).sum() / n_traj
        stats["kl_ref"] = (logp - reference.log_prob(obs, action)).mean().item()
    return loss, stats


@torch.no_grad()
def trajectory_kappa(policy: LearnedPolicy, buf: RolloutBuffer, reference: Reference, chunk: int) -> torch.Tensor:
    """kappa_g = StopGrad(p_phi/p_old * (1 + log p_phi/p_ref)) per trajectory (Eq. 24, Alg. 2 l.11-14)."""
    n = len(buf.advantage)
    d_old = torch.zeros(n, device=buf.traj.device)
    d_ref = torch.zeros(n, device=buf.traj.device)
    for s in range(0, len(buf), chunk):
        idx = torch.arange(s, min(s + chunk, len(buf)), device=buf.traj.device)
        obs, action, traj = buf.take(idx), buf.action[idx], buf.traj[idx]
        logp = policy.log_prob(obs, action)
        d_old.index_add_(0, traj, logp - buf.old_log_prob[idx])
        d_ref.index_add_(0, traj, logp - reference.log_prob(obs, action))
    return d_old.clamp(-5, 5).exp() * (1 + d_ref)


def held_out_examples(task: Task, config: GRPOConfig) -> list:
    """The held-out prompts: the first ``eval_size`` of ``eval_data``, or generated ones (a disjoint seed)."""
    run = config.run
    if config.eval_data:
        return load_data(task, config.eval_data, "--eval-data")[: config.eval_size]
    try:
        return [
            ex
            for c in run.difficulties
            for ex in task.generate(
                max(1, config.eval_size // len(run.difficulties)), seed=10_000 + run.seed, difficulty=c
            )
        ]
    except NotImplementedError:
        raise ValueError(
            f"task {run.task} does not generate examples: give the held-out prompts with "
            f"--eval-data FILE (and the training prompts with --data FILE)"
        ) from None


def generation_length(task: Task, model: MaskedDiffusionModel, examples: list) -> int:
    """Positions of the task's generation region (what a coupling or a planner is learned over)."""
    enc = task.encode(examples[:1], model)
    return enc.input_ids.shape[1] - enc.gen_start


def build_policy(config: GRPOConfig, model: MaskedDiffusionModel, length: int) -> LearnedPolicy:
    """A fresh policy of ``config.policy``'s kind and settings for ``model``; ``length``: the generation region's
    positions (a coupling's and a planner's size). Regularised kinds take the reference's settings (UPO Table 1),
    speed-aware ones the trainer's alpha as their default input."""
    settings = config.policy.to_dict()
    settings["coupling_length"] = length if config.policy.coupling_rounds else 0
    settings["planner_length"] = length if config.policy.planner else 0
    if config.policy.regularised:
        settings.update(Reference(config.reference_kind, config.beta).policy_kwargs())
    if config.policy.speed_aware:
        settings["alpha"] = config.alpha  # the trainer's alpha is the policy's default input
    return LearnedPolicy.for_model(config.policy_kind, model, **settings)


class GRPOTrainer:
    """Trains a learned unmasking policy against a frozen MDM (``unmask train-policy``).

    Given its objects, as a Hugging Face ``Trainer`` is: the ``policy`` to train, the frozen ``model``, the
    ``task`` (verifier and reward) and the ``config``; ``train_examples`` (None: fresh ones generated per step)
    and ``eval_examples`` (the held-out prompts). :meth:`from_config` builds them all from a config, as the
    command line does."""

    def __init__(
        self,
        policy: LearnedPolicy,
        model: MaskedDiffusionModel,
        task: Task,
        config: GRPOConfig,
        train_examples: list | None = None,
        eval_examples: list | None = None,
        reward_fn: Callable | None = None,
        progress: bool = True,
    ) -> None:
        """``reward_fn(completions, examples, nfe=, length=, alpha=, logprob=) -> list[float]`` replaces the
        built-in reward (TRL-style; ``length`` = positions generated per row, ``alpha`` per row)."""
        self.cfg = config
        self._resolve_settings()
        run = config.run
        self.dist = current()
        self.dist.check_divides(config.prompts_per_step)
        if policy.kind != config.policy_kind:
            raise ValueError(
                f"the policy is a {policy.kind} policy but the config trains {config.policy_kind}; give a "
                f"{config.policy_kind} policy (GRPOTrainer.from_config builds one) or set --policy {policy.kind}"
            )
        self.task, self.model, self.policy = task, model, policy
        self.sampling = run.sampling
        self.reward_fn = reward_fn
        self.progress = progress and self.dist.main
        self.difficulties = run.difficulties
        self.train_examples = train_examples
        self.eval_examples = eval_examples if eval_examples is not None else held_out_examples(task, config)
        self.initial_metrics: dict = {}  # metrics of the steps before GRPO that ran elsewhere (--init-policy)
        if config.init_policy:
            self._load_initial(config.init_policy)
        coupling = [p for n, p in self.policy.named_parameters() if n.startswith("coupling.")]
        rest = [p for n, p in self.policy.named_parameters() if not n.startswith("coupling.")]
        groups = [{"params": rest}] + ([{"params": coupling, "weight_decay": 0.0}] if coupling else [])
        # no decay on the coupling: W -> 0 would mean a strength softplus(0) between every pair of positions
        self.opt = torch.optim.AdamW(
            groups, lr=config.learning_rate, betas=(0.9, 0.99), weight_decay=config.weight_decay
        )
        self.policy.to(self.model.device)
        self.gen = torch.Generator(device=self.model.device).manual_seed(run.seed)
        self.step = 0
        self.best = -1.0
        self.skipped = 0
        self.out = Path(config.output_dir)

    @classmethod
    def from_config(cls, config: GRPOConfig, reward_fn: Callable | None = None, progress: bool = True) -> GRPOTrainer:
        """The task, the MDM (with the options the run gives), the examples and a fresh policy of
        ``config.policy``'s kind (seeded by ``config.run.seed``), all from ``config``."""
        run = config.run
        current()  # before the model: each GPU process loads onto its own device
        task, model_name = resolve_task(run.task, run.model, run.task_options)  # the model's own options
        model = load_model(model_name, **run.model_options)
        train_examples = load_data(task, run.data) if run.data else None
        eval_examples = held_out_examples(task, config)
        torch.manual_seed(run.seed)
        policy = build_policy(config, model, generation_length(task, model, eval_examples))
        return cls(policy, model, task, config, train_examples, eval_examples, reward_fn, progress)

    def _resolve_settings(self) -> None:
        """The trainer's view of its (already validated) config: reference, reward form, alpha range, experts."""
        cfg = self.cfg
        self.reference = Reference(cfg.reference_kind, cfg.beta)
        self.reward_form = cfg.reward_kind
        self.alpha_range = getattr(cfg.policy, "alpha_range", None)
        self.experts = [get_policy(spec) for spec in cfg.expert_steering]

    def _load_initial(self, directory: str) -> None:
        """Start from the weights of the policy checkpoint ``directory`` (``--init-policy``); keep the final NLL of
        its coupling pre-training (``coupling_nll``, written by ``pretrain-coupling``) for the step-0 row."""
        initial = load_policy(directory)
        adds_planner = self.policy.planner is not None and initial.planner is None  # a zero-initialised one
        # a clique planner's K and slots are derived from the weights (compared through them)
        fields = (*(PLANNER_FIELDS if adds_planner else CLIQUE_FIELDS), "calibration")  # calibration: learned
        comparable = replace(initial.config, **{f: getattr(self.policy.config, f) for f in fields})
        if initial.kind != self.policy.kind or comparable != self.policy.config:
            ours, theirs = asdict(self.policy.config), asdict(initial.config)
            differ = [f"{k}: {theirs.get(k)!r} there, {v!r} here" for k, v in ours.items() if theirs.get(k) != v]
            raise ValueError(
                f"--init-policy {directory} is a {initial.kind} policy with other settings than this run's "
                f"{self.policy.kind} policy ({'; '.join(differ) or 'another kind'}); train it with this "
                "run's settings (the same recipe), or drop --init-policy"
            )
        ours = self.policy.config
        if ours.planner and ours.planner_pairs == "cliques":  # the cliques of the coupling it starts from
            self.policy.use_cliques(
                cliques(initial.coupling.strength.detach(), ours.clique_threshold, ours.clique_min_size)
                if adds_planner
                else initial.planner.cliques
            )
        self.policy.load_state_dict({**self.policy.state_dict(), **initial.state_dict()})
        self.policy.config = replace(self.policy.config, calibration=initial.config.calibration)
        history = initial.record.get("coupling_nll")
        self.initial_metrics = {"coupling_nll": history[-1]} if history else {}

    @property
    def needs_pretraining(self) -> bool:
        """Whether the run starts with the coupling pre-training step (:func:`unmask.training.pretrain.pretrain_step`)."""
        return bool(self.cfg.policy.coupling_rounds and self.cfg.coupling_prompts and not self.cfg.init_policy)

    def generation_length(self) -> int:
        """Positions of the task's generation region (what a coupling is learned over)."""
        return generation_length(self.task, self.model, self.eval_examples)

    @property
    def eval_alphas(self) -> list[float]:
        """Held-out alphas: the run's alpha, or the ends and middle of an alpha range."""
        if self.alpha_range is None:
            return [self.cfg.alpha]
        lo, hi = self.alpha_range
        return [lo, (lo + hi) / 2, hi]

    # ----- persistence -----
    def _meta(self) -> dict:
        return {
            "train": self.cfg.to_dict(),
            "mdm": self.cfg.run.model or self.task.default_model,
            "task": self.task.name,
            "processes": self.dist.world_size,
        }

    def save(self) -> None:
        """The resumable checkpoint ``last/`` of the current step, atomically (:func:`unmask.core.checkpoint.save_checkpoint`)."""
        if not self.dist.main:  # rank 0 alone writes; every rank holds the same state
            return
        rng = {"generator": self.gen.get_state(), "torch": torch.get_rng_state()}
        self.policy.save(
            self.out / LAST,
            self._meta(),
            TrainingState(self.opt, rng, {"step": self.step, "best": self.best, "skipped": self.skipped}),
        )

    def resume(self) -> None:
        """Restore the latest complete checkpoint (``last/``, else ``last.prev/``): weights, optimizer, RNGs, counters."""
        last = resumable_checkpoint(self.out)
        check_resume_settings(last, self.cfg.to_dict(), self.cfg.lr_scheduler_type != "constant")
        rng, state = load_training_checkpoint(last, self.policy, self.opt)
        self.policy.load_calibration(last)
        self.gen.set_state(rng["generator"])
        torch.set_rng_state(rng["torch"])
        self.step, self.best, self.skipped = state["step"], state["best"], state["skipped"]

    # ----- phases -----
    def prompts(self, step: int) -> list:
        """The prompts of training step ``step``: a pure function of (seed, step), so resuming is exact.
        From a file: consecutive slices of a per-epoch seeded shuffle; else freshly generated."""
        P = self.cfg.prompts_per_step
        if self.train_examples is None:
            difficulty = random.Random(f"{self.cfg.run.seed}-{step}").choice(self.difficulties)
            return self.task.generate(P, seed=1_000_000 * (self.cfg.run.seed + 1) + step, difficulty=difficulty)
        n = len(self.train_examples)
        out = []
        for i in range(step * P, (step + 1) * P):
            epoch, pos = divmod(i, n)
            order = list(range(n))
            random.Random(f"{self.cfg.run.seed}-epoch-{epoch}").shuffle(order)
            out.append(self.train_examples[order[pos]])
        return out

    @property
    def selection(self) -> str:
        """The held-out metric that picks ``best``: the speed-aware reward when training on one."""
        return "eval_reward" if self.reward_form != "none" else "eval_solved"

    def generated_length(self, input_ids: torch.Tensor, gen_start: int) -> torch.Tensor:
        """L of the speed term: the positions each row generates."""
        return (input_ids[:, gen_start:] == self.model.mask_id).sum(1).to(self.model.device)

    def rewards(
        self,
        examples: list,
        completions: list,
        scores: Scores,
        nfe: torch.Tensor,
        length: torch.Tensor,
        alpha: torch.Tensor,
        logprob: torch.Tensor,
    ) -> torch.Tensor:
        """The custom ``reward_fn``, the task's reward (``reward_form="none"``) or the speed-aware reward."""
        if self.reward_fn is not None:
            rewards = self.reward_fn(completions, examples, logprob=logprob, nfe=nfe, length=length, alpha=alpha)
        elif self.reward_form == "none":
            rewards = scores.reward
        else:
            rewards = speed_reward(
                torch.as_tensor(scores.solved, device=nfe.device), nfe, length, alpha, self.reward_form
            )
        return torch.as_tensor(rewards, dtype=torch.float32).to(self.model.device)

    @torch.no_grad()
    def rollout(self, examples: list) -> tuple[RolloutBuffer, dict]:
        """Sampling phase: G trajectories per prompt from g_phi_old, plus one per steering expert;
        an alpha-conditioned policy gets one alpha ~ U[LO, HI] per group (its G + E rollouts share it,
        so group-relative advantages compare trajectories under one objective)."""
        G, E = self.cfg.num_generations, len(self.experts)
        group = [ex for ex in examples for _ in range(G + E)]
        enc = self.task.encode(group, self.model)
        device = self.model.device
        if self.alpha_range is None:
            alpha = torch.full((len(group),), self.cfg.alpha, device=device)
        else:
            lo, hi = self.alpha_range
            every = torch.rand(len(examples) * self.dist.world_size, generator=self.gen, device=device)  # all groups
            alpha = (lo + (hi - lo) * self.dist.local(every)).repeat_interleave(G + E)
        self.policy.eval()
        actor = sampler = self.policy.with_options(mode="sample")
        steered = None
        if E:
            expert_of = (torch.arange(G + E, device=device) - G).clamp(min=-1).repeat(len(examples))
            steered = expert_of >= 0
            actor = ExpertSteering(sampler, self.experts, expert_of, G)
        out, scores, rewards = self.decode_and_reward(group, enc, actor, alpha, self.streams(len(group)), record=True)
        greedy = None
        if self.cfg.baseline == "greedy":
            greedy = self.greedy_rewards(examples, alpha.view(-1, G)[:, 0], self.streams(len(examples), len(group)))
            adv = greedy_baseline_advantages(rewards, G, greedy, scale=self.cfg.advantage_scale == "std")
        else:
            adv = group_advantages(rewards, G + E, scale=self.cfg.advantage_scale == "std")
        buf = RolloutBuffer.from_records(out.trajectory, adv, out.nfe, steered, (G, E))
        policy_rows = np.ones(len(group), dtype=bool) if steered is None else ~steered.cpu().numpy()
        nfe = out.nfe.float().cpu().numpy()
        stats = {
            "reward_mean": rewards.mean().item(),
            "reward_std": rewards.view(-1, G + E).std(1).mean().item(),
            "train_solved": float(scores.solved[policy_rows].mean()),
            "nfe": float(nfe[policy_rows].mean()),
            "buffer_mb": buf.nbytes() / 2**20,
        }
        if greedy is not None:
            stats["greedy_reward"] = greedy.mean().item()
        if E:
            stats["expert_solved"] = float(scores.solved[~policy_rows].mean())
            stats["expert_nfe"] = float(nfe[~policy_rows].mean())
        return buf, self.dist.mean(stats, summed=("buffer_mb",))

    def streams(self, rows: int, offset: int = 0) -> ExampleStreams:
        """Random streams of this process's ``rows`` decodes of the step: one per row, seeded from (run seed, step)
        and the row's index in the whole step (every process decodes ``rows``, after ``offset`` rows each, e.g. the
        rollouts before the greedy decodes), so a rollout depends on neither the batch nor the number of
        processes (:class:`unmask.engine.streams.ExampleStreams`)."""
        first = offset * self.dist.world_size + self.dist.rank * rows
        seed = ExampleStreams.seed_of(self.cfg.run.seed, self.step)
        return ExampleStreams(seed, range(first, first + rows), device=self.model.device)

    def decode_and_reward(
        self,
        examples: list,
        enc: EncodedBatch,
        actor: Policy,
        alpha: torch.Tensor,
        streams: ExampleStreams,
        record: bool = False,
    ) -> tuple[GenerationOutput, Scores, torch.Tensor]:
        """Decode encoded ``examples`` with ``actor`` (each row's ``alpha`` a policy input); the output, the task's
        scores and the training rewards."""
        out = generate(
            self.model,
            enc.input_ids,
            actor,
            self.sampling,
            enc.attention_mask,
            enc.gen_start,
            streams,
            record=record,
            inputs={"alpha": alpha},
        )
        completions = self.task.decode(examples, out.sequences, self.model)
        logprob = trajectory_logprob(out)
        scores = self.task.score(examples, completions, logprob=logprob)
        length = self.generated_length(enc.input_ids, enc.gen_start)
        return out, scores, self.rewards(examples, completions, scores, out.nfe, length, alpha, logprob)

    def greedy_rewards(self, examples: list, alpha: torch.Tensor, streams: ExampleStreams) -> torch.Tensor:
        """Rewards of the policy's inference-mode decode (its ``default_mode``) of each prompt: the ReMax baseline."""
        return self.decode_and_reward(examples, self.task.encode(examples, self.model), self.policy, alpha, streams)[2]

    @cached_property
    def objective(self) -> Callable:
        """:func:`upo_loss` of the policy, its gradients summed over processes (DDP); built at the first update."""
        return self.dist.wrap(self.policy, upo_loss)

    def update(self, buf: RolloutBuffer) -> dict:
        """Update phase: mu passes over shuffled minibatches of stored steps; the MDM is not used. The shuffle
        runs over the steps of every process (:meth:`unmask.core.distributed.Distributed.step_positions`); each takes
        its own steps of a minibatch and DDP sums the gradients, so the update is the one-process one."""
        self.policy.train()
        n_traj = len(buf.advantage) * self.dist.world_size
        positions, total = self.dist.step_positions(torch.bincount(buf.traj, minlength=len(buf.advantage)))
        local = torch.full((total,), -1, dtype=torch.long, device=buf.traj.device)
        local[positions] = torch.arange(len(buf), device=buf.traj.device)
        agg: dict[str, list[float]] = {}
        for _ in range(self.cfg.num_iterations):
            kappa = (
                trajectory_kappa(self.policy, buf, self.reference, self.cfg.minibatch_size)
                if self.reference.divergence == "kl"
                else None
            )
            perm = torch.randperm(total, generator=self.gen, device=self.gen.device)
            n_mb = math.ceil(total / self.cfg.minibatch_size)
            done = []
            for chunk in perm.chunk(n_mb):
                idx = local[chunk.to(local.device)]
                idx = idx[idx >= 0]  # this process's steps of the minibatch
                mine = len(idx)  # 0: it still joins the gradient all-reduce, with one of its steps at weight 0
                loss, stats = self.objective(
                    buf, idx if mine else idx.new_zeros(1), self.reference, self.cfg.epsilon, kappa, n_traj
                )
                loss = loss * (n_mb if mine else 0)  # each minibatch is ~1/n_mb of the objective
                self.opt.zero_grad(set_to_none=True)
                self.dist.backward(loss)
                if not self.dist.all_finite(loss):
                    self.skipped += 1
                    warnings.warn(
                        f"step {self.step}: non-finite loss, update skipped ({self.skipped} so far)", stacklevel=2
                    )
                    self.opt.zero_grad(set_to_none=True)
                    continue
                stats["grad_norm"] = torch.nn.utils.clip_grad_norm_(
                    self.policy.parameters(), self.cfg.max_grad_norm
                ).item()
                self.opt.step()
                stats["loss"] = loss.item()
                done.append((mine, stats))
            for stats in self.dist.weighted(done, summed=("loss",), same=("grad_norm",)):
                for k, v in stats.items():
                    agg.setdefault(k, []).append(v)
        return {k: float(np.mean(v)) for k, v in agg.items()}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Held-out solved rate, mean NFE and (speed-aware runs) mean reward, averaged over :attr:`eval_alphas`;
        the policy decodes as at inference (its ``default_mode``; sampling with a fixed seed)."""
        self.policy.eval()
        examples, (lo, hi) = self.dist.shard(self.eval_examples), self.dist.bounds(len(self.eval_examples))
        enc = self.task.encode(examples, self.model)
        length = self.generated_length(enc.input_ids, enc.gen_start)
        metrics: dict[str, list[float]] = {}
        for alpha in self.eval_alphas:
            streams = ExampleStreams(self.cfg.run.seed, range(lo, hi), device=self.model.device)
            out = generate(
                self.model,
                enc.input_ids,
                self.policy,
                self.sampling,
                enc.attention_mask,
                enc.gen_start,
                streams,
                inputs={"alpha": torch.full((len(examples),), float(alpha), device=self.model.device)},
            )
            solved = self.task.score(examples, self.task.decode(examples, out.sequences, self.model)).solved
            per = {"solved": solved, "nfe": out.nfe}
            if self.reward_form != "none":
                per["reward"] = speed_reward(
                    torch.as_tensor(solved, device=out.nfe.device), out.nfe, length, alpha, self.reward_form
                )
            per = self.dist.gather(per)  # every process's examples, in order
            metrics.setdefault("eval_solved", []).append(float(per["solved"].mean()))
            metrics.setdefault("eval_nfe", []).append(per["nfe"].float().mean().item())
            if "reward" in per:
                metrics.setdefault("eval_reward", []).append(per["reward"].mean().item())
        return {k: float(np.mean(v)) for k, v in metrics.items()}

    def lr_at(self, step: int) -> float:
        if self.cfg.lr_scheduler_type == "constant":
            return self.cfg.learning_rate
        return 0.5 * self.cfg.learning_rate * (1 + math.cos(math.pi * step / max(1, self.cfg.max_steps)))

    def train(self, resume: bool = False, max_minutes: float | None = None, initial: dict | None = None) -> Path:
        """Run to ``cfg.max_steps``; with ``max_minutes``, stop early at the first step boundary past that wall time,
        after a held-out evaluation and a resumable checkpoint (``--resume`` continues exactly from there).
        ``initial``: metrics of the steps before GRPO (e.g. the coupling pre-training's) for the step-0 row."""
        if max_minutes is not None and max_minutes <= 0:
            raise ValueError(f"max_minutes must be > 0, got {max_minutes:g}")
        deadline = None if max_minutes is None else time.monotonic() + 60 * max_minutes
        if resume:
            self.resume()
        else:
            check_new_run(self.out)
        logger = MetricsLogger(
            self.out, resume_step=self.step if resume else None, report_to=self.cfg.report_to, config=self.cfg.to_dict()
        )
        if not resume:  # step 0 (a resumed run has its step-0 row and checkpoint already)
            metrics = {**(initial or {}), **self.evaluate()}
            self.best = metrics[self.selection]
            if self.dist.main:  # rank 0 alone writes checkpoints; every rank holds the same state
                self.policy.save(self.out / "best", {**self._meta(), **metrics, "step": 0})
            logger.log({"step": 0, **metrics})  # each row before its checkpoint: a kill between them loses no row
            self.save()
        with progress_bar(
            total=self.cfg.max_steps,
            initial=self.step,
            desc=f"train-policy {self.task.name}",
            disable=not self.progress,
        ) as bar:  # closed before an interruption's message
            while self.step < self.cfg.max_steps:
                t0 = time.perf_counter()
                for g in self.opt.param_groups:
                    g["lr"] = self.lr_at(self.step)
                buf, roll = self.rollout(self.dist.shard_groups(self.prompts(self.step)))
                upd = self.update(buf)
                self.step += 1
                row = {
                    "step": self.step,
                    **roll,
                    **upd,
                    "lr": self.lr_at(self.step - 1),
                    "skipped": self.skipped,
                    "seconds": time.perf_counter() - t0,
                }
                # all processes stop at one step
                out_of_time = self.dist.any(deadline is not None and time.monotonic() > deadline)
                checkpoint = self.step % self.cfg.eval_steps == 0 or self.step == self.cfg.max_steps or out_of_time
                if checkpoint:
                    metrics = self.evaluate()
                    row.update(metrics)
                    if metrics[self.selection] > self.best:
                        self.best = metrics[self.selection]
                        if self.dist.main:
                            self.policy.save(self.out / "best", {**self._meta(), **metrics, "step": self.step})
                logger.log(row)
                if checkpoint:
                    self.save()
                bar.update(1)
                bar.set_postfix(
                    reward=f"{roll['reward_mean']:.3f}",
                    solved=f"{roll['train_solved']:.2f}",
                    nfe=f"{roll['nfe']:.1f}",
                    best=f"{self.best:.3f}",
                )
                if out_of_time:
                    if self.dist.main:
                        bar.write(
                            f"train-policy: stopped at step {self.step}/{self.cfg.max_steps} after "
                            f"{max_minutes:g} min (--max-minutes); --resume continues from {self.out / LAST}"
                        )
                    break
        logger.close()
        self.dist.barrier()  # every process returns once rank 0 has written the last checkpoint
        return self.out
