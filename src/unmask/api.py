"""The Python API behind the CLI: each function mirrors one ``unmask`` subcommand."""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from unmask.core.config import Config, option
from unmask.core.distributed import current
from unmask.evaluation.evaluate import EvalResult, format_table, pass_at_n, plot_frontier, results_json
from unmask.evaluation.evaluate import evaluate as evaluate_on
from unmask.evaluation.frontier import (
    format_frontier,
    plot_curves,
    run_sweeps,
    standard_sweeps,
    summarize,
)
from unmask.evaluation.order import RevealOrder, reveal_order
from unmask.evaluation.run_config import (
    EvalConfig,
    ExamplesConfig,
    FrontierConfig,
    OrderConfig,
    RunConfig,
    load_data,
    resolve_task,
)
from unmask.models import MaskedDiffusionModel, load_model
from unmask.policies.resolve import SHIPPED_POLICIES, resolve_policies, resolve_policy
from unmask.tasks import Task

if TYPE_CHECKING:
    from unmask.training.grpo import GRPOConfig

C = TypeVar("C", bound=Config)


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


def prepare_run(run: RunConfig, examples: ExamplesConfig) -> tuple[Task, MaskedDiffusionModel, list, dict]:
    """Task, MDM, examples and the JSON context shared by ``eval``, ``frontier`` and ``show-order``. Several
    difficulties spread the generated examples over them."""
    task_obj, model_name = resolve_task(run.task, run.model or None, run.task_options)
    current()  # under a launcher, start the process group first: each GPU process loads onto its own device
    mdm = load_model(model_name, **run.model_options)
    num, seed = examples.num, run.seed
    if run.data:
        items = load_data(task_obj, run.data)
    else:
        k = len(run.difficulties)
        items = [
            ex
            for i, c in enumerate(run.difficulties)
            for ex in task_obj.generate(num // k + (i < num % k), seed=seed, difficulty=c)
        ]
    items = items[: examples.limit] if examples.limit else items
    shown = ",".join(map(str, run.difficulty)) if run.difficulty else None
    generated = f"generated:num={num}:{task_obj.difficulty_name}={shown}:seed={seed}"
    context = {"model": model_name, "task": run.task, "data": run.data or generated, "processes": current().world_size}
    return task_obj, mdm, items, context


def build_config(cls: type[C], config: C | None, settings: dict) -> C:
    """``config``, or one built from flat ``settings`` (the flags' names: ``task=``, ``steps=``, ``num=``, ...);
    not both."""
    if config is not None:
        if settings:
            raise ValueError(f"give a {cls.__name__} or its settings ({', '.join(sorted(settings))}), not both")
        if not isinstance(config, cls):
            raise ValueError(f"expected a {cls.__name__}, got {type(config).__name__}")
        return config
    return cls.from_flat(settings)


def evaluate(config: EvalConfig | None = None, progress: bool = True, **settings) -> EvalReport:
    """``unmask eval``: every policy of ``config.policies`` on the same examples (see
    :func:`unmask.evaluation.evaluate.evaluate`); ``config``, or its flat settings as keywords
    (``evaluate(task="zebra", policies="confidence,random", num=32)``). ``pass_at`` = N also reports pass@1..N."""
    config = build_config(EvalConfig, config, settings)
    run, sampling = config.run, config.run.sampling
    task_obj, mdm, examples, context = prepare_run(run, config.examples)
    pols = resolve_policies(config.policies, mdm, config.alpha)
    batch_size = config.examples.batch_size
    results = evaluate_on(
        task_obj,
        mdm,
        examples,
        pols,
        sampling,
        batch_size=batch_size,
        seed=run.seed,
        progress=progress and current().main,
    )
    if config.pass_at:
        context["pass_at"] = {
            p.name: pass_at_n(task_obj, mdm, examples, p, config.pass_at, sampling, batch_size, run.seed)
            for p in pols
            if p.capabilities.stochastic or sampling.temperature > 0
        }
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
            text += (
                f"\nfewest mean NFE within 1 point of one-per-step confidence "
                f"(solved {ref['solved_rate']:.3f}, NFE {ref['nfe']:.1f}):"
            )
            for method, row in self.summary.items():
                if method != "reference":
                    text += f"\n  {method:<32} " + (
                        f"NFE {row['nfe_at_reference_accuracy']:.2f} ({row['speedup']:.2f}x)"
                        if row["speedup"]
                        else "not reached"
                    )
        return text

    def to_json(self) -> dict:
        return {"curves": self.curves, "summary": self.summary, **self.context}

    def plot(self, path: str | Path) -> None:
        plot_curves(self.curves, path, title=f"{self.context.get('task', '')} · {self.context.get('model', '')}")


def frontier(config: FrontierConfig | None = None, progress: bool = True, **settings) -> FrontierReport:
    """``unmask frontier``: accuracy vs mean NFE of confidence (k per step), threshold and each policy of
    ``config.policies`` (learned parallel ones swept over alpha or tau_pi, imitated ones over the bound); see :mod:`unmask.evaluation.frontier`.
    ``config``, or its flat settings as keywords."""
    config = build_config(FrontierConfig, config, settings)
    run, sampling = config.run, config.run.sampling
    task_obj, mdm, examples, context = prepare_run(run, config.examples)
    specs = [s for s in config.policies.split(",") if s.strip()]
    learned = {spec: resolve_policy(spec, mdm) for spec in specs}
    batch_size = config.examples.batch_size
    sweeps = standard_sweeps(
        task_obj,
        mdm,
        examples,
        sampling,
        learned,
        config.thresholds,
        config.ks,
        config.alphas,
        config.policy_temperatures,
        batch_size,
        config.bounds,
    )
    curves = run_sweeps(task_obj, mdm, examples, sweeps, batch_size, run.seed, progress and current().main)
    trained_with = {spec: getattr(getattr(pol, "config", None), "mdm_name", None) for spec, pol in learned.items()}
    context.update(
        block_length=sampling.block_length,
        temperature=sampling.temperature,
        seed=run.seed,
        trained_with={spec: name for spec, name in trained_with.items() if name},
    )
    return FrontierReport(curves, summarize(curves), context)


def show_order(config: OrderConfig | None = None, **settings) -> RevealOrder:
    """``unmask show-order``: the reveal order of one policy (any spec ``unmask eval --policies`` takes) on generated
    or loaded examples; plot it with :func:`unmask.evaluation.order.plot_order`. ``config``, or its flat settings as
    keywords."""
    config = build_config(OrderConfig, config, settings)
    run, sampling = config.run, config.run.sampling
    task_obj, mdm, examples, context = prepare_run(run, config.examples)
    result = reveal_order(
        task_obj, mdm, examples, resolve_policy(config.policy, mdm), sampling, config.examples.batch_size, run.seed
    )
    result.context.update(
        context, steps=sampling.steps, block_length=sampling.block_length, temperature=sampling.temperature
    )
    return result


def train_policy(
    config: GRPOConfig, resume: bool = False, progress: bool = True, max_minutes: float | None = None
) -> Path:
    """``unmask train-policy``: the whole pipeline of a learned unmasking policy: the coupling pre-training step
    where the policy has a coupling (:func:`unmask.training.pretrain.pretrain_step`; skipped with ``init_policy``),
    imitation of the oracle where ``imitation_rounds`` > 0 (:mod:`unmask.training.imitation`), then GRPO (UPO
    Algorithm 2); ``max_minutes`` stops GRPO early with a resumable checkpoint. ``resume`` continues the phase a
    kill interrupted (imitation rounds and GRPO steps resume exactly)."""
    from unmask.core.checkpoint import check_new_run, has_checkpoint
    from unmask.training.grpo import GRPOTrainer
    from unmask.training.imitation import PHASE, Imitation
    from unmask.training.pretrain import pretrain_step

    trainer = GRPOTrainer.from_config(config, progress=progress)
    initial = dict(trainer.initial_metrics)  # a pre-training that ran before (--init-policy) has its row entry too
    if resume and has_checkpoint(config.output_dir):  # GRPO had started
        return trainer.train(resume=True, max_minutes=max_minutes)
    imitating = resume and has_checkpoint(Path(config.output_dir) / PHASE)
    if not resume:
        check_new_run(config.output_dir)  # before the steps, not after them
        check_new_run(Path(config.output_dir) / PHASE)
    imitation = Imitation(trainer) if config.imitation_rounds else None  # a bad --imitation-actor fails here
    if trainer.needs_pretraining and not imitating:
        initial["coupling_nll"] = pretrain_step(trainer)[-1]
    if imitation is not None:
        initial.update(imitation.run(resume=imitating))
    return trainer.train(resume=False, max_minutes=max_minutes, initial=initial)


def pretrain_coupling(config: GRPOConfig, progress: bool = True) -> Path:
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
    trainer = GRPOTrainer.from_config(config, progress=progress)
    history = pretrain_step(trainer)
    if trainer.dist.main:
        trainer.policy.save(out, {**trainer._meta(), "coupling_nll": history})
    return out


@dataclass
class DemoConfig(Config):
    """``unmask demo``: train UPO on 4x4 sudoku from random order, compare it with the heuristics on 4x4 and 9x9."""

    output_dir: str = option("outputs/demo", "where the plots, the JSON and the trained policy go")
    num: int = option(200, "fresh puzzles in each comparison", low=1)
    difficulty: int = option(28, "clues of the 9x9 puzzles", low=17, high=80, aliases=("--clues",))
    train_steps: int = option(60, "GRPO steps of the 4x4 UPO run (0: no training)", low=0)


def demo(config: DemoConfig | None = None, **settings) -> dict[str, EvalReport]:
    """``unmask demo``: (1) the first ``train_steps`` GRPO steps of the shipped ``upo-sudoku4`` recipe, UPO on 4x4
    sudoku learned from uniform random order (no reference, no confidence prior), compared with every heuristic
    and the shipped ``upo`` on fresh 4x4 puzzles at the recipe's clue count; (2) the heuristics that solve 9x9
    puzzles at all (random order, left-to-right and threshold 0.7 solve none) beside the shipped ``upo`` /
    ``bernoulli`` policies, the shipped policy imitated from the oracle (``upo-dagger-sudoku9-small``, one per step
    and with ``bound=0.01``) and the parallel ground-truth oracle (the upper bound, :mod:`unmask.policies.oracle`)
    on fresh 9x9 puzzles with ``difficulty`` clues. Writes a table, a solved-vs-NFE plot
    per task and one JSON; an earlier demo in ``output_dir`` is replaced, with a warning."""
    from unmask.core.checkpoint import load_json, save_json
    from unmask.training.grpo import GRPOConfig

    config = build_config(DemoConfig, config, settings)
    num, difficulty, train_steps = config.num, config.difficulty, config.train_steps
    out = Path(config.output_dir)
    recipe = load_json(SHIPPED_POLICIES / "upo-sudoku4" / "config.json")["train"]
    policies_4x4 = [*_DEMO_HEURISTICS, "upo"]
    if (out / "demo_results.json").exists():
        warnings.warn(f"{out} holds an earlier demo; it is replaced (give --output-dir DIR to keep it)", stacklevel=2)
    if train_steps > 0:
        print(f"training UPO on 4x4 sudoku from random order for {train_steps} GRPO steps ...")
        shutil.rmtree(out / "upo-sudoku4", ignore_errors=True)  # each demo trains afresh (a run refuses an old one)
        train_policy(
            GRPOConfig.from_dict(
                {**recipe, **_DEMO_TRAINING, "max_steps": train_steps, "output_dir": str(out / "upo-sudoku4")}
            )
        )
        policies_4x4.append(str(out / "upo-sudoku4" / "best"))
    reports = {
        "sudoku4": evaluate(
            task="sudoku4", policies=",".join(policies_4x4), num=num, difficulty=recipe["run"]["difficulty"], seed=1
        ),
        "sudoku9": evaluate(
            task="sudoku9",
            policies=",".join([*_DEMO_HEURISTICS_9X9, "upo", "bernoulli", *_DEMO_IMITATED, "oracle:parallel=1"]),
            num=num,
            difficulty=[difficulty],
            seed=1,
        ),
    }
    for task, report in reports.items():
        print(f"\n{task}, {report.context['data']}:\n{report.table}")
        report.plot(out / f"demo_{task}.png")
    save_json(out / "demo_results.json", {task: report.to_json() for task, report in reports.items()})
    print(f"wrote {out / 'demo_sudoku4.png'}, {out / 'demo_sudoku9.png'} and {out / 'demo_results.json'}")
    return reports


_DEMO_HEURISTICS = ("random", "left_to_right", "entropy", "margin", "confidence", "threshold:0.9", "threshold:0.7")
_DEMO_HEURISTICS_9X9 = ("entropy", "margin", "confidence", "threshold:0.9")
# the shipped policy trained by imitation of the oracle (recipes/upo-dagger-sudoku9-small.yaml), one per step and
# with its correctness bound (docs/imitation.md)
_DEMO_IMITATED = ("upo-dagger-sudoku9-small", "upo-dagger-sudoku9-small:bound=0.01")
_DEMO_TRAINING = {"eval_size": 128, "eval_steps": 20}  # the held-out checks of the short run (the recipe: 256 every 10)
