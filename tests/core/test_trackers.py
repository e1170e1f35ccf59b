"""``--report-to tensorboard|wandb|none``: metrics.csv always, the trackers on request (wandb offline)."""

from __future__ import annotations

import csv
import sys

import pytest

from unmask.cli.main import main
from unmask.core.tracking import MetricsLogger, check_report_to

ROWS = [{"step": 1, "loss": 2.5, "masked_acc": 0.25}, {"step": 2, "loss": 1.5, "masked_acc": 0.5}]


def test_report_to_names():
    assert check_report_to("none") == [] and check_report_to(None) == []
    assert check_report_to("tensorboard,wandb") == ["tensorboard", "wandb"]
    with pytest.raises(ValueError, match="unknown --report-to tb; valid: tensorboard, wandb, none"):
        check_report_to("tb")


def test_none_writes_only_the_csv(tmp_path):
    logger = MetricsLogger(tmp_path, report_to="none")
    for row in ROWS:
        logger.log(row)
    logger.close()
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]
    with open(tmp_path / "metrics.csv", newline="") as f:
        assert [float(r["loss"]) for r in csv.DictReader(f)] == [2.5, 1.5]


def test_tensorboard_gets_every_scalar(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    logger = MetricsLogger(tmp_path, report_to="tensorboard")
    for row in ROWS:
        logger.log(row)
    logger.close()
    events = event_accumulator.EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["loss", "masked_acc"]
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(1, 2.5), (2, 1.5)]


@pytest.mark.slow
def test_wandb_offline_run_resumes_the_same_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = MetricsLogger(tmp_path, report_to="wandb", run_name="carry", config={"lr": 0.1})
    logger.log(ROWS[0])
    logger.close()
    run_id = (tmp_path / "wandb-run-id").read_text()
    logger = MetricsLogger(tmp_path, resume_step=1, report_to="wandb")
    logger.log(ROWS[1])
    logger.close()
    assert (tmp_path / "wandb-run-id").read_text() == run_id
    runs = list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 2 and all(list(r.glob("*.wandb")) for r in runs)


def test_a_missing_tracker_names_its_pip_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(
        ValueError, match=r"--report-to wandb needs the optional dependency wandb: pip install 'unmask\[wandb\]'"
    ):
        MetricsLogger(tmp_path, report_to="wandb")


@pytest.mark.slow
def test_train_mdm_reports_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    code = main(
        [
            "train-mdm",
            "--task",
            "sudoku4",
            "--max-steps",
            "2",
            "--n-layer",
            "1",
            "--n-head",
            "2",
            "--n-embd",
            "16",
            "--batch-size",
            "4",
            "--logging-steps",
            "1",
            "--report-to",
            "tensorboard",
            "--output-dir",
            str(out),
        ]
    )
    assert code == 0
    assert list((out / "tb").glob("events.out.tfevents.*"))
    code = main(
        [
            "train-mdm",
            "--task",
            "sudoku4",
            "--max-steps",
            "2",
            "--n-layer",
            "1",
            "--n-head",
            "2",
            "--n-embd",
            "16",
            "--batch-size",
            "4",
            "--logging-steps",
            "1",
            "--report-to",
            "tb",
            "--output-dir",
            str(tmp_path / "x"),
        ]
    )
    assert code == 2
