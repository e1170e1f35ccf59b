"""Typed task options: a task's keyword options (``--task-option KEY=VALUE``, a recipe's ``task_options``,
``get_task(name, **options)``) as a :class:`unmask.core.config.Config` class.

The class is read off the task constructor's signature: one field per parameter with a default (its name, type and
default), its help text from the task class's ``OPTIONS``. So a value of the wrong type or an unknown key is one
:class:`unmask.core.config.ConfigError` naming the option and its valid values before any work, the defaults live
in one place (the constructor), and ``docs/tasks.md`` lists every option (generated). Ranges and choices are the
constructor's own checks, with the same one-line errors.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing

from unmask.core.config import Config, option

if typing.TYPE_CHECKING:
    from unmask.tasks.base import Task


def task_options(task: str, cls: type[Task] | None = None) -> type[Config]:
    """The Config class of ``task``'s options: one field per keyword parameter (with a default) of
    ``cls.__init__``, help text from ``cls.OPTIONS``; no field without ``cls`` (a task that takes no options)."""
    params, hints, helps = [], {}, {}
    if cls is not None:
        params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.default is not p.empty]
        hints, helps = typing.get_type_hints(cls.__init__), cls.OPTIONS
        undocumented = [p.name for p in params if p.name not in helps]
        if undocumented:
            raise TypeError(f"{cls.__name__}.OPTIONS has no help text for {', '.join(undocumented)}")
    fields = [(p.name, hints[p.name], option(p.default, helps[p.name], flag=f"--task-option {p.name}")) for p in params]
    name = "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]", task) if part) + "Options"
    options = dataclasses.make_dataclass(name, fields, bases=(Config,))
    options.__module__ = __name__
    options.__doc__ = f"The options of task {task} (`--task-option KEY=VALUE`; a recipe's `task_options`)."
    return options
