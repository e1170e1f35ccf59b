"""What a run decodes: the task, the MDM, the examples and the sampling settings.

:class:`RunConfig` is shared by ``eval``, ``frontier``, ``show-order`` and ``train-policy`` (where it is the
``run`` section of :class:`unmask.training.grpo.GRPOConfig`); :class:`ExamplesConfig` adds how many examples the
evaluation commands decode and in what batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from unmask.core.config import Config, option
from unmask.engine.config import SamplingConfig
from unmask.models import recorded_task_options
from unmask.tasks import TASKS, Task, get_task


@dataclass
class RunConfig(Config):
    """Task, model, data and sampling of a run."""

    task: str = option("sudoku9", "task: data, token layout, verifier and reward", choices=sorted(TASKS))
    model: str = option("", "built-in model name, checkpoint directory or hf:NAME_OR_PATH; '' = the task's shipped "
                            "model")
    data: str = option("", "examples from this file (training prompts for train-policy); '' = freshly generated ones")
    difficulty: list[int] = option([], "difficulty of generated examples, the task's knob (sudoku: clues, "
                                       "arithmetic: digits); several spread the examples over them; empty = the "
                                       "task's default", low=0, aliases=("--clues",))
    seed: int = option(0, "random seed of generated examples, sampling and training", low=0)
    sampling: SamplingConfig = option(default_factory=SamplingConfig, help="sampling (LLaDA generate() names)")
    model_options: dict = option({}, "options forwarded to unmask.models.load_model (the Hugging Face flags)")
    task_options: dict = option({}, "options forwarded to unmask.tasks.get_task (--task-option KEY=VALUE)")

    @property
    def difficulties(self) -> list[int | None]:
        """The difficulties to generate examples at (``[None]``: the task's default)."""
        return list(self.difficulty) or [None]


@dataclass
class ExamplesConfig(Config):
    """How many examples ``eval``, ``frontier`` and ``show-order`` decode, and in what batches."""

    num: int = option(200, "number of generated examples (without --data)", low=1)
    limit: int | None = option(None, "use only the first N examples (of --data or the generated ones); none = all",
                               low=1)
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
        raise ValueError(f"{option} {path}: not a text data file (byte {e.start} is not UTF-8); give a "
                         f"{task.name} data file") from None
