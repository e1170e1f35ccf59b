"""GRPO for unmasking policies with the memory-efficient two-phase loop (UPO Algorithm 2).

Sampling phase (no grad): G rollouts per prompt with the frozen MDM and the
current policy g_phi_old; each step stores only what the update needs (the
policy's observation, the action and its old log-probability).
Update phase: mu passes of minibatches over the stored steps, training g_phi
alone with the token-wise clipped surrogate of Prop. 1 / Eq. 19 and the
reference regulariser of Table 1. The MDM is never called in the update.

One trainer serves UPO's g_phi (``policy="upo"``) and Jazbec's parallel policies
(``"bernoulli"``, ``"plackett-luce"``): every policy exposes ``log_prob(obs, action)``.
The parallel ones train on the speed-aware reward of Jazbec §3.3
(:mod:`unmask.rl.rewards`), optionally alpha-conditioned (alpha drawn per group from
``alpha_range``) and with expert steering (:mod:`unmask.rl.steering`); the reference
regulariser stays UPO's.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from unmask.checkpoint import CONFIG, load_json, load_state_into, load_tensors, load_training_state, save_json, save_training_state, WEIGHTS
from unmask.engine import GenerationOutput, SamplingConfig, StepRecord, generate
from unmask.logging import MetricsLogger
from unmask.models import MaskedDiffusionModel, load_model
from unmask.policies import get_policy
from unmask.policies.base import LearnedPolicy, Policy
from unmask.policies.learned import POLICY_KINDS, UPOPolicy
from unmask.policies.parallel import check_alpha, check_alpha_range, check_temperature
from unmask.rl.pretrain import pretrain_coupling
from unmask.rl.reference import Reference
from unmask.rl.rewards import REWARD_FORMS, speed_reward
from unmask.rl.steering import ExpertSteering, mixture_log_prob
from unmask.tasks import Task, get_task
from unmask.tasks.base import EncodedBatch, Scores
from unmask.tasks.math_reward import trajectory_logprob


@dataclass
class GRPOConfig:
    """Hyper-parameters (TRL names where they exist; UPO App. E defaults where they apply)."""

    task: str = "sudoku9"
    model: str = ""  # MDM name or path; "" = the task's shipped model
    output_dir: str = "runs/upo"
    policy: str = "upo"  # upo (UPO g_phi) | bernoulli | plackett-luce (Jazbec §3.2)
    reference: str | None = None  # confidence | softmax | topk | none (Table 1); None: confidence for upo, else none
    beta: float | None = None  # None: the reference's paper default
    epsilon: float = 0.2  # PPO clip range
    num_generations: int = 6  # G
    prompts_per_step: int = 8
    num_iterations: int = 2  # mu: update passes per batch of rollouts
    minibatch_size: int = 2048  # stored steps per gradient step
    learning_rate: float = 3e-4
    lr_scheduler: str = "constant"  # constant | cosine
    weight_decay: float = 0.1
    max_grad_norm: float = 0.2
    steps: int = 100
    data: str = ""  # training prompts from this file; "" = freshly generated ones
    eval_data: str = ""  # held-out prompts from this file; "" = generated ones (disjoint seed)
    difficulty: str = ""  # of generated prompts, the task's knob (sudoku: clues), e.g. "26,28,30"; "" = task default
    eval_every: int = 10
    eval_size: int = 256
    diffusion_steps: int | None = None  # SamplingConfig.steps of rollouts and evaluation
    block_length: int | None = None  # SamplingConfig.block_length
    d_model: int = 32
    base_temperature: float | None = 0.05
    prob_input: str = "topk"  # upo: "topk" (Eq. 21) | "full" (also every token's probability: UPOPolicy.token_probs)
    coupling_rounds: int = 0  # > 0: the policy reads marginals refined by a learned coupling (unmask.policies.coupling)
    coupling_prompts: int = 3000  # training prompts whose rollouts pre-train the coupling before GRPO (unmask.rl.pretrain)
    coupling_epochs: int = 6  # passes over their states
    seed: int = 0
    reward_form: str | None = None  # multiplicative | additive | none (task reward); None: none for upo, else multiplicative
    baseline: str = "group"  # advantage baseline: group (GRPO: group mean) | greedy (ReMax: the policy's greedy decode)
    advantage_scale: str = "std"  # std (GRPO: divide by the group's std) | none (Dr. GRPO: reward minus baseline)
    alpha: float = 1.0  # speed weight of the reward (Jazbec §3.3); held-out default for alpha-conditioned policies
    alpha_range: str = ""  # "LO,HI": alpha-conditioned policy, alpha ~ U[LO, HI] per group (parallel policies)
    policy_temperature: float = 1.0  # tau_pi of the parallel policies
    expert_steering: str = ""  # heuristic specs, one extra trajectory per group each, e.g. "threshold:0.9" (§3.4)
    pl_count: str = "stop"  # plackett-luce: "stop" (draw until STOP) | "schedule" (tokens per step of --diffusion-steps)
    stop_logit: float | None = 0.0  # plackett-luce STOP utility; None = learned
    base_threshold: float | None = 0.9  # parallel policies start as a soft threshold rule at this confidence; None = plain
    base_threshold_hi: float | None = None  # with alpha_range: the warm start's threshold at alpha = HI (logit-linear)
    model_options: dict = field(default_factory=dict)  # forwarded to load_model (hf: models)
    task_options: dict = field(default_factory=dict)  # forwarded to get_task (e.g. gen_length)


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
    def from_records(cls, records: Sequence[StepRecord], advantage: torch.Tensor, nfe: torch.Tensor,
                     steered: torch.Tensor | None = None, group: tuple[int, int] = (0, 0)) -> "RolloutBuffer":
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


def greedy_baseline_advantages(rewards: torch.Tensor, group_size: int, greedy: torch.Tensor,
                               eps: float = 1e-4, scale: bool = True) -> torch.Tensor:
    """A_g = (r_g - r_greedy) / (std + eps) per prompt (ReMax, Li et al. 2023): the baseline is the reward of the
    policy's own greedy decode, so moving toward greedy earns nothing and only samples that beat it are
    reinforced; std is over the group and the greedy reward (all equal: zero advantages); ``scale`` as in
    :func:`group_advantages`."""
    r = rewards.view(-1, group_size)
    centred = r - greedy[:, None]
    spread = torch.cat([r, greedy[:, None]], 1).std(1, keepdim=True)
    return (centred / (spread + eps) if scale else centred).view(-1)


def upo_loss(
    policy: LearnedPolicy, buf: RolloutBuffer, idx: torch.Tensor, reference: Reference, epsilon: float,
    kappa: torch.Tensor | None, n_traj: int,
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
        "approx_kl": (buf.old_log_prob[idx] - logp).mean().item(),
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


class GRPOTrainer:
    """Trains a learned unmasking policy against a frozen MDM (``unmask train-policy``)."""

    def __init__(self, config: GRPOConfig, reward_fn: Callable | None = None, progress: bool = True) -> None:
        """``reward_fn(completions, examples, nfe=, length=, alpha=, logprob=) -> list[float]`` replaces the
        built-in reward (TRL-style; ``length`` = positions generated per row, ``alpha`` per row)."""
        self.cfg = config
        self._check_settings()
        self.task: Task = get_task(config.task, **config.task_options)
        self.model: MaskedDiffusionModel = load_model(config.model or self.task.default_model, **config.model_options)
        self.sampling = SamplingConfig(steps=config.diffusion_steps, block_length=config.block_length)
        self.sampling.validate()
        self.reward_fn = reward_fn
        self.progress = progress
        self.difficulties: list[int | None] = [int(c) for c in str(config.difficulty).split(",") if c.strip()] or [None]
        self.train_examples = self.task.load(config.data) if config.data else None
        if config.eval_data:
            self.eval_examples = self.task.load(config.eval_data)[: config.eval_size]
        else:
            self.eval_examples = [ex for c in self.difficulties for ex in self.task.generate(
                max(1, config.eval_size // len(self.difficulties)), seed=10_000 + config.seed, difficulty=c)]
        if config.coupling_rounds and config.coupling_prompts:
            try:  # fail before any rollout
                self.task.targets(self.eval_examples[:1], self.model)
            except NotImplementedError as e:
                raise ValueError(str(e)) from None
        torch.manual_seed(config.seed)
        self.policy = self._build_policy()
        coupling = [p for n, p in self.policy.named_parameters() if n.startswith("coupling.")]
        rest = [p for n, p in self.policy.named_parameters() if not n.startswith("coupling.")]
        groups = [{"params": rest}] + ([{"params": coupling, "weight_decay": 0.0}] if coupling else [])
        # no decay on the coupling: W -> 0 would mean a strength softplus(0) between every pair of positions
        self.opt = torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.99), weight_decay=config.weight_decay)
        self.policy.to(self.model.device)
        self.gen = torch.Generator(device=self.model.device).manual_seed(config.seed)
        self.step = 0
        self.best = -1.0
        self.skipped = 0
        self.out = Path(config.output_dir)

    def _check_settings(self) -> None:
        """Reference, reward form, alpha range and experts for the chosen policy, with clear errors."""
        cfg = self.cfg
        if cfg.policy not in POLICY_KINDS:
            raise ValueError(f"unknown policy {cfg.policy!r}; valid: {', '.join(POLICY_KINDS)}")
        if cfg.lr_scheduler not in ("constant", "cosine"):
            raise ValueError(f"lr_scheduler must be 'constant' or 'cosine', got {cfg.lr_scheduler!r}")
        upo = cfg.policy == "upo"
        reference = cfg.reference or ("confidence" if upo else "none")
        if not upo and reference != "none":
            raise ValueError(f"reference {reference!r}: the reference regulariser (UPO Table 1) is for --policy upo; "
                             f"{cfg.policy} policies train without one (Jazbec §3): use --reference none")
        self.reference = Reference(reference, cfg.beta)
        self.reward_form = cfg.reward_form or ("none" if upo else "multiplicative")
        if self.reward_form not in REWARD_FORMS:
            raise ValueError(f"unknown reward form {self.reward_form!r}; valid: {', '.join(REWARD_FORMS)}")
        check_alpha(cfg.alpha)
        check_temperature(cfg.policy_temperature)
        try:
            bounds = [float(a) for a in cfg.alpha_range.split(",")] if cfg.alpha_range else None
        except ValueError:
            raise ValueError(f"alpha range must be LO,HI (two numbers), got {cfg.alpha_range!r}") from None
        self.alpha_range = check_alpha_range(bounds)
        if self.alpha_range and not self.alpha_range[0] <= cfg.alpha <= self.alpha_range[1]:
            raise ValueError(f"alpha {cfg.alpha:g} (the default input of an alpha-conditioned policy) must lie in "
                             f"the alpha range {cfg.alpha_range}")
        self.experts = [get_policy(spec) for spec in cfg.expert_steering.split(",") if spec.strip()]
        if upo and (self.alpha_range or self.experts or cfg.base_threshold_hi is not None):
            raise ValueError("alpha ranges, base_threshold_hi and expert steering are for the parallel policies "
                             "(bernoulli, plackett-luce)")
        if not upo and cfg.prob_input != "topk":
            raise ValueError("--prob-input is for UPO policies; the parallel policies read confidences only")
        for name, valid in (("baseline", ("group", "greedy")), ("advantage_scale", ("std", "none")),
                            ("prob_input", ("topk", "full"))):
            if getattr(cfg, name) not in valid:
                raise ValueError(f"{name} must be '{valid[0]}' or '{valid[1]}', got {getattr(cfg, name)!r}")
        if cfg.coupling_rounds < 0 or cfg.coupling_prompts < 0 or cfg.coupling_epochs < 1:
            raise ValueError("coupling_rounds and coupling_prompts must be >= 0 and coupling_epochs >= 1")
        if cfg.baseline == "greedy" and self.experts:
            raise ValueError("the greedy baseline compares the policy with itself; it does not combine with expert steering")
        if self.experts and cfg.policy == "plackett-luce" and cfg.pl_count != "stop":
            raise ValueError("expert steering needs a variable-count policy: bernoulli, or plackett-luce with pl_count 'stop'")

    def _build_policy(self) -> LearnedPolicy:
        cfg = self.cfg
        coupling = {"coupling_rounds": cfg.coupling_rounds,
                    "coupling_length": self.generation_length() if cfg.coupling_rounds else 0}
        if cfg.policy == "upo":
            return UPOPolicy.for_model(self.model, d_model=cfg.d_model, base_temperature=cfg.base_temperature,
                                       token_probs=cfg.prob_input == "full", **coupling, **self.reference.policy_kwargs())
        extra = {"count": cfg.pl_count, "stop_logit": cfg.stop_logit} if cfg.policy == "plackett-luce" else {}
        return POLICY_KINDS[cfg.policy].for_model(
            self.model, d_model=cfg.d_model, base_threshold=cfg.base_threshold,
            base_threshold_hi=cfg.base_threshold_hi, temperature=cfg.policy_temperature,
            alpha=cfg.alpha, alpha_range=self.alpha_range, **coupling, **extra)

    def generation_length(self) -> int:
        """Positions of the task's generation region (what a coupling is learned over)."""
        enc = self.task.encode(self.eval_examples[:1], self.model)
        return enc.input_ids.shape[1] - enc.gen_start

    def coupling_examples(self) -> list:
        """The ``coupling_prompts`` prompts that pre-train the coupling: the first ones of the data file, or
        freshly generated ones (their own seed, spread over the difficulties)."""
        n = self.cfg.coupling_prompts
        if self.train_examples is not None:
            return self.train_examples[:n]
        k = len(self.difficulties)
        return [ex for i, c in enumerate(self.difficulties)
                for ex in self.task.generate(n // k + (i < n % k), seed=2_000_000 + self.cfg.seed, difficulty=c)]

    @property
    def eval_alphas(self) -> list[float]:
        """Held-out alphas: the run's alpha, or the ends and middle of an alpha range."""
        if self.alpha_range is None:
            return [self.cfg.alpha]
        lo, hi = self.alpha_range
        return [lo, (lo + hi) / 2, hi]

    # ----- persistence -----
    def _meta(self) -> dict:
        return {"train": asdict(self.cfg), "mdm": self.cfg.model or self.task.default_model, "task": self.task.name}

    def save(self) -> None:
        last = self.out / "last"
        self.policy.save(last, self._meta())
        save_training_state(last, self.opt, {"generator": self.gen.get_state(), "torch": torch.get_rng_state()},
                            {"step": self.step, "best": self.best, "skipped": self.skipped})

    def resume(self) -> None:
        last = self.out / "last"
        if not (last / CONFIG).is_file():
            raise FileNotFoundError(f"--resume: no checkpoint in {last}; start without --resume")
        saved = load_json(last / CONFIG)["train"]
        if saved != asdict(self.cfg):
            diff = {k: (saved.get(k), v) for k, v in asdict(self.cfg).items() if saved.get(k) != v}
            raise ValueError(f"--resume: settings differ from the checkpoint's (saved, given): {diff}")
        load_state_into(self.policy, load_tensors(last / WEIGHTS), last)
        rng, state = load_training_state(last, self.opt)
        self.gen.set_state(rng["generator"])
        torch.set_rng_state(rng["torch"])
        self.step, self.best, self.skipped = state["step"], state["best"], state["skipped"]

    # ----- phases -----
    def prompts(self, step: int) -> list:
        """The prompts of training step ``step``: a pure function of (seed, step), so resuming is exact.
        From a file: consecutive slices of a per-epoch seeded shuffle; else freshly generated."""
        P = self.cfg.prompts_per_step
        if self.train_examples is None:
            difficulty = random.Random(f"{self.cfg.seed}-{step}").choice(self.difficulties)
            return self.task.generate(P, seed=1_000_000 * (self.cfg.seed + 1) + step, difficulty=difficulty)
        n = len(self.train_examples)
        out = []
        for i in range(step * P, (step + 1) * P):
            epoch, pos = divmod(i, n)
            order = list(range(n))
            random.Random(f"{self.cfg.seed}-epoch-{epoch}").shuffle(order)
            out.append(self.train_examples[order[pos]])
        return out

    @property
    def selection(self) -> str:
        """The held-out metric that picks ``best``: the speed-aware reward when training on one."""
        return "eval_reward" if self.reward_form != "none" else "eval_solved"

    def generated_length(self, input_ids: torch.Tensor, gen_start: int) -> torch.Tensor:
        """L of the speed term: the positions each row generates."""
        return (input_ids[:, gen_start:] == self.model.mask_id).sum(1).to(self.model.device)

    def rewards(self, examples: list, completions: list, scores: Scores, nfe: torch.Tensor, length: torch.Tensor,
                alpha: torch.Tensor, logprob: torch.Tensor) -> torch.Tensor:
        """The custom ``reward_fn``, the task's reward (``reward_form="none"``) or the speed-aware reward."""
        if self.reward_fn is not None:
            rewards = self.reward_fn(completions, examples, logprob=logprob, nfe=nfe, length=length, alpha=alpha)
        elif self.reward_form == "none":
            rewards = scores.reward
        else:
            rewards = speed_reward(torch.as_tensor(scores.solved, device=nfe.device), nfe, length, alpha, self.reward_form)
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
            alpha = (lo + (hi - lo) * torch.rand(len(examples), generator=self.gen, device=device)).repeat_interleave(G + E)
            self.policy.alpha = alpha
        self.policy.eval()
        self.policy.mode = "sample"
        actor, steered = self.policy, None
        if E:
            expert_of = (torch.arange(G + E, device=device) - G).clamp(min=-1).repeat(len(examples))
            steered = expert_of >= 0
            actor = ExpertSteering(self.policy, self.experts, expert_of, G)
        out, scores, rewards = self.decode_and_reward(group, enc, actor, alpha, record=True)
        greedy = None
        if self.cfg.baseline == "greedy":
            greedy = self.greedy_rewards(examples, alpha.view(-1, G)[:, 0])
            adv = greedy_baseline_advantages(rewards, G, greedy, scale=self.cfg.advantage_scale == "std")
        else:
            adv = group_advantages(rewards, G + E, scale=self.cfg.advantage_scale == "std")
        buf = RolloutBuffer.from_records(out.trajectory, adv, out.nfe, steered, (G, E))
        policy_rows = np.ones(len(group), dtype=bool) if steered is None else ~steered.cpu().numpy()
        nfe = out.nfe.float().cpu().numpy()
        stats = {"reward_mean": rewards.mean().item(), "reward_std": rewards.view(-1, G + E).std(1).mean().item(),
                 "train_solved": float(scores.solved[policy_rows].mean()), "nfe": float(nfe[policy_rows].mean()),
                 "buffer_mb": buf.nbytes() / 2**20}
        if greedy is not None:
            stats["greedy_reward"] = greedy.mean().item()
        if E:
            stats["expert_solved"] = float(scores.solved[~policy_rows].mean())
            stats["expert_nfe"] = float(nfe[~policy_rows].mean())
        return buf, stats

    def decode_and_reward(self, examples: list, enc: EncodedBatch, actor: Policy, alpha: torch.Tensor,
                          record: bool = False) -> tuple[GenerationOutput, Scores, torch.Tensor]:
        """Decode encoded ``examples`` with ``actor``; the output, the task's scores and the training rewards."""
        out = generate(self.model, enc.input_ids, actor, self.sampling, enc.attention_mask, enc.gen_start, self.gen,
                       record=record)
        completions = self.task.decode(examples, out.sequences, self.model)
        logprob = trajectory_logprob(out)
        scores = self.task.score(examples, completions, logprob=logprob)
        length = self.generated_length(enc.input_ids, enc.gen_start)
        return out, scores, self.rewards(examples, completions, scores, out.nfe, length, alpha, logprob)

    def greedy_rewards(self, examples: list, alpha: torch.Tensor) -> torch.Tensor:
        """Rewards of the policy's greedy (inference-mode) decode of each prompt: the ReMax baseline."""
        self.policy.mode = self.policy.default_mode
        if self.alpha_range is not None:
            self.policy.alpha = alpha
        return self.decode_and_reward(examples, self.task.encode(examples, self.model), self.policy, alpha)[2]

    def update(self, buf: RolloutBuffer) -> dict:
        """Update phase: mu passes over shuffled minibatches of stored steps; the MDM is not used."""
        self.policy.train()
        n_traj = len(buf.advantage)
        agg: dict[str, list[float]] = {}
        for _ in range(self.cfg.num_iterations):
            kappa = trajectory_kappa(self.policy, buf, self.reference, self.cfg.minibatch_size) \
                if self.reference.divergence == "kl" else None
            perm = torch.randperm(len(buf), generator=self.gen, device=self.gen.device)
            n_mb = math.ceil(len(buf) / self.cfg.minibatch_size)
            for idx in perm.chunk(n_mb):
                loss, stats = upo_loss(self.policy, buf, idx, self.reference, self.cfg.epsilon, kappa, n_traj)
                loss = loss * n_mb  # each minibatch is ~1/n_mb of the objective
                if not torch.isfinite(loss):
                    self.skipped += 1
                    warnings.warn(f"step {self.step}: non-finite loss, update skipped ({self.skipped} so far)")
                    self.opt.zero_grad(set_to_none=True)
                    continue
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                stats["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.max_grad_norm).item()
                self.opt.step()
                stats["loss"] = loss.item()
                for k, v in stats.items():
                    agg.setdefault(k, []).append(v)
        return {k: float(np.mean(v)) for k, v in agg.items()}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Held-out solved rate, mean NFE and (speed-aware runs) mean reward, averaged over :attr:`eval_alphas`;
        the policy decodes as at inference (its ``default_mode``; sampling with a fixed seed)."""
        self.policy.eval()
        self.policy.mode = self.policy.default_mode
        enc = self.task.encode(self.eval_examples, self.model)
        length = self.generated_length(enc.input_ids, enc.gen_start)
        metrics: dict[str, list[float]] = {}
        for alpha in self.eval_alphas:
            if self.alpha_range is not None:
                self.policy.alpha = alpha
            generator = torch.Generator(device=self.model.device).manual_seed(self.cfg.seed)
            out = generate(self.model, enc.input_ids, self.policy, self.sampling, enc.attention_mask, enc.gen_start, generator)
            solved = self.task.score(self.eval_examples, self.task.decode(self.eval_examples, out.sequences, self.model)).solved
            metrics.setdefault("eval_solved", []).append(float(solved.mean()))
            metrics.setdefault("eval_nfe", []).append(out.nfe.float().mean().item())
            if self.reward_form != "none":
                reward = speed_reward(torch.as_tensor(solved, device=out.nfe.device), out.nfe, length, alpha, self.reward_form)
                metrics.setdefault("eval_reward", []).append(reward.mean().item())
        return {k: float(np.mean(v)) for k, v in metrics.items()}

    def lr_at(self, step: int) -> float:
        if self.cfg.lr_scheduler == "constant":
            return self.cfg.learning_rate
        return 0.5 * self.cfg.learning_rate * (1 + math.cos(math.pi * step / max(1, self.cfg.steps)))

    def train(self, resume: bool = False, max_minutes: float | None = None) -> Path:
        """Run to ``cfg.steps``; with ``max_minutes``, stop early at the first step boundary past that wall time,
        after a held-out evaluation and a resumable checkpoint (``--resume`` continues exactly from there)."""
        if max_minutes is not None and max_minutes <= 0:
            raise ValueError(f"max_minutes must be > 0, got {max_minutes:g}")
        deadline = None if max_minutes is None else time.monotonic() + 60 * max_minutes
        if resume:
            self.resume()
        logger = MetricsLogger(self.out, resume_step=self.step if resume else None)
        if self.step == 0:
            metrics = {}
            if self.cfg.coupling_rounds and self.cfg.coupling_prompts:
                history = pretrain_coupling(self.task, self.model, self.policy, self.coupling_examples(), self.sampling,
                                            self.gen, self.cfg.coupling_epochs, progress=self.progress)
                metrics["coupling_nll"] = history[-1]
            metrics.update(self.evaluate())
            self.best = metrics[self.selection]
            self.policy.save(self.out / "best", {**self._meta(), **metrics, "step": 0})
            self.save()
            logger.log({"step": 0, **metrics})
        bar = tqdm(total=self.cfg.steps, initial=self.step, desc=f"train-policy {self.task.name}",
                   disable=not self.progress, dynamic_ncols=True)
        while self.step < self.cfg.steps:
            t0 = time.perf_counter()
            for g in self.opt.param_groups:
                g["lr"] = self.lr_at(self.step)
            buf, roll = self.rollout(self.prompts(self.step))
            upd = self.update(buf)
            self.step += 1
            row = {"step": self.step, **roll, **upd, "lr": self.lr_at(self.step - 1), "skipped": self.skipped,
                   "seconds": time.perf_counter() - t0}
            out_of_time = deadline is not None and time.monotonic() > deadline
            if self.step % self.cfg.eval_every == 0 or self.step == self.cfg.steps or out_of_time:
                metrics = self.evaluate()
                row.update(metrics)
                if metrics[self.selection] > self.best:
                    self.best = metrics[self.selection]
                    self.policy.save(self.out / "best", {**self._meta(), **metrics, "step": self.step})
                self.save()
            logger.log(row)
            bar.update(1)
            bar.set_postfix(reward=f"{roll['reward_mean']:.3f}", solved=f"{roll['train_solved']:.2f}",
                            nfe=f"{roll['nfe']:.1f}", best=f"{self.best:.3f}")
            if out_of_time:
                tqdm.write(f"train-policy: stopped at step {self.step}/{self.cfg.steps} after {max_minutes:g} min "
                           f"(--max-minutes); --resume continues from {self.out / 'last'}")
                break
        bar.close()
        logger.close()
        return self.out
