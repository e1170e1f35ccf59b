"""GRPO for unmasking policies with the memory-efficient two-phase loop (UPO Algorithm 2).

Sampling phase (no grad): G rollouts per prompt with the frozen MDM and the
current policy g_phi_old; each step stores only what the update needs (the
policy's observation, the action and its old log-probability).
Update phase: mu passes of minibatches over the stored steps, training g_phi
alone with the token-wise clipped surrogate of Prop. 1 / Eq. 19 and the
reference regulariser of Table 1. The MDM is never called in the update.
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
from unmask.engine import SamplingConfig, StepRecord, generate
from unmask.logging import MetricsLogger
from unmask.models import MaskedDiffusionModel, load_model
from unmask.policies.learned import UPOPolicy, plackett_luce_log_prob
from unmask.rl.reference import Reference
from unmask.tasks import Task, get_task
from unmask.tasks.math_reward import trajectory_logprob


@dataclass
class GRPOConfig:
    """Hyper-parameters (TRL names where they exist; UPO App. E defaults where they apply)."""

    task: str = "sudoku9"
    model: str = ""  # MDM name or path; "" = the task's shipped model
    output_dir: str = "runs/upo"
    reference: str = "confidence"  # confidence | softmax | topk | none (Table 1)
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
    clues: str = "28"  # difficulty of generated prompts, e.g. "26,28,30"
    eval_every: int = 10
    eval_size: int = 256
    diffusion_steps: int | None = None  # SamplingConfig.steps of rollouts and evaluation
    block_length: int | None = None  # SamplingConfig.block_length
    d_model: int = 32
    base_temperature: float | None = 0.05
    seed: int = 0
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

    @classmethod
    def from_records(cls, records: Sequence[StepRecord], advantage: torch.Tensor, nfe: torch.Tensor) -> "RolloutBuffer":
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
        )

    def __len__(self) -> int:
        return len(self.traj)

    def take(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v[idx] for k, v in self.obs.items()}

    def nbytes(self) -> int:
        tensors = list(self.obs.values()) + [self.action, self.old_log_prob, self.traj]
        return sum(t.numel() * t.element_size() for t in tensors)


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """A_g = (r_g - mean) / (std + eps) within each group of G rollouts of one prompt (GRPO)."""
    r = rewards.view(-1, group_size)
    return ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + eps)).view(-1)


def upo_loss(
    policy: UPOPolicy, buf: RolloutBuffer, idx: torch.Tensor, reference: Reference, epsilon: float,
    kappa: torch.Tensor | None, n_traj: int,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Minibatch part of -L_UPO (Eq. 19/22): clipped token-wise surrogate / L per trajectory,
    plus beta * CE(g_conf || g_phi) (Eq. 29) or beta * kappa * log g_phi (L_KL, Eq. 24)."""
    obs, action, traj = buf.take(idx), buf.action[idx], buf.traj[idx]
    scores = policy.scores(obs)
    logp = plackett_luce_log_prob(scores, obs["allowed"], action)
    ratio = (logp - buf.old_log_prob[idx]).exp()
    adv = buf.advantage[traj]
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - epsilon, 1 + epsilon) * adv) / buf.length[traj]
    loss = -surrogate.sum() / n_traj
    stats = {
        "clip_frac": ((ratio - 1).abs() > epsilon).float().mean().item(),
        "approx_kl": (buf.old_log_prob[idx] - logp).mean().item(),
    }
    if reference.divergence == "ce":
        ce = -plackett_luce_log_prob(scores, obs["allowed"], reference.confidence_action(obs, action))
        loss = loss + reference.beta * ce.sum() / n_traj
        stats["ce"] = ce.mean().item()
    elif reference.divergence == "kl":
        loss = loss + reference.beta * (kappa[traj] * logp).sum() / n_traj
        stats["kl_ref"] = (logp - reference.log_prob(obs, action)).mean().item()
    return loss, stats


@torch.no_grad()
def trajectory_kappa(policy: UPOPolicy, buf: RolloutBuffer, reference: Reference, chunk: int) -> torch.Tensor:
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
        self.cfg = config
        self.task: Task = get_task(config.task, **config.task_options)
        self.model: MaskedDiffusionModel = load_model(config.model or self.task.default_model, **config.model_options)
        self.sampling = SamplingConfig(steps=config.diffusion_steps, block_length=config.block_length)
        self.sampling.validate()
        self.reference = Reference(config.reference, config.beta)
        self.reward_fn = reward_fn  # None: the task's own reward (Scores.reward)
        self.progress = progress
        if config.lr_scheduler not in ("constant", "cosine"):
            raise ValueError(f"lr_scheduler must be 'constant' or 'cosine', got {config.lr_scheduler!r}")
        self.clues = [int(c) for c in str(config.clues).split(",") if c.strip()]
        torch.manual_seed(config.seed)
        self.policy = UPOPolicy.for_model(
            self.model, d_model=config.d_model, base_temperature=config.base_temperature, **self.reference.policy_kwargs()
        )
        self.opt = torch.optim.AdamW(self.policy.parameters(), lr=config.learning_rate, betas=(0.9, 0.99),
                                     weight_decay=config.weight_decay)
        self.policy.to(self.model.device)
        self.gen = torch.Generator(device=self.model.device).manual_seed(config.seed)
        self.step = 0
        self.best = -1.0
        self.skipped = 0
        self.out = Path(config.output_dir)
        self.train_examples = self.task.load(config.data) if config.data else None
        if config.eval_data:
            self.eval_examples = self.task.load(config.eval_data)[: config.eval_size]
        else:
            self.eval_examples = [ex for c in self.clues for ex in self.task.generate(
                max(1, config.eval_size // len(self.clues)), seed=10_000 + config.seed, clues=c)]

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
            clues = random.Random(f"{self.cfg.seed}-{step}").choice(self.clues)
            return self.task.generate(P, seed=1_000_000 * (self.cfg.seed + 1) + step, clues=clues)
        n = len(self.train_examples)
        out = []
        for i in range(step * P, (step + 1) * P):
            epoch, pos = divmod(i, n)
            order = list(range(n))
            random.Random(f"{self.cfg.seed}-epoch-{epoch}").shuffle(order)
            out.append(self.train_examples[order[pos]])
        return out

    @torch.no_grad()
    def rollout(self, examples: list) -> tuple[RolloutBuffer, dict]:
        """Sampling phase: G trajectories per prompt from g_phi_old."""
        G = self.cfg.num_generations
        group = [ex for ex in examples for _ in range(G)]
        enc = self.task.encode(group, self.model)
        self.policy.eval()
        self.policy.mode = "sample"
        out = generate(self.model, enc.input_ids, self.policy, self.sampling, enc.attention_mask, enc.gen_start,
                       self.gen, record=True)
        completions = self.task.decode(group, out.sequences, self.model)
        scores = self.task.score(group, completions, logprob=trajectory_logprob(out))
        rewards = scores.reward if self.reward_fn is None else self.reward_fn(completions, group, logprob=trajectory_logprob(out))
        rewards = torch.tensor(rewards, dtype=torch.float32, device=self.model.device)
        solved = scores.solved
        adv = group_advantages(rewards, G)
        buf = RolloutBuffer.from_records(out.trajectory, adv, out.nfe)
        stats = {"reward_mean": rewards.mean().item(), "reward_std": rewards.view(-1, G).std(1).mean().item(),
                 "train_solved": float(np.mean(solved)), "nfe": out.nfe.float().mean().item(),
                 "buffer_mb": buf.nbytes() / 2**20}
        return buf, stats

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
        with torch.no_grad():
            sample = torch.randperm(len(buf), generator=self.gen, device=self.gen.device)[: self.cfg.minibatch_size]
            agg["entropy"] = [self.policy.entropy(buf.take(sample)).mean().item()]
        return {k: float(np.mean(v)) for k, v in agg.items()}

    @torch.no_grad()
    def evaluate(self) -> float:
        """Held-out greedy solved rate of g_phi."""
        self.policy.eval()
        self.policy.mode = "greedy"
        enc = self.task.encode(self.eval_examples, self.model)
        out = generate(self.model, enc.input_ids, self.policy, self.sampling, enc.attention_mask, enc.gen_start)
        return float(self.task.score(self.eval_examples, self.task.decode(self.eval_examples, out.sequences, self.model)).solved.mean())

    def lr_at(self, step: int) -> float:
        if self.cfg.lr_scheduler == "constant":
            return self.cfg.learning_rate
        return 0.5 * self.cfg.learning_rate * (1 + math.cos(math.pi * step / max(1, self.cfg.steps)))

    def train(self, resume: bool = False) -> Path:
        if resume:
            self.resume()
        logger = MetricsLogger(self.out, resume_step=self.step if resume else None)
        if self.step == 0:
            self.best = self.evaluate()
            self.policy.save(self.out / "best", {**self._meta(), "eval_solved": self.best, "step": 0})
            logger.log({"step": 0, "eval_solved": self.best})
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
            if self.step % self.cfg.eval_every == 0 or self.step == self.cfg.steps:
                row["eval_solved"] = self.evaluate()
                if row["eval_solved"] > self.best:
                    self.best = row["eval_solved"]
                    self.policy.save(self.out / "best", {**self._meta(), "eval_solved": self.best, "step": self.step})
                self.save()
            logger.log(row)
            bar.update(1)
            bar.set_postfix(reward=f"{roll['reward_mean']:.3f}", solved=f"{roll['train_solved']:.2f}",
                            best=f"{self.best:.3f}")
        bar.close()
        logger.close()
        return self.out
