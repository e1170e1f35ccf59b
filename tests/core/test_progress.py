"""Progress output (unmask.core.tracking.progress_bar): plain lines in a log file, none with TQDM_DISABLE or --quiet;
and ``unmask --version``."""

import io
import os

import pytest

from unmask import __version__
from unmask.cli.main import main

EVAL = ["eval", "--task", "sudoku4", "--num", "4", "--batch-size", "2", "--policies", "confidence,random"]


@pytest.fixture
def no_tqdm_env(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)


def test_progress_in_a_log_file_is_plain_lines(capfd, no_tqdm_env):
    """Nested bars (policies, then each policy's batches) piped to a file: whole lines, no carriage returns and
    no cursor movements."""
    assert main(EVAL) == 0
    err = capfd.readouterr().err
    assert "\r" not in err and "\x1b[" not in err
    lines = err.splitlines()
    assert any(line.startswith("policies: 100%") and "2/2" in line for line in lines), err
    assert any(line.startswith("confidence:") for line in lines), err


@pytest.mark.parametrize("how", ["TQDM_DISABLE", "--quiet", "--quiet after the command"])
def test_tqdm_disable_and_quiet_leave_only_the_results(capfd, monkeypatch, no_tqdm_env, how):
    argv = list(EVAL)
    if how == "TQDM_DISABLE":
        monkeypatch.setenv("TQDM_DISABLE", "1")
    else:
        argv = ["--quiet", *argv] if how == "--quiet" else [*argv, "--quiet"]
    assert main(argv) == 0
    out, err = capfd.readouterr()
    assert err == "" and "confidence" in out  # the table is still printed
    assert os.environ.get("TQDM_DISABLE") == ("1" if how == "TQDM_DISABLE" else None)  # --quiet restores it


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"unmask {__version__}"


def test_line_progress_writes_at_most_one_line_per_interval_and_always_the_final_count(no_tqdm_env):
    from unmask.core.tracking import progress_bar

    buf = io.StringIO()
    with progress_bar(total=50, desc="steps", file=buf) as bar:
        for _ in range(50):
            bar.update(1)
            bar.set_postfix(loss=1.0)  # a refresh per step, as the trainers do
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("steps:   0%") and lines[1].startswith("steps: 100%"), lines
