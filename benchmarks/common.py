"""What the benchmark scripts share: the provenance a result file records (``run_info``: command, git commit, date,
machine), the command line of a run, and the ``--task-option`` flag."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]


def add_task_option(parser: argparse.ArgumentParser) -> None:
    """``--task-option KEY=VALUE`` (repeatable), as in the ``unmask`` commands."""
    parser.add_argument(
        "--task-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a task constructor option, e.g. propagate=0.8 for arithmetic (repeatable)",
    )


def command_line(script: str, args: argparse.Namespace) -> str:
    """``script`` followed by the flags set in ``args`` (flags as given; lists as repeated flags; values quoted
    for the shell where they need it)."""
    parts = [script]
    for key, value in vars(args).items():
        flag = f"--{key.replace('_', '-')}"
        if value is True:
            parts.append(flag)
        elif isinstance(value, list):
            parts += [f"{flag} {shlex.quote(str(v))}" for v in value]
        elif value:
            parts.append(f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts)


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def machine() -> dict[str, Any]:
    """The machine a run ran on: OS and CPU architecture, CPU count, torch version and threads, the GPU if any."""
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def run_info(command: str) -> dict[str, Any]:
    """The provenance of one benchmark run, to store in its results JSON: ``command`` (as given), the git
    ``commit`` of the checkout (``dirty``: it had uncommitted changes), the UTC ``date`` and the ``machine``.

    A results JSON keeps a list of them under ``"provenance"``: ``[run_info(cmd)]`` for a script that writes one
    run, ``previous["provenance"] + [run_info(cmd)]`` for one that appends rows to an existing file.
    """
    return {
        "command": command,
        "commit": _git("rev-parse", "HEAD") or None,
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
    }


def start_results(out: Path, append: bool, command: str) -> tuple[list[dict], list[dict]]:
    """The ``results`` rows and ``provenance`` a run writes to ``out``: an existing file's, extended (``append``),
    or new ones; the provenance gains this run's :func:`run_info`."""
    previous = json.loads(out.read_text()) if append and out.exists() else {}
    return previous.get("results", []), previous.get("provenance", []) + [run_info(command)]


def add_rows(rows: list[dict], new: list[dict], key: tuple[str, ...]) -> list[dict]:
    """``rows`` with ``new`` added, an earlier row with the same values of ``key`` (e.g. model, data, policy)
    replaced in place: re-measuring a policy with ``--append`` supersedes its rows, never duplicates them."""
    fresh = {tuple(r[k] for k in key): r for r in new}
    out = [fresh.pop(tuple(r[k] for k in key), r) for r in rows]
    return out + list(fresh.values())
