"""Imitation of the ground-truth oracle: the step between the coupling's pre-training and GRPO.

The policy decodes training prompts itself (DAgger, Ross et al. 2011: the states the *learner* visits, not the
oracle's), and every state is labelled by the oracle (:mod:`unmask.policies.oracle`): ``gold`` marks the
candidates whose token already is the gold one. The policy's utilities are then fitted to those per-position
labels ("is this argmax correct", :func:`imitation_loss`): for the parallel Bernoulli policies (Jazbec's f_phi)
that is the likelihood of the parallel oracle's action; for the Plackett-Luce ones (UPO's g_phi, one position
per step) it makes the utility rank positions by the probability that their token is right (pointwise
learning to rank toward the oracle's order). Every candidate of every state carries a label, where a listwise
"is the first pick gold" objective gets signal only from the rare states in which the policy's pick is wrong
(tried first: it over-fitted them and lost accuracy, docs/experiments.md).

One mechanism serves both families; a planner (:mod:`unmask.policies.planner`) is what gives the scorer the
inputs that make those labels predictable. Each of ``imitation_rounds`` rounds collects the states of
``imitation_prompts`` fresh prompts decoded by the current policy (sampling mode) up to the first wrong reveal
(later states condition on a contradiction of the gold answer), fits ``imitation_epochs`` passes of Adam over
them (the MDM is not called in the fit), and evaluates the policy greedily on the run's held-out prompts; the
best round's weights (round 0: the policy it started from) are kept (``imitation/best``) and start GRPO. Rounds do not aggregate earlier rounds'
states (each round is a pure function of the weights it starts from, so a resumed run is exact); the optimizer
carries over. ``imitation/last`` is resumable, ``imitation/metrics.csv`` logs one row per round.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from unmask.core.checkpoint import (
    LAST,
    WEIGHTS,
    TrainingState,
    has_checkpoint,
    load_tensors,
    load_training_checkpoint,
    resumable_checkpoint,
)
from unmask.core.tracking import MetricsLogger, progress_bar
from unmask.engine.config import SamplingConfig
from unmask.engine.loop import generate
from unmask.engine.policy import Policy
from unmask.engine.state import StepState
from unmask.engine.streams import ExampleStreams
from unmask.evaluation.evaluate import gold_tokens
from unmask.models import MaskedDiffusionModel
from unmask.policies.base import top_k_mask
from unmask.policies.learned import LearnedPolicy
from unmask.policies.oracle import correct
from unmask.tasks import Task

if TYPE_CHECKING:
    from unmask.training.grpo import GRPOTrainer

PHASE = "imitation"  # the phase's folder in the run directory
STREAM = 2**41  # the rounds' random streams: ExampleStreams.seed_of(run seed, STREAM + round)


class Labelled(Policy):
    """The learner acting, each recorded step's observation extended with the tokens it would write and the
    oracle's label ``gold`` (needs the engine input ``target``)."""

    def __init__(self, policy: LearnedPolicy) -> None:
        self.policy = policy
        self.name = f"{policy.name}+oracle labels"
        self.capabilities = replace(policy.capabilities, needs_target=True)

    def act(self, state: StepState, record: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        reveal, data = self.policy.act(state, record)
        if record:
            data = {k: v for k, v in data.items() if k not in ("action", "old_log_prob")}
            data.update(tokens=state.tokens, gold=correct(state))
        return reveal, data


@torch.no_grad()
def collect_states(
    task: Task,
    model: MaskedDiffusionModel,
    policy: LearnedPolicy,
    examples: list,
    sampling: SamplingConfig,
    draws: torch.Generator | int,
    batch_size: int = 64,
    keys: tuple[str, ...] | None = None,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """The observation (``keys``; None: all of it), ``tokens``, oracle label ``gold`` and ``target`` of every
    state of the policy's sampled rollouts before its first reveal of a wrong token. ``draws``: one generator for
    every batch, or a seed of per-example streams (example ``j`` draws from ``(seed, j)``)."""
    gold_tokens(task, examples[:1], model)  # a task without targets fails before any rollout
    policy.eval()
    actor = Labelled(policy.with_options(mode="sample"))
    return labelled_rollouts(task, model, actor, examples, sampling, draws, batch_size, keys, progress)


@torch.no_grad()
def labelled_rollouts(
    task: Task,
    model: MaskedDiffusionModel,
    actor: Policy,
    examples: list,
    sampling: SamplingConfig | None,
    draws: torch.Generator | int,
    batch_size: int = 64,
    keys: tuple[str, ...] | None = None,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """The recorded states (``keys`` of each step's data, None: all of it, with ``gold``) and ``target`` of
    ``actor``'s rollouts, each row's up to its first reveal of a wrong token. ``actor`` records the tokens it would
    write (``tokens``) and the oracle's labels (``gold``), as :class:`Labelled` does, and reads the engine input
    ``target``. ``draws`` as for :func:`collect_states`."""
    parts: list[dict[str, torch.Tensor]] = []
    for i in progress_bar(
        range(0, len(examples), batch_size),
        desc=f"rollouts ({len(examples)} prompts)",
        disable=not progress,
        leave=False,
    ):
        batch = examples[i : i + batch_size]
        target = gold_tokens(task, batch, model)
        enc = task.encode(batch, model)
        rows = (
            draws
            if isinstance(draws, torch.Generator)
            else ExampleStreams(draws, range(i, i + len(batch)), device=model.device)
        )
        out = generate(
            model,
            enc.input_ids,
            actor,
            sampling,
            enc.attention_mask,
            enc.gen_start,
            rows,
            record=True,
            inputs={"target": target},
        )
        alive = torch.ones(len(batch), dtype=torch.bool, device=model.device)
        for rec in out.trajectory:
            keep = alive[rec.rows]
            rows_target = target[rec.rows]
            names = rec.data.keys() if keys is None else (*keys, "gold")
            parts.append({**{k: rec.data[k][keep] for k in names}, "target": rows_target[keep]})
            wrong = (rec.reveal & (rec.data["tokens"] != rows_target)).any(1)
            alive[rec.rows[wrong]] = False
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


FROZEN = ("gold", "target", "confidence_read", "scorer_logits")  # what a state holds beside the observation


@torch.no_grad()
def freeze_inputs(policy: LearnedPolicy, states: dict[str, torch.Tensor], chunk: int = 1024) -> None:
    """Add what stays fixed during the fit, computed once: ``confidence_read``, the confidences the policy reads
    (its coupling is frozen here) and, where the planner alone is trained, ``scorer_logits``."""
    obs = {k: v for k, v in states.items() if k not in FROZEN}
    parts: dict[str, list[torch.Tensor]] = {"confidence_read": [], "scorer_logits": []}
    for i in torch.arange(len(states["gold"])).split(chunk):
        part = {k: v[i] for k, v in obs.items()}
        confidence = policy.read_confidence(part)
        parts["confidence_read"].append(confidence)
        if policy.planner is not None:
            parts["scorer_logits"].append(policy.scorer(part, confidence)[0])
    states.update({k: torch.cat(v) for k, v in parts.items() if v})


def utilities(
    policy: LearnedPolicy, states: dict[str, torch.Tensor], idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The policy's utilities u (n, L) of the states ``idx`` (no STOP column) and what they move away from the
    policy imitation started from: the planner's residual where the policy has a planner (added to the frozen
    scorer's logits), else zeros (the whole scorer is fitted)."""
    obs = {k: v[idx] for k, v in states.items() if k not in FROZEN}
    confidence = states["confidence_read"][idx]
    if policy.planner is None:
        u = policy.scores(obs, confidence)[:, : obs["allowed"].shape[1]]
        return u, torch.zeros_like(u)
    residual = policy.planner(obs, confidence)
    return (states["scorer_logits"][idx] + residual) / policy.temperature, residual


def imitation_loss(
    u: torch.Tensor, gold: torch.Tensor, allowed: torch.Tensor, calibration: torch.Tensor, negative_weight: float = 1.0
) -> torch.Tensor:
    """The oracle's per-position labels under the utilities u (n, L), averaged over the allowed positions:

        -(1 / |allowed|) sum_{i allowed} [gold_i log sigmoid(z_i) + w (1 - gold_i) log sigmoid(-z_i)],
        z_i = exp(calibration[0]) u_i + calibration[1]

    The calibration (a scale and an offset learned beside the policy) leaves the order of the utilities, and
    with it every greedy decision, unchanged: sigmoid(z_i) is the probability that position i's token is gold.
    For a Plackett-Luce policy the greedy step then takes the position most likely right (pointwise learning to
    rank); for a Bernoulli policy z_i = u_i at the start (scale 1, offset 0) is its own reveal probability, and
    w > 1 trades recall for precision (a wrong reveal costs the answer, a missed one a forward)."""
    z = calibration[0].exp() * u.masked_fill(~allowed, 0.0) + calibration[1]  # -inf off the allowed set
    per = torch.where(gold, F.logsigmoid(z), negative_weight * F.logsigmoid(-z))
    return -(per * allowed).sum() / allowed.sum().clamp(min=1)


def round_examples(trainer: GRPOTrainer, r: int) -> list:
    """Round ``r``'s ``imitation_prompts`` prompts: a slice of the run's data file, or freshly generated ones
    (their own seed per round, spread over the difficulties)."""
    n, run = trainer.cfg.imitation_prompts, trainer.cfg.run
    if trainer.train_examples is not None:
        data = trainer.train_examples
        return [data[(r * n + i) % len(data)] for i in range(n)]
    k = len(run.difficulties)
    return [
        ex
        for i, c in enumerate(run.difficulties)
        for ex in trainer.task.generate(n // k + (i < n % k), seed=3_000_000 + 1000 * run.seed + r, difficulty=c)
    ]


class Imitation:
    """The imitation phase of a ``train-policy`` run (see the module docstring)."""

    def __init__(self, trainer: GRPOTrainer) -> None:
        self.trainer, self.cfg = trainer, trainer.cfg
        self.dir = Path(self.cfg.output_dir) / PHASE
        policy = trainer.policy
        # the planner alone where there is one (the scorer stays the reference it starts from); never the
        # coupling, an input here, fitted by its own likelihood (unmask.training.pretrain)
        self.params = [
            p
            for n, p in policy.named_parameters()
            if (n.startswith("planner.") if policy.planner is not None else not n.startswith("coupling."))
        ]
        scale = getattr(policy.config, "base_temperature", None)  # UPO's tau0; parallel policies have none
        self.calibration = torch.tensor([math.log(scale or 1.0), 0.0], requires_grad=True)
        self.opt = torch.optim.Adam([*self.params, self.calibration], lr=self.cfg.imitation_learning_rate)
        self.gen = torch.Generator(device=trainer.model.device).manual_seed(
            ExampleStreams.seed_of(self.cfg.run.seed, STREAM - 1)
        )
        self.round, self.best, self.best_metrics = 0, float("-inf"), {}

    def save(self) -> None:
        if not self.trainer.dist.main:
            return
        rng = {"generator": self.gen.get_state(), "torch": torch.get_rng_state()}
        counters = {
            "step": self.round,
            "best": self.best,
            "best_metrics": self.best_metrics,
            "calibration": self.calibration.tolist(),
        }
        self.trainer.policy.save(self.dir / LAST, self.trainer._meta(), TrainingState(self.opt, rng, counters))

    def resume(self) -> None:
        rng, state = load_training_checkpoint(resumable_checkpoint(self.dir), self.trainer.policy, self.opt)
        self.gen.set_state(rng["generator"])
        torch.set_rng_state(rng["torch"])
        self.round, self.best, self.best_metrics = state["step"], state["best"], state["best_metrics"]
        with torch.no_grad():
            self.calibration.copy_(torch.tensor(state["calibration"]))

    def fit(self, states: dict[str, torch.Tensor]) -> float:
        """``imitation_epochs`` passes of Adam over ``states``; the mean loss of the last pass."""
        policy, n = self.trainer.policy, len(states["gold"])
        freeze_inputs(policy, states)
        policy.train()
        total = 0.0
        for _ in range(self.cfg.imitation_epochs):
            perm = torch.randperm(n, generator=self.gen, device=self.gen.device)
            total = 0.0
            for idx in perm.split(self.cfg.imitation_batch_size):
                (u, residual), allowed = utilities(policy, states, idx), states["allowed"][idx]
                if self.cfg.imitation_top_k is not None:  # the decision-relevant candidates: the current top K
                    k = torch.full((len(idx),), self.cfg.imitation_top_k, device=u.device)
                    allowed = top_k_mask(u.detach(), allowed, k)
                loss = imitation_loss(
                    u, states["gold"][idx], allowed, self.calibration, self.cfg.imitation_negative_weight
                )
                if self.cfg.imitation_anchor:  # lambda * mean r^2: the start's order where the labels do not object
                    loss = loss + self.cfg.imitation_anchor * residual[allowed].pow(2).mean()
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.params, 1.0)
                self.opt.step()
                total += loss.item() * len(idx)
        policy.eval()
        return total / n

    def record(self, logger: MetricsLogger, row: dict) -> None:
        """Log the round's row, keep the policy as ``best`` when its held-out metric is the best so far (round 0:
        the policy imitation starts from), then checkpoint the phase."""
        trainer = self.trainer
        if row[trainer.selection] > self.best:
            self.best, self.best_metrics = (
                row[trainer.selection],
                {k: v for k, v in row.items() if k.startswith("eval_")},
            )
            if trainer.dist.main:
                trainer.policy.save(self.dir / "best", {**trainer._meta(), **self.best_metrics, "round": self.round})
        logger.log(row)  # the row before its checkpoint: a kill between them loses no row
        self.save()

    def run(self, resume: bool = False) -> dict[str, float]:
        """Every round (from the last checkpoint with ``resume``); leaves the best round's weights in the policy
        (round 0, the starting policy, competes too) and returns its held-out metrics, prefixed ``imitation_``."""
        trainer, cfg = self.trainer, self.cfg
        resumed = resume and has_checkpoint(self.dir)
        if resumed:
            self.resume()
        logger = MetricsLogger(self.dir, resume_step=self.round if resumed else None, config=cfg.to_dict())
        if not resumed:
            self.record(logger, {"step": 0, **trainer.evaluate()})
        with progress_bar(
            total=cfg.imitation_rounds,
            initial=self.round,
            desc=f"imitation {trainer.task.name}",
            disable=not trainer.progress,
        ) as bar:
            while self.round < cfg.imitation_rounds:
                examples = round_examples(trainer, self.round)
                states = collect_states(
                    trainer.task,
                    trainer.model,
                    trainer.policy,
                    examples,
                    trainer.sampling,
                    ExampleStreams.seed_of(cfg.run.seed, STREAM + self.round),
                    batch_size=256,
                    progress=trainer.progress,
                )
                has_gold = states["gold"].any(1)
                states = {k: v[has_gold] for k, v in states.items()}
                t0 = time.perf_counter()
                loss = self.fit(states)
                seconds = time.perf_counter() - t0
                self.round += 1
                metrics = trainer.evaluate()
                self.record(
                    logger,
                    {
                        "step": self.round,
                        "loss": loss,
                        "states": len(has_gold),
                        "fit_seconds": seconds,
                        "gold_share": (states["gold"].sum() / states["allowed"].sum().clamp(min=1)).item(),
                        **metrics,
                    },
                )
                bar.update(1)
                bar.set_postfix(
                    loss=f"{loss:.3f}", solved=f"{metrics['eval_solved']:.3f}", nfe=f"{metrics['eval_nfe']:.1f}"
                )
        logger.close()
        trainer.dist.barrier()  # rank 0 has written best/
        trainer.policy.load_state_dict(load_tensors(self.dir / "best" / WEIGHTS))
        return {"imitation_" + k.removeprefix("eval_"): v for k, v in self.best_metrics.items()}
