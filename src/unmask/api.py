"""The Python API behind the CLI: each function mirrors one ``unmask`` subcommand."""

from __future__ import annotations

import math
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from unmask.core.distributed import current
from unmask.engine.config import SamplingConfig
from unmask.evaluation.evaluate import EvalResult, evaluate, format_table, pass_at_n, plot_frontier, results_json
from unmask.evaluation.frontier import (
    POLICY_TEMPERATURES,
    THRESHOLDS,
    TOKENS_PER_STEP,
    format_frontier,
    plot_curves,
    run_sweeps,
    standard_sweeps,
    summarize,
)
from unmask.models import MaskedDiffusionModel, load_model
from unmask.evaluation.order import RevealOrder, reveal_order
from unmask.policies.resolve import SHIPPED_POLICIES, resolve_policies, resolve_policy
from unmask.evaluation.run_config import ExamplesConfig, RunConfig, load_data, resolve_task
from unmask.tasks import Task

if TYPE_CHECKING:
    from unmask.training.grpo import GRPOConfig


@dataclass
class EvalReport:
    results: list[EvalResult]
    context: dict = field(default_factory=dict)

    @property
    def table(self) -> str:
        text = format_table(self.results)
        for name, curve in self.context.get("pass_at", {}).items():
            text += f"\npass@1..{len(curve)} {name}: " + " ".join(f"{v:.3f}" for v in curve)
        return text

    def to_json(self) -> dict:
        return results_json(self.results, **self.context)

    def plot(self, path: str | Path) -> None:
        plot_frontier(self.results, path, title=f"{self.context.get('task', '')} · {self.context.get('model', '')}")


def prepare_run(task: str, model: str | None, data: str | None, num: int, difficulty: int | Sequence[int] | None,
                limit: int | None, seed: int, model_options: dict | None, task_options: dict | None
                ) -> tuple[Task, MaskedDiffusionModel, list, dict]:
    """Task, MDM, examples and the JSON context shared by ``eval``, ``frontier`` and ``show-order``; the
    arguments are checked as :class:`~unmask.evaluation.run_config.RunConfig` / :class:`~unmask.evaluation.run_config.ExamplesConfig`
    fields (one clear error each). Several difficulties spread the generated examples over them."""
    run = RunConfig(task=task, model=model or "", data=data or "", difficulty=_difficulties(difficulty), seed=seed,
                    model_options=dict(model_options or {}), task_options=dict(task_options or {}))
    ExamplesConfig(num=num, limit=limit)
    task_obj, model_name = resolve_task(task, model, task_options)
    current()  # under a launcher, start the process group first: each GPU process loads onto its own device
    mdm = load_model(model_name, **run.model_options)
    if data:
        examples = load_data(task_obj, data)
    else:
        k = len(run.difficulties)
        examples = [ex for i, c in enumerate(run.difficulties)
                    for ex in task_obj.generate(num // k + (i < num % k), seed=seed, difficulty=c)]
    examples = examples[:limit] if limit else examples
    shown = ",".join(map(str, run.difficulty)) if run.difficulty else None
    generated = f"generated:num={num}:{task_obj.difficulty_name}={shown}:seed={seed}"
    context = {"model": model_name, "task": task, "data": data or generated, "processes": current().world_size}
    return task_obj, mdm, examples, context


def _difficulties(difficulty: int | Sequence[int] | None) -> list:
    """``difficulty`` as RunConfig's list (None: the task's default)."""
    if difficulty is None:
        return []
    return [difficulty] if isinstance(difficulty, int) or not isinstance(difficulty, Sequence) else list(difficulty)


def sampling_config(**values) -> SamplingConfig:
    """A :class:`SamplingConfig` from keyword arguments; an unknown one is an error naming the valid ones."""
    return SamplingConfig.from_dict(values)


def evaluate_policies(
    task: str = "sudoku9",
    model: str | None = None,
    policies: str | Sequence[str] = "confidence",
    data: str | None = None,
    num: int = 200,
    difficulty: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    steps: int | None = None,
    block_length: int | None = None,
    temperature: float = 0.0,
    batch_size: int = 256,
    progress: bool = True,
    pass_at: int | None = None,
    model_options: dict | None = None,
    task_options: dict | None = None,
    alpha: float | None = None,
    **sampling_options,
) -> EvalReport:
    """``unmask eval``: every policy on the same examples; see :func:`unmask.evaluation.evaluate.evaluate`.
    ``model_options`` go to :func:`unmask.models.load_model` (``hf:`` models), ``task_options`` to
    :func:`unmask.tasks.get_task` (e.g. ``gen_length`` for math tasks); ``alpha`` to alpha-conditioned policies;
    ``sampling_options``: further :class:`SamplingConfig` fields. ``pass_at`` = N reports pass@1..N (N >= 1)."""
    sampling = sampling_config(steps=steps, block_length=block_length, temperature=temperature, **sampling_options)
    ExamplesConfig(num=num, limit=limit, batch_size=batch_size)
    if pass_at is not None and (isinstance(pass_at, bool) or not isinstance(pass_at, int) or pass_at < 1):
        raise ValueError(f"pass_at (--pass-at) must be an integer >= 1 or none, got {pass_at!r}")
    if alpha is not None and not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha (--alpha) must be a number >= 0 or none, got {alpha!r}")
    task_obj, mdm, examples, context = prepare_run(task, model, data, num, difficulty, limit, seed, model_options, task_options)
    pols = resolve_policies(policies, mdm, alpha)
    results = evaluate(task_obj, mdm, examples, pols, sampling, batch_size=batch_size, seed=seed,
                       progress=progress and current().main)
    if pass_at:
        context["pass_at"] = {p.name: pass_at_n(task_obj, mdm, examples, p, pass_at, sampling, batch_size, seed)
                              for p in pols if p.capabilities.stochastic or temperature > 0}
    return EvalReport(results, context)


@dataclass
class FrontierReport:
    curves: dict
    summary: dict
    context: dict = field(default_factory=dict)

    @property
    def table(self) -> str:
        text = format_frontier(self.curves)
        ref = self.summary.get("reference")
        if ref:
            text += (f"\nfewest mean NFE within 1 point of one-per-step confidence "
                     f"(solved {ref['solved_rate']:.3f}, NFE {ref['nfe']:.1f}):")
            for method, row in self.summary.items():
                if method != "reference":
                    text += f"\n  {method:<32} " + (f"NFE {row['nfe_at_reference_accuracy']:.2f} ({row['speedup']:.2f}x)"
                                                     if row["speedup"] else "not reached")
        return text

    def to_json(self) -> dict:
        return {"curves": self.curves, "summary": self.summary, **self.context}

    def plot(self, path: str | Path) -> None:
        plot_curves(self.curves, path, title=f"{self.context.get('task', '')} · {self.context.get('model', '')}")


def frontier(
    task: str = "sudoku9",
    model: str | None = None,
    policies: str | Sequence[str] = (),
    data: str | None = None,
    num: int = 200,
    difficulty: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    block_length: int | None = None,
    temperature: float = 0.0,
    batch_size: int = 256,
    thresholds: Sequence[float] = THRESHOLDS,
    ks: Sequence[int] = TOKENS_PER_STEP,
    alphas: Sequence[float] | None = None,
    policy_temperatures: Sequence[float] = POLICY_TEMPERATURES,
    progress: bool = True,
    model_options: dict | None = None,
    task_options: dict | None = None,
    **sampling_options,
) -> FrontierReport:
    """``unmask frontier``: accuracy vs mean NFE of confidence (k per step), threshold and each policy of
    ``policies`` (learned parallel ones swept over alpha or tau_pi); see :mod:`unmask.evaluation.frontier`.
    ``sampling_options``: further :class:`SamplingConfig` fields (not ``steps``: the sweeps set it)."""
    if "steps" in sampling_options:
        raise ValueError("frontier sets the decoding steps itself (one curve point per tokens-per-step k); drop steps")
    sampling = sampling_config(block_length=block_length, temperature=temperature, **sampling_options)
    ExamplesConfig(num=num, limit=limit, batch_size=batch_size)
    task_obj, mdm, examples, context = prepare_run(task, model, data, num, difficulty, limit, seed, model_options, task_options)
    specs = [s for s in policies.split(",") if s.strip()] if isinstance(policies, str) else list(policies)
    learned = {spec: resolve_policy(spec, mdm) for spec in specs}
    sweeps = standard_sweeps(task_obj, mdm, examples, sampling, learned, thresholds, ks, alphas, policy_temperatures,
                             batch_size)
    curves = run_sweeps(task_obj, mdm, examples, sweeps, batch_size, seed, progress and current().main)
    trained_with = {spec: getattr(getattr(pol, "config", None), "mdm_name", None) for spec, pol in learned.items()}
    context.update(block_length=block_length, temperature=temperature, seed=seed,
                   trained_with={spec: name for spec, name in trained_with.items() if name})
    return FrontierReport(curves, summarize(curves), context)


def show_order(
    task: str = "arithmetic",
    policy: str = "confidence",
    model: str | None = None,
    data: str | None = None,
    num: int = 8,
    difficulty: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    steps: int | None = None,
    block_length: int | None = None,
    temperature: float = 0.0,
    batch_size: int = 256,
    model_options: dict | None = None,
    task_options: dict | None = None,
    **sampling_options,
) -> RevealOrder:
    """``unmask show-order``: the reveal order of one policy (any spec ``unmask eval --policies`` takes)
    on generated or loaded examples; plot it with :func:`unmask.evaluation.order.plot_order`. ``sampling_options``: further
    :class:`SamplingConfig` fields."""
    task_obj, mdm, examples, context = prepare_run(task=task, model=model, data=data, num=num, difficulty=difficulty,
                                                   limit=limit, seed=seed, model_options=model_options,
                                                   task_options=task_options)
    sampling = sampling_config(steps=steps, block_length=block_length, temperature=temperature, **sampling_options)
    ExamplesConfig(num=num, limit=limit, batch_size=batch_size)
    result = reveal_order(task_obj, mdm, examples, resolve_policy(policy, mdm), sampling, batch_size, seed)
    result.context.update(context, steps=steps, block_length=block_length, temperature=temperature)
    return result


def train_policy(config: "GRPOConfig", resume: bool = False, progress: bool = True,
                 max_minutes: float | None = None) -> Path:
    """``unmask train-policy``: the whole pipeline of a learned unmasking policy: the coupling pre-training step
    where the policy has a coupling (:func:`unmask.training.pretrain.pretrain_step`; skipped with ``init_policy``),
    imitation of the oracle where ``imitation_rounds`` > 0 (:mod:`unmask.training.imitation`), then GRPO (UPO
    Algorithm 2); ``max_minutes`` stops GRPO early with a resumable checkpoint. ``resume`` continues the phase a
    kill interrupted (imitation rounds and GRPO steps resume exactly)."""
    from unmask.core.checkpoint import check_new_run, has_checkpoint
    from unmask.training.grpo import GRPOTrainer
    from unmask.training.imitation import PHASE, Imitation
    from unmask.training.pretrain import pretrain_step

    trainer = GRPOTrainer(config, progress=progress)
    initial = dict(trainer.initial_metrics)  # a pre-training that ran before (--init-policy) has its row entry too
    if resume and has_checkpoint(config.output_dir):  # GRPO had started
        return trainer.train(resume=True, max_minutes=max_minutes)
    imitating = resume and has_checkpoint(Path(config.output_dir) / PHASE)
    if not resume:
        check_new_run(config.output_dir)  # before the steps, not after them
        check_new_run(Path(config.output_dir) / PHASE)
    if trainer.needs_pretraining and not imitating:
        initial["coupling_nll"] = pretrain_step(trainer)[-1]
    if config.imitation_rounds:
        initial.update(Imitation(trainer).run(resume=imitating))
    return trainer.train(resume=False, max_minutes=max_minutes, initial=initial)


def pretrain_coupling(config: "GRPOConfig", progress: bool = True) -> Path:
    """``unmask pretrain-coupling``: the coupling pre-training step of a ``train-policy`` run on its own; writes the
    pre-trained policy to ``config.output_dir`` (a policy checkpoint, ``init_policy`` of the GRPO run) with the
    NLL of each epoch (``coupling_nll``)."""
    from unmask.core.checkpoint import CONFIG
    from unmask.training.grpo import GRPOTrainer
    from unmask.training.pretrain import pretrain_step

    out = Path(config.output_dir)
    if (out / CONFIG).exists():
        raise ValueError(f"{out} already holds a checkpoint; choose another --output-dir (or delete it)")
    if config.init_policy:
        raise ValueError("--init-policy starts GRPO from a pre-trained policy; pretrain-coupling makes one (drop it)")
    trainer = GRPOTrainer(config, progress=progress)
    history = pretrain_step(trainer)
    if trainer.dist.main:
        trainer.policy.save(out, {**trainer._meta(), "coupling_nll": history})
    return out


def demo(output_dir: str = "outputs/demo", num: int = 200, difficulty: int = 28, train_steps: int = 60
         ) -> dict[str, EvalReport]:
    """``unmask demo``: (1) the first ``train_steps`` GRPO steps of the shipped ``upo-sudoku4`` recipe, UPO on 4x4
    sudoku learned from uniform random order (no reference, no confidence prior), compared with every heuristic
    and the shipped ``upo`` on fresh 4x4 puzzles at the recipe's clue count; (2) the heuristics that solve 9x9
    puzzles at all (random order, left-to-right and threshold 0.7 solve none) beside the shipped ``upo`` /
    ``bernoulli`` policies and the parallel ground-truth oracle (the upper bound, :mod:`unmask.policies.oracle`)
    on fresh 9x9 puzzles with ``difficulty`` clues. Writes a table, a solved-vs-NFE plot
    per task and one JSON; an earlier demo in ``output_dir`` is replaced, with a warning."""
    from unmask.core.checkpoint import load_json, save_json
    from unmask.training.grpo import GRPOConfig

    if isinstance(train_steps, bool) or not isinstance(train_steps, int) or train_steps < 0:
        raise ValueError(f"train_steps (--train-steps) must be an integer >= 0 (0: no training), got {train_steps!r}")
    ExamplesConfig(num=num)
    out = Path(output_dir)
    recipe = load_json(SHIPPED_POLICIES / "upo-sudoku4" / "config.json")["train"]
    policies_4x4 = [*_DEMO_HEURISTICS, "upo"]
    if (out / "demo_results.json").exists():
        warnings.warn(f"{out} holds an earlier demo; it is replaced (give --output-dir DIR to keep it)", stacklevel=2)
    if train_steps > 0:
        print(f"training UPO on 4x4 sudoku from random order for {train_steps} GRPO steps ...")
        shutil.rmtree(out / "upo-sudoku4", ignore_errors=True)  # each demo trains afresh (a run refuses an old one)
        train_policy(GRPOConfig.from_dict({**recipe, **_DEMO_TRAINING, "max_steps": train_steps,
                                           "output_dir": str(out / "upo-sudoku4")}))
        policies_4x4.append(str(out / "upo-sudoku4" / "best"))
    reports = {
        "sudoku4": evaluate_policies(task="sudoku4", policies=policies_4x4, num=num, difficulty=recipe["run"]["difficulty"],
                                     seed=1),
        "sudoku9": evaluate_policies(task="sudoku9", policies=[*_DEMO_HEURISTICS_9X9, "upo", "bernoulli", "oracle:parallel=1"], num=num,
                                     difficulty=difficulty, seed=1),
    }
    for task, report in reports.items():
        print(f"\n{task}, {report.context['data']}:\n{report.table}")
        report.plot(out / f"demo_{task}.png")
    save_json(out / "demo_results.json", {task: report.to_json() for task, report in reports.items()})
    print(f"wrote {out / 'demo_sudoku4.png'}, {out / 'demo_sudoku9.png'} and {out / 'demo_results.json'}")
    return reports


_DEMO_HEURISTICS = ("random", "left_to_right", "entropy", "margin", "confidence", "threshold:0.9", "threshold:0.7")
_DEMO_HEURISTICS_9X9 = ("entropy", "margin", "confidence", "threshold:0.9")
_DEMO_TRAINING = {"eval_size": 128, "eval_steps": 20}  # the held-out checks of the short run (the recipe: 256 every 10)
