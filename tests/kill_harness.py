"""Killing the trainers and checking that they resume bit-exactly (tests/test_kill_resume.py and
benchmarks/kill_resume.py share this).

Two kinds of kill:
- at a file boundary, in-process: :func:`kill_at` raises :class:`Killed` just before the n-th file operation
  (a checkpoint file written, a rename, a directory deleted) under the run directory. ``Killed`` is a
  BaseException that no handler of the save catches, so the disk is left exactly as a SIGKILL at that
  instant leaves it;
- at a random instant: :func:`run_with_kills` runs the trainer in a child process (forked from a
  forkserver that has torch imported, so a child starts in milliseconds) and sends it a real SIGKILL.
After a kill the run is recovered as a user would: ``--resume`` when the run directory holds a checkpoint,
else the same command again. :func:`compare_runs` then asserts that the recovered run equals an
uninterrupted one: every file of ``last/`` and ``best/`` byte for byte, and metrics.csv row for row (all
columns but the wall-clock ``seconds``).
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import random
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import unmask.core.checkpoint as ck
from unmask.core.checkpoint import LAST, has_checkpoint

KINDS = ("mdm", "policy")


def mdm_config(out: Path, **settings):
    from unmask.training.mdm import MDMTrainConfig

    return MDMTrainConfig(
        **{
            "task": "sudoku4",
            "output_dir": str(out),
            "n_layer": 1,
            "n_head": 2,
            "n_embd": 16,
            "max_steps": 4,
            "batch_size": 8,
            "save_steps": 2,
            "logging_steps": 1,
            "warmup_steps": 2,
            **settings,
        }
    )


def policy_config(out: Path, **settings):
    from unmask.training.grpo import GRPOConfig

    return GRPOConfig.from_flat(
        {
            "task": "sudoku4",
            "model": "sudoku4",
            "output_dir": str(out),
            "policy": "bernoulli",
            "max_steps": 2,
            "prompts_per_step": 2,
            "num_generations": 3,
            "eval_steps": 1,
            "eval_size": 2,
            "difficulty": [6],
            "d_model": 8,
            "minibatch_size": 64,
            "learning_rate": 1e-2,
            **settings,
        }
    )


def train(kind: str, out: Path, resume: bool, **settings) -> None:
    """One run of ``train-mdm`` / ``train-policy`` (the Python API the commands call); ``settings`` override
    the tiny run's."""
    if kind == "mdm":
        from unmask.training.mdm import train_mdm

        train_mdm(mdm_config(out, **settings), resume=resume, progress=False)
    else:
        from unmask.api import train_policy

        train_policy(policy_config(out, **settings), resume=resume, progress=False)


def recover(kind: str, out: Path, **settings) -> None:
    """What a user does after a kill: resume when there is a checkpoint, else start again."""
    train(kind, out, resume=has_checkpoint(out), **settings)


class Killed(BaseException):
    """A simulated SIGKILL (save_checkpoint cleans up after Exception and KeyboardInterrupt only)."""


@contextmanager
def kill_at(n: int | None, root: Path) -> Iterator[list[str]]:
    """Raise :class:`Killed` just before the ``n``-th file operation under ``root`` (None: count only);
    yields the list of operations done so far."""
    done: list[str] = []

    def wrap(name, real):
        def op(path, *args, **kwargs):
            if Path(path).resolve().is_relative_to(root.resolve()):
                if len(done) + 1 == n:
                    raise Killed(f"killed before {name} {path}")
                done.append(f"{name} {Path(path).relative_to(root)}")
            return real(path, *args, **kwargs)

        return op

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ck, "_write_bytes", wrap("write", ck._write_bytes))
        patch.setattr(os, "replace", wrap("rename", os.replace))
        patch.setattr(shutil, "rmtree", wrap("delete", shutil.rmtree))
        patch.setattr(os, "fsync", lambda fd: None)  # a SIGKILL keeps the page cache: flushing changes nothing here
        yield done


def metrics_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def stale_staging(run: Path) -> list[str]:
    return sorted(p.name for p in run.glob(".*.tmp") if p.is_dir())


def compare_runs(reference: Path, run: Path) -> None:
    """``run`` (killed and recovered) equals ``reference`` (uninterrupted) bit for bit."""
    for name in (LAST, "best"):
        if (reference / name).is_dir():
            files = sorted(p.name for p in (reference / name).iterdir())
            assert sorted(p.name for p in (run / name).iterdir()) == files, name
            for f in files:
                assert (run / name / f).read_bytes() == (reference / name / f).read_bytes(), f"{name}/{f} differs"
    assert metrics_rows(run) == metrics_rows(reference)
    assert stale_staging(run) == []


# ----- real SIGKILLs of child processes -----
_CONTEXT: multiprocessing.context.BaseContext | None = None


def _context() -> multiprocessing.context.BaseContext:
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(
            ["torch", "torch._dynamo", "unmask.training.grpo", "unmask.training.mdm", "kill_harness"]
        )
    return _CONTEXT


def _child(kind: str, out: str, resume: bool, settings: dict) -> None:
    import torch

    torch.set_num_threads(1)  # every process of one comparison computes with the same thread count
    train(kind, Path(out), resume, **settings)


def run_child(
    kind: str, out: Path, resume: bool, kill_after: float | None = None, settings: dict | None = None
) -> bool:
    """Run one training process; SIGKILL it after ``kill_after`` seconds. True when it was killed."""
    p = _context().Process(target=_child, args=(kind, str(out), resume, settings or {}))
    p.start()
    p.join(kill_after)
    if p.is_alive():
        p.kill()
        p.join()
        return True
    assert p.exitcode == 0, f"{kind} training exited with {p.exitcode}"
    return False


def timed_reference(kind: str, out: Path, settings: dict | None = None) -> float:
    """An uninterrupted run in a child process; its wall time (the forkserver started beforehand)."""
    warm = _context().Process(target=time.sleep, args=(0,))
    warm.start()
    warm.join()
    t0 = time.monotonic()
    run_child(kind, out, resume=False, settings=settings)
    return time.monotonic() - t0


def run_with_kills(
    kind: str, out: Path, kills: int, duration: float, rng: random.Random, settings: dict | None = None
) -> dict[str, int]:
    """Kill the run at ``kills`` random instants (each in [0, duration) after a process starts), recovering after
    each, then let it finish. Counts the kills and those that landed inside a checkpoint save."""
    done = inside = 0
    while done < kills:
        killed = run_child(kind, out, has_checkpoint(out), rng.uniform(0, duration), settings)
        if not killed:
            return {"kills": done, "inside_save": inside}
        done += 1
        last = out / LAST
        inside += bool(stale_staging(out)) or (not last.exists() and last.with_name(LAST + ck.PREVIOUS).exists())
    run_child(kind, out, has_checkpoint(out), settings=settings)
    return {"kills": done, "inside_save": inside}
