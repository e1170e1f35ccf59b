"""Tasks: data, token layout, verifier and reward (see :class:`unmask.tasks.base.Task`)."""

from __future__ import annotations

from collections.abc import Callable

from unmask.tasks.arithmetic import ArithmeticExample, ArithmeticTask
from unmask.tasks.base import EncodedBatch, Scores, Task
from unmask.tasks.math import MathExample, MathTask, gsm8k, math500
from unmask.tasks.sudoku import SudokuExample, SudokuTask
from unmask.tasks.zebra import ZebraExample, ZebraTask

TASKS: dict[str, Callable[..., Task]] = {
    "sudoku4": lambda: SudokuTask(box=2),
    "sudoku9": lambda: SudokuTask(box=3),
    "gsm8k": gsm8k,
    "math500": math500,
    "arithmetic": ArithmeticTask,
    "zebra": ZebraTask,
}


def get_task(name: str, **options) -> Task:
    """The task registered under ``name``, built with ``options`` (e.g. ``gen_length`` for math tasks)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}")
    try:
        return TASKS[name](**options)
    except TypeError as e:
        raise ValueError(f"task {name} does not take the options {', '.join(sorted(options))} ({e})") from e


__all__ = [
    "ArithmeticExample",
    "ArithmeticTask",
    "EncodedBatch",
    "MathExample",
    "MathTask",
    "Scores",
    "SudokuExample",
    "SudokuTask",
    "Task",
    "TASKS",
    "ZebraExample",
    "ZebraTask",
    "get_task",
]
