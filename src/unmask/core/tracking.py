"""Metric logging: one CSV row per logged step (``<dir>/metrics.csv``, always), mirrored to the experiment
trackers of ``report_to`` (TRL's / transformers' ``report_to``: ``tensorboard``, ``wandb``, ``none`` or a
comma-separated list; default ``none`` as in TRL).

- ``tensorboard``: a ``SummaryWriter`` in ``<dir>/tb`` (``pip install 'unmask[tensorboard]'``).
- ``wandb``: a run in ``<dir>/wandb`` named after the output directory, with the run's config; project
  ``$WANDB_PROJECT`` (default ``unmask``); ``WANDB_MODE=offline`` logs without an account
  (``pip install 'unmask[wandb]'``). A resumed training continues the same run (its id is kept in
  ``<dir>/wandb-run-id``).

Progress bars (:func:`progress_bar`) are tqdm's on a terminal; piped to a file, they become plain lines, one per
update (at most one every :data:`LINE_INTERVAL` seconds), and ``TQDM_DISABLE=1`` (or ``unmask --quiet``) turns
them off.
"""

from __future__ import annotations

import csv
import os
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm import tqdm
from tqdm.auto import tqdm as terminal_tqdm

from unmask.core.checkpoint import atomic_write
from unmask.core.distributed import current
from unmask.core.extras import require

REPORT_TO = ("tensorboard", "wandb", "none")
LINE_INTERVAL = 10.0  # seconds between two progress lines in a log file


class LineProgress(tqdm):
    """tqdm writing each update as a plain line (no carriage returns, no cursor moves for nested bars): the
    progress of a run whose output goes to a file. A bar that stays (``leave``) ends on its final count."""

    shown, shown_at = -1, float("-inf")  # the count last written, and when

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        """One line, unless tqdm is clearing a bar (``msg == ""``), the count was written already, or the last
        line is under ``mininterval`` old (a refresh after ``set_postfix``); the final count is always written."""
        now = self._time()
        recent = now - self.shown_at < self.mininterval and self.n != self.total
        if msg == "" or self.n == self.shown or recent:
            return False
        self.shown, self.shown_at = self.n, now
        self.fp.write((msg or self.__str__()) + "\n")
        self.fp.flush()
        return True

    def close(self) -> None:
        if not self.disable and self.leave:
            self.shown_at = float("-inf")
            self.display()
        self.leave = False  # tqdm's own close then only clears, which writes nothing here
        super().close()


def progress_disabled() -> bool:
    """Whether ``TQDM_DISABLE`` (set by ``unmask --quiet``) turns progress bars off."""
    return os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")


@contextmanager
def quiet(enabled: bool = True) -> Iterator[None]:
    """No progress bars inside (``unmask --quiet``): ``TQDM_DISABLE`` set, as for every tqdm bar, then restored."""
    before = os.environ.get("TQDM_DISABLE")
    if enabled:
        os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = before


def progress_bar(iterable=None, disable: bool = False, **kwargs) -> tqdm:
    """A tqdm progress bar (the keyword arguments are tqdm's): redrawn on a terminal, plain lines in a log file,
    none with ``TQDM_DISABLE``."""
    if disable or progress_disabled():
        return tqdm(iterable, disable=True, **kwargs)
    if sys.stderr.isatty():
        return terminal_tqdm(iterable, dynamic_ncols=True, **kwargs)
    return LineProgress(iterable, mininterval=LINE_INTERVAL, **kwargs)


def check_report_to(report_to: str | Sequence[str] | None) -> list[str]:
    """The trackers ``report_to`` names (``"none"`` / None: none), or an error naming the valid ones."""
    names = [n.strip() for n in (report_to.split(",") if isinstance(report_to, str) else report_to or []) if n.strip()]
    unknown = [n for n in names if n not in REPORT_TO]
    if unknown:
        raise ValueError(f"unknown --report-to {', '.join(unknown)}; valid: {', '.join(REPORT_TO)} (or a comma list)")
    return [n for n in dict.fromkeys(names) if n != "none"]


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of a metrics row, ``step`` left out."""
    return {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class TensorBoardTracker:
    """Scalars to ``<dir>/tb`` with torch's ``SummaryWriter``."""

    def __init__(self, directory: Path, run_name: str, config: dict | None, resume: bool) -> None:
        tensorboard = require("torch.utils.tensorboard", "tensorboard", "--report-to tensorboard")
        self.writer = tensorboard.SummaryWriter(str(directory / "tb"))

    def log(self, row: dict[str, Any], step: int) -> None:
        for k, v in scalars(row).items():
            self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """A Weights & Biases run in ``<dir>/wandb``; a resumed training continues the run whose id it stored."""

    def __init__(self, directory: Path, run_name: str, config: dict | None, resume: bool) -> None:
        wandb = require("wandb", "wandb", "--report-to wandb")
        id_file = directory / "wandb-run-id"
        run_id = id_file.read_text().strip() if resume and id_file.is_file() else uuid.uuid4().hex[:8]
        (directory / "wandb").mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "unmask"),
            name=run_name,
            id=run_id,
            resume="allow",
            dir=str(directory),
            config=config or {},
        )
        atomic_write(id_file, lambda tmp: Path(tmp).write_text(run_id))

    def log(self, row: dict[str, Any], step: int) -> None:
        self.run.log(scalars(row), step=step)

    def close(self) -> None:
        self.run.finish()


TRACKERS = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker}


class MetricsLogger:
    """Appends rows of scalars to ``<dir>/metrics.csv`` and sends them to the ``report_to`` trackers."""

    def __init__(
        self,
        directory: str | Path,
        resume_step: int | None = None,
        report_to: str | Sequence[str] | None = "none",
        run_name: str | None = None,
        config: dict | None = None,
    ) -> None:
        """``resume_step``: continue an existing log, dropping rows logged after that step; ``run_name`` and
        ``config`` (the run's settings) go to the trackers. Under several processes only rank 0 writes; the
        others' loggers do nothing."""
        names = check_report_to(report_to)
        self.enabled = current().main
        self.trackers: list = []
        if not self.enabled:
            return
        directory = Path(directory)
        self.path = directory / "metrics.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fields: list[str] | None = None
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="") as f:
                rows = list(csv.reader(f))
            self.fields = rows[0] if rows else None
            # rows up to the checkpoint's step; a kill mid-append can leave a cut last row (fewer fields)
            kept = [r for r in rows[1:] if len(r) == len(self.fields) and int(float(r[0])) <= resume_step]
            self._rewrite(rows[:1] + kept)
        elif self.path.exists():
            self.path.unlink()
        self.trackers = [
            TRACKERS[n](directory, run_name or directory.name, config, resume_step is not None) for n in names
        ]

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        new = [k for k in row if k not in (self.fields or [])]
        if new:  # a column appears: rewrite the file with the wider header
            old_rows = []
            if self.fields is not None:
                with open(self.path, newline="") as f:
                    old_rows = list(csv.reader(f))[1:]
            self.fields = (self.fields or []) + new
            self._rewrite([self.fields] + [r + [""] * len(new) for r in old_rows])
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([row.get(k, "") for k in self.fields])
        for tracker in self.trackers:
            tracker.log(row, int(row["step"]))

    def _rewrite(self, rows: list[list[str]]) -> None:
        """Replace the file atomically: a kill leaves the old or the new file, never a cut one."""

        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as f:
                csv.writer(f).writerows(rows)

        atomic_write(self.path, write)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
