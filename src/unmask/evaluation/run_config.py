"""What a run decodes (the task, the MDM, the examples, the sampling settings) and the configs of the evaluation
commands built on it.

:class:`RunConfig` is shared by ``eval``, ``frontier``, ``show-order`` and ``train-policy`` (where it is the
``run`` section of :class:`unmask.training.grpo.GRPOConfig`); :class:`ExamplesConfig` adds how many examples the
evaluation commands decode and in what batches. :class:`EvalConfig`, :class:`FrontierConfig` and
:class:`OrderConfig` are the whole settings of ``eval``, ``frontier`` and ``show-order``: the API functions
(:mod:`unmask.api`) take them, the command line builds them from ``--config FILE.yaml`` and its flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from unmask.core.config import Config, option
from unmask.engine.config import SamplingConfig
from unmask.evaluation.frontier import BOUNDS, POLICY_TEMPERATURES, THRESHOLDS, TOKENS_PER_STEP
from unmask.models import recorded_task_options
from unmask.tasks import TASKS, Task, get_task


@dataclass
class RunConfig(Config):
    """Task, model, data and sampling of a run."""

    COMMON: ClassVar[tuple[str, ...]] = ("task", "model", "data", "difficulty", "seed")

    task: str = option("sudoku9", "task: data, token layout, verifier and reward", choices=sorted(TASKS))
    model: str = option(
        "", "built-in model name, checkpoint directory or hf:NAME_OR_PATH; '' = the task's shipped model"
    )
    data: str = option("", "examples from this file (training prompts for train-policy); '' = freshly generated ones")
    difficulty: list[int] = option(
        [],
        "difficulty of generated examples, the task's knob (sudoku: clues, "
        "arithmetic: digits); several spread the examples over them; empty = the "
        "task's default",
        low=0,
        aliases=("--clues",),
    )
    seed: int = option(0, "random seed of generated examples, sampling and training", low=0)
    sampling: SamplingConfig = option(default_factory=SamplingConfig, help="sampling (LLaDA generate() names)")
    model_options: dict = option({}, "options forwarded to unmask.models.load_model (the Hugging Face flags)")
    task_options: dict = option(
        {}, "options forwarded to unmask.tasks.get_task (--task-option KEY=VALUE; each task's: docs/tasks.md)"
    )

    @property
    def difficulties(self) -> list[int | None]:
        """The difficulties to generate examples at (``[None]``: the task's default)."""
        return list(self.difficulty) or [None]


@dataclass
class ExamplesConfig(Config):
    """How many examples ``eval``, ``frontier`` and ``show-order`` decode, and in what batches."""

    COMMON: ClassVar[tuple[str, ...]] = ("num", "limit", "batch_size")

    num: int = option(200, "number of generated examples (without --data)", low=1)
    limit: int | None = option(
        None, "use only the first N examples (of --data or the generated ones); none = all", low=1
    )
    batch_size: int = option(256, "examples decoded together in one batch", low=1)


def resolve_task(task: str, model: str | None, task_options: dict | None = None) -> tuple[Task, str]:
    """The task and the model name (``model``, else the task's shipped model), the task built with the options
    the model was trained with (:func:`unmask.models.recorded_task_options`) under the ones given, which win."""
    given = dict(task_options or {})
    task_obj = get_task(task, **given)
    model_name = model or task_obj.default_model
    recorded = recorded_task_options(model_name, task)
    if any(k not in given for k in recorded):
        task_obj = get_task(task, **{**recorded, **given})
    return task_obj, model_name


def load_data(task: Task, path: str, option: str = "--data") -> list:
    """``task.load(path)`` with one clear error for a directory or a file that is not text."""
    if Path(path).is_dir():
        raise FileNotFoundError(f"{option} {path} is a directory; give a {task.name} data file")
    try:
        return task.load(path)
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{option} {path}: not a text data file (byte {e.start} is not UTF-8); give a {task.name} data file"
        ) from None


DEFAULT_POLICIES = "random,confidence,margin,entropy,left_to_right,topk_softmax,threshold:0.9"


@dataclass
class EvalConfig(Config):
    """``unmask eval``: policies side by side on the same examples (:func:`unmask.api.evaluate`)."""

    COMMON: ClassVar[tuple[str, ...]] = ("policies", "pass_at", "alpha")

    policies: str = option(
        DEFAULT_POLICIES,
        "comma-separated policy specs, e.g. confidence,threshold:0.9,"
        "topk_softmax:k=5, upo, a checkpoint path or hf://OWNER/NAME",
    )
    pass_at: int | None = option(None, "also report pass@1..N of the stochastic policies (UPO App. D)", low=1)
    alpha: float | None = option(
        None, "speed weight alpha fed to alpha-conditioned learned policies (unless their spec sets :alpha=)", low=0.0
    )
    run: RunConfig = option(default_factory=RunConfig, help="task, model, data and sampling")
    examples: ExamplesConfig = option(default_factory=ExamplesConfig, help="how many examples, in what batches")


@dataclass
class FrontierConfig(Config):
    """``unmask frontier``: each method's speed knob swept on the same examples (:func:`unmask.api.frontier`):
    confidence over k tokens per step, threshold over its value, each of ``policies`` over alpha, tau_pi or the
    correctness bound."""

    COMMON: ClassVar[tuple[str, ...]] = ("policies",)

    policies: str = option("", "policies to add, e.g. bernoulli,runs/bern/best (swept) or upo (a point)")
    thresholds: list[float] = option(
        list(THRESHOLDS), "Fast-dLLM thresholds to sweep", low=0.0, high=1.0, low_open=True
    )
    ks: list[int] = option(list(TOKENS_PER_STEP), "tokens per step for confidence", low=1)
    alphas: list[float] | None = option(
        None, "alphas for alpha-conditioned policies; none = 5 across the trained range", low=0.0
    )
    policy_temperatures: list[float] = option(
        list(POLICY_TEMPERATURES), "tau_pi values for the other parallel policies", low=0.0, low_open=True
    )
    bounds: list[float] = option(
        list(BOUNDS),
        "correctness bounds epsilon for policies trained by imitation (their bound=EPS option)",
        low=0.0,
        high=1.0,
        low_open=True,
        high_open=True,
    )
    run: RunConfig = option(
        default_factory=RunConfig, help="task, model, data and sampling (not steps: the sweeps set them)"
    )
    examples: ExamplesConfig = option(default_factory=ExamplesConfig, help="how many examples, in what batches")

    def check(self) -> None:
        if self.run.sampling.steps is not None:
            raise ValueError(
                "frontier sets the decoding steps itself (one curve point per tokens-per-step k); drop steps"
            )


@dataclass
class OrderConfig(Config):
    """``unmask show-order``: the step at which one policy reveals each generated position
    (:func:`unmask.api.show_order`)."""

    COMMON: ClassVar[tuple[str, ...]] = ("policy", "show", "normalise")

    policy: str = option("confidence", "one policy spec, as in eval --policies (e.g. threshold:0.9, upo, PATH)")
    show: int = option(8, "examples drawn one by one in the heatmap", low=1)
    normalise: bool = option(False, "colour by step / last step of the row instead of the step")
    run: RunConfig = option(default_factory=RunConfig, help="task, model, data and sampling")
    examples: ExamplesConfig = option(
        default_factory=lambda: ExamplesConfig(num=100), help="how many examples, in what batches"
    )
