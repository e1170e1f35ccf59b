"""Metric logging: one CSV row per logged step, mirrored to TensorBoard when it is installed."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Appends rows of scalars to ``<dir>/metrics.csv`` (and ``<dir>/tb`` if tensorboard is available)."""

    def __init__(self, directory: str | Path, resume_step: int | None = None) -> None:
        """``resume_step``: continue an existing log, dropping rows logged after that step."""
        self.path = Path(directory) / "metrics.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fields: list[str] | None = None
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="") as f:
                rows = list(csv.reader(f))
            self.fields = rows[0] if rows else None
            kept = [r for r in rows[1:] if int(float(r[0])) <= resume_step]
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerows(rows[:1] + kept)
        elif self.path.exists():
            self.path.unlink()
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(directory) / "tb"))
        except ImportError:
            pass

    def log(self, row: dict[str, Any]) -> None:
        new = [k for k in row if k not in (self.fields or [])]
        if new:  # a column appears: rewrite the file with the wider header
            old_rows = []
            if self.fields is not None:
                with open(self.path, newline="") as f:
                    old_rows = list(csv.DictReader(f))
            self.fields = (self.fields or []) + new
            with open(self.path, "w", newline="") as f:
                w = csv.DictWriter(f, self.fields)
                w.writeheader()
                w.writerows(old_rows)
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([row.get(k, "") for k in self.fields])
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
