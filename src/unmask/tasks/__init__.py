"""Tasks: data, token layout, verifier and reward (see :class:`unmask.tasks.base.Task`)."""

from __future__ import annotations

from typing import Callable

from unmask.tasks.base import EncodedBatch, Scores, Task
from unmask.tasks.sudoku import SudokuExample, SudokuTask

TASKS: dict[str, Callable[[], Task]] = {
    "sudoku4": lambda: SudokuTask(box=2),
    "sudoku9": lambda: SudokuTask(box=3),
}


def get_task(name: str) -> Task:
    """The task registered under ``name``."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]()


__all__ = ["EncodedBatch", "Scores", "SudokuExample", "SudokuTask", "Task", "TASKS", "get_task"]
