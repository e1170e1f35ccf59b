"""Typed task options (unmask.tasks.options): read off each task constructor, checked before the task is built."""

from __future__ import annotations

import inspect
from dataclasses import MISSING, fields

import pytest

from unmask.core.config import ConfigError
from unmask.tasks import TASKS, ArithmeticTask, MathTask, ZebraTask, get_task
from unmask.tasks.base import Task
from unmask.tasks.options import task_options


@pytest.mark.parametrize("cls", [ArithmeticTask, ZebraTask, MathTask])
def test_the_options_are_the_constructors_keyword_parameters_with_their_defaults(cls):
    options = task_options("x", cls)
    params = {
        p.name: p.default for p in inspect.signature(cls.__init__).parameters.values() if p.default is not p.empty
    }
    assert {f.name: f.default for f in fields(options)} == params
    assert all(f.metadata["help"] and f.default is not MISSING for f in fields(options))


def test_every_registered_task_has_its_options_class():
    assert {name: [f.name for f in fields(t.options)] for name, t in TASKS.items()} == {
        "sudoku4": [],
        "sudoku9": [],
        "gsm8k": ["gen_length", "chat", "template", "response_prefix", "reward", "bonus", "verify_timeout"],
        "math500": ["gen_length", "chat", "template", "response_prefix", "reward", "bonus", "verify_timeout"],
        "arithmetic": ["op", "max_digits", "multiplier_digits", "propagate"],
        "zebra": ["houses", "attributes"],
    }


@pytest.mark.parametrize(
    "name,options,message",
    [
        (
            "arithmetic",
            {"max_digits": "abc"},
            "task arithmetic: max_digits (--task-option max_digits) must be an integer, got 'abc'",
        ),
        ("arithmetic", {"max_digits": 4.5}, "max_digits (--task-option max_digits) must be an integer, got 4.5"),
        (
            "arithmetic",
            {"propagate": "high"},
            "propagate (--task-option propagate) must be a number or none, got 'high'",
        ),
        ("zebra", {"houses": True}, "houses (--task-option houses) must be an integer, got True"),
        ("gsm8k", {"chat": "yes"}, "chat (--task-option chat) must be true or false, got 'yes'"),
        (
            "arithmetic",
            {"digits": 4},
            "task arithmetic has no option 'digits'; its options: op, max_digits, multiplier_digits, propagate",
        ),
        ("sudoku9", {"box": 3}, "task sudoku9 has no option 'box'; it takes none"),
    ],
)
def test_a_bad_option_is_one_error_naming_it_and_its_valid_values(name, options, message):
    with pytest.raises(ConfigError) as e:
        get_task(name, **options)
    assert str(e.value) == message or message in str(e.value)
    assert "\n" not in str(e.value)


def test_good_options_reach_the_task_and_ranges_stay_the_constructors():
    task = get_task("arithmetic", max_digits=16, propagate=1)
    assert task.max_digits == 16 and task.propagate == 1.0 and isinstance(task.propagate, float)
    assert get_task("zebra", houses=5).houses == 5
    with pytest.raises(ValueError, match="propagate is a probability in \\[0, 1\\]"):
        get_task("arithmetic", propagate=2)


def test_a_task_option_without_help_text_is_refused_when_the_registry_is_built():
    class Bare(Task):
        OPTIONS = {"size": "how big"}

        def __init__(self, size: int = 3, depth: int = 2) -> None:
            pass

    with pytest.raises(TypeError, match="Bare.OPTIONS has no help text for depth"):
        task_options("bare", Bare)
