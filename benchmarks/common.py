"""What the benchmark scripts share: the command line a result file records, and the ``--task-option`` flag."""

from __future__ import annotations

import argparse


def add_task_option(parser: argparse.ArgumentParser) -> None:
    """``--task-option KEY=VALUE`` (repeatable), as in the ``unmask`` commands."""
    parser.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a task constructor option, e.g. propagate=0.8 for arithmetic (repeatable)")


def command_line(script: str, args: argparse.Namespace) -> str:
    """``script`` followed by the flags set in ``args`` (flags as given; lists as repeated flags)."""
    parts = [script]
    for key, value in vars(args).items():
        flag = f"--{key.replace('_', '-')}"
        if value is True:
            parts.append(flag)
        elif isinstance(value, list):
            parts += [f"{flag} {v}" for v in value]
        elif value:
            parts.append(f"{flag} {value}")
    return " ".join(parts)
