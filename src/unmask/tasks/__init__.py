"""Tasks: data, token layout, verifier and reward (see :class:`unmask.tasks.base.Task`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

from unmask.core.config import Config, ConfigError
from unmask.tasks.arithmetic import ArithmeticExample, ArithmeticTask
from unmask.tasks.base import EncodedBatch, Scores, Task
from unmask.tasks.math import MathExample, MathTask, gsm8k, math500
from unmask.tasks.options import task_options
from unmask.tasks.sudoku import SudokuExample, SudokuTask
from unmask.tasks.zebra import ZebraExample, ZebraTask


@dataclass(frozen=True)
class Registered:
    """A task of the registry: what builds it from its options, and their typed class (:mod:`unmask.tasks.options`)."""

    build: Callable[..., Task]
    options: type[Config]


TASKS: dict[str, Registered] = {
    "sudoku4": Registered(lambda: SudokuTask(box=2), task_options("sudoku4")),
    "sudoku9": Registered(lambda: SudokuTask(box=3), task_options("sudoku9")),
    "gsm8k": Registered(gsm8k, task_options("gsm8k", MathTask)),
    "math500": Registered(math500, task_options("math500", MathTask)),
    "arithmetic": Registered(ArithmeticTask, task_options("arithmetic", ArithmeticTask)),
    "zebra": Registered(ZebraTask, task_options("zebra", ZebraTask)),
}


def get_task(name: str, **options) -> Task:
    """The task registered under ``name``, built with ``options`` (e.g. ``gen_length`` for math tasks), each
    checked against the task's typed options first (one error naming the option and its valid values)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}")
    task = TASKS[name]
    known = [f.name for f in fields(task.options)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        valid = f"its options: {', '.join(known)}" if known else "it takes none"
        raise ConfigError(f"task {name} has no option {', '.join(map(repr, unknown))}; {valid}")
    checked = task.options.from_dict(options, source=f"task {name}")
    return task.build(**{key: getattr(checked, key) for key in options})


__all__ = [
    "ArithmeticExample",
    "ArithmeticTask",
    "EncodedBatch",
    "MathExample",
    "MathTask",
    "Registered",
    "Scores",
    "SudokuExample",
    "SudokuTask",
    "Task",
    "TASKS",
    "ZebraExample",
    "ZebraTask",
    "get_task",
]
