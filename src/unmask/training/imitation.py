"""Imitation of the ground-truth oracle: the step between the coupling's pre-training and GRPO.

The policy decodes training prompts itself (DAgger, Ross et al. 2011: the states the *learner* visits, not the
oracle's; round 0 may be decoded by another policy instead, ``imitation_actor``, e.g. max-confidence, which errs
where the learner rarely does, its states recorded as the learner observes them), and every state is labelled by
the oracle (:mod:`unmask.policies.oracle`): ``gold`` marks the
candidates whose token already is the gold one. The policy's utilities are then fitted to those per-position
labels ("is this argmax correct", :func:`imitation_loss`): for the parallel Bernoulli policies (Jazbec's f_phi)
that is the likelihood of the parallel oracle's action; for the Plackett-Luce ones (UPO's g_phi, one position
per step) it makes the utility rank positions by the probability that their token is right (pointwise
learning to rank toward the oracle's order). Every candidate of every state carries a label, where a listwise
"is the first pick gold" objective gets signal only from the rare states in which the policy's pick is wrong
(tried first: it over-fitted them and lost accuracy, docs/experiments.md).

One mechanism serves both families; a planner (:mod:`unmask.policies.planner`) is what gives the scorer the
inputs that make those labels predictable (with ``planner_pairs="cliques"``, per-clique sums over the cliques of
the frozen coupling). Each of ``imitation_rounds`` rounds collects the states of ``imitation_prompts`` fresh
prompts (round 0: ``imitation_actor_prompts``) decoded by the current policy (``imitation_mode``: sampling, or
greedy; round 0 by ``imitation_actor`` where one is given) up to the first wrong reveal (later states condition on
a contradiction of the gold answer), fits ``imitation_epochs`` passes of Adam over them (the MDM is not called in
the fit), and evaluates the policy greedily on the run's held-out prompts; the best round's weights (round 0: the
policy it started from) are kept (``imitation/best``) and start GRPO. With ``imitation_aggregate`` each round fits
on its states and every earlier round's (DAgger proper); each round's states are then saved
(``imitation/states/round-K.safetensors``, what the fit reads, before the round's checkpoint) and a resumed run
reloads them, so it stays exact; without it each round is a pure function of the weights it starts from. The
optimizer carries over (``imitation_reset_optimizer``: a new one per round). ``imitation/last`` is resumable,
``imitation/metrics.csv`` logs one row per round.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from unmask.core.checkpoint import (
    LAST,
    WEIGHTS,
    TrainingState,
    atomic_write,
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
from unmask.policies.planner import INPUTS
from unmask.policies.resolve import resolve_policy
from unmask.tasks import Task

if TYPE_CHECKING:
    from unmask.training.grpo import GRPOConfig, GRPOTrainer

PHASE = "imitation"  # the phase's folder in the run directory
STREAM = 2**41  # the rounds' random streams: ExampleStreams.seed_of(run seed, STREAM + round)


class Labelled(Policy):
    """The learner's observation of each recorded step, extended with the tokens it would write and the oracle's
    label ``gold`` (needs the engine input ``target``); ``actor`` chooses the reveals (None: the learner)."""

    def __init__(self, policy: LearnedPolicy, actor: Policy | None = None) -> None:
        self.policy, self.actor = policy, actor
        acting = actor or policy
        self.name = f"{acting.name}+oracle labels"
        needs_hidden = acting.capabilities.needs_hidden or policy.capabilities.needs_hidden  # the learner observes
        self.capabilities = replace(acting.capabilities, needs_hidden=needs_hidden, needs_target=True)

    def act(self, state: StepState, record: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.actor is None:
            reveal, data = self.policy.act(state, record)
            data = {k: v for k, v in data.items() if k not in ("action", "old_log_prob")}
        else:
            reveal, data = self.actor.select(state), (self.policy.observe(state) if record else {})
        if record:
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
    actor: Policy | None = None,
    mode: str = "sample",
) -> dict[str, torch.Tensor]:
    """The observation (``keys``; None: all of it), ``tokens``, oracle label ``gold`` and ``target`` of every
    state of the policy's rollouts in ``mode`` (``actor``'s, observed by the policy, where one is given) before the
    first reveal of a wrong token. ``draws``: one generator for every batch, or a seed of per-example streams
    (example ``j`` draws from ``(seed, j)``)."""
    gold_tokens(task, examples[:1], model)  # a task without targets fails before any rollout
    policy.eval()
    labelled = Labelled(policy.with_options(mode=mode), actor)
    return labelled_rollouts(task, model, labelled, examples, sampling, draws, batch_size, keys, progress)


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


def fit_inputs(policy: LearnedPolicy, states: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the fit reads of each state (after :func:`freeze_inputs`): where the planner alone is fitted, its
    inputs, the frozen confidences and scorer logits and the labels; else everything but the targets."""
    keep = [*INPUTS, *FROZEN] if policy.planner is not None else list(states)
    return {k: states[k] for k in keep if k != "target"}


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


def fit_states(
    policy: LearnedPolicy,
    states: dict[str, torch.Tensor],
    opt: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    calibration: torch.Tensor,
    generator: torch.Generator,
    cfg: GRPOConfig,
) -> float:
    """``cfg.imitation_epochs`` passes of ``opt`` (over ``params``, clipped to norm 1, and the ``calibration``) on
    :func:`imitation_loss` over ``states`` (with their frozen inputs, :func:`freeze_inputs`), in batches of
    ``imitation_batch_size`` drawn from ``generator``, with the phase's ``imitation_top_k``, ``imitation_anchor``
    and ``imitation_negative_weight``; the mean loss of the last pass."""
    n = len(states["gold"])
    policy.train()
    total = 0.0
    for _ in range(cfg.imitation_epochs):
        perm = torch.randperm(n, generator=generator, device=generator.device)
        total = 0.0
        for idx in perm.split(cfg.imitation_batch_size):
            (u, residual), allowed = utilities(policy, states, idx), states["allowed"][idx]
            if cfg.imitation_top_k is not None:  # the decision-relevant candidates: the current top K
                k = torch.full((len(idx),), cfg.imitation_top_k, device=u.device)
                allowed = top_k_mask(u.detach(), allowed, k)
            loss = imitation_loss(u, states["gold"][idx], allowed, calibration, cfg.imitation_negative_weight)
            if cfg.imitation_anchor:  # lambda * mean r^2: the start's order where the labels do not object
                loss = loss + cfg.imitation_anchor * residual[allowed].pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            total += loss.item() * len(idx)
    policy.eval()
    return total / n


def round_prompts(trainer: GRPOTrainer, r: int) -> int:
    """How many prompts round ``r`` decodes: ``imitation_actor_prompts`` in round 0 where given, else
    ``imitation_prompts``."""
    cfg = trainer.cfg
    return cfg.imitation_actor_prompts if r == 0 and cfg.imitation_actor_prompts else cfg.imitation_prompts


def round_examples(trainer: GRPOTrainer, r: int) -> list:
    """Round ``r``'s prompts (:func:`round_prompts`): the next slice of the run's data file, or freshly generated
    ones (their own seed per round, spread over the difficulties)."""
    n, run = round_prompts(trainer, r), trainer.cfg.run
    if trainer.train_examples is not None:
        data, start = trainer.train_examples, sum(round_prompts(trainer, q) for q in range(r))
        return [data[(start + i) % len(data)] for i in range(n)]
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
        self.opt = self.optimizer()
        self.gen = torch.Generator(device=trainer.model.device).manual_seed(
            ExampleStreams.seed_of(self.cfg.run.seed, STREAM - 1)
        )
        self.round, self.best, self.best_metrics = 0, float("-inf"), {}
        self.actor = resolve_policy(self.cfg.imitation_actor, trainer.model) if self.cfg.imitation_actor else None
        self.pool: list[dict[str, torch.Tensor]] = []  # every earlier round's states (imitation_aggregate)

    def optimizer(self) -> torch.optim.Adam:
        return torch.optim.Adam([*self.params, self.calibration], lr=self.cfg.imitation_learning_rate)

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
        last = resumable_checkpoint(self.dir)
        rng, state = load_training_checkpoint(last, self.trainer.policy, self.opt)
        self.trainer.policy.load_calibration(last)
        self.gen.set_state(rng["generator"])
        torch.set_rng_state(rng["torch"])
        self.round, self.best, self.best_metrics = state["step"], state["best"], state["best_metrics"]
        with torch.no_grad():
            self.calibration.copy_(torch.tensor(state["calibration"]))
        if self.cfg.imitation_aggregate:
            device = self.trainer.model.device
            self.pool = [
                {k: v.to(device) for k, v in load_tensors(self.states_path(q)).items()} for q in range(self.round)
            ]

    def states_path(self, r: int) -> Path:
        return self.dir / "states" / f"round-{r}.safetensors"

    def collect(self, r: int) -> tuple[dict[str, torch.Tensor], int]:
        """Round ``r``'s labelled states with a gold candidate, reduced to what the fit reads (:func:`fit_inputs`;
        with ``imitation_aggregate`` also saved, atomically), and how many states the rollouts had."""
        trainer = self.trainer
        states = collect_states(
            trainer.task,
            trainer.model,
            trainer.policy,
            round_examples(trainer, r),
            trainer.sampling,
            ExampleStreams.seed_of(self.cfg.run.seed, STREAM + r),
            batch_size=256,
            progress=trainer.progress,
            actor=self.actor if r == 0 else None,
            mode=self.cfg.imitation_mode,
        )
        has_gold = states["gold"].any(1)
        states = {k: v[has_gold] for k, v in states.items()}
        freeze_inputs(trainer.policy, states)
        states = fit_inputs(trainer.policy, states)
        if self.cfg.imitation_aggregate and trainer.dist.main:
            cpu = {k: v.contiguous().cpu() for k, v in states.items()}
            atomic_write(self.states_path(r), lambda tmp: save_file(cpu, tmp))
        return states, len(has_gold)

    def fit(self, states: dict[str, torch.Tensor]) -> float:
        """One round's fit (:func:`fit_states`), with a new Adam where ``imitation_reset_optimizer``."""
        if self.cfg.imitation_reset_optimizer:
            self.opt = self.optimizer()
        return fit_states(self.trainer.policy, states, self.opt, self.params, self.calibration, self.gen, self.cfg)

    def record(self, logger: MetricsLogger, row: dict) -> None:
        """Log the round's row, keep the policy as ``best`` when its held-out metric is the best so far (round 0:
        the policy imitation starts from), then checkpoint the phase."""
        trainer = self.trainer
        if self.round:  # a fitted round: its calibration goes with the policy (decoding option bound=EPS)
            trainer.policy.config = replace(trainer.policy.config, calibration=self.calibration.tolist())
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
                new, visited = self.collect(self.round)
                if cfg.imitation_aggregate:  # DAgger: this round's states and every earlier round's
                    self.pool.append(new)
                    states = {k: torch.cat([part[k] for part in self.pool]) for k in new}
                else:
                    states = new
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
                        "states": visited,
                        "fit_states": len(states["gold"]),
                        "fit_seconds": seconds,
                        "gold_share": (new["gold"].sum() / new["allowed"].sum().clamp(min=1)).item(),
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
        trainer.policy.load_calibration(self.dir / "best")
        return {"imitation_" + k.removeprefix("eval_"): v for k, v in self.best_metrics.items()}
