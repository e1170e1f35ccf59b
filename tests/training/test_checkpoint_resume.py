"""Resume semantics of both trainers and their commands (issue 18 items 3, 5 and 9): the step-0 checkpoint is
not re-run, a fresh run does not overwrite an earlier one, --max-steps 0 saves, SIGINT names the --resume command,
and a cut metrics row is dropped."""

import shlex

import pytest
import torch
from kill_harness import compare_runs, metrics_rows, policy_config

import unmask.training.mdm as tm
import unmask.training.pretrain as pretrain
from unmask.api import train_policy
from unmask.cli.main import main
from unmask.core.tracking import MetricsLogger
from unmask.models import load_model
from unmask.training.grpo import GRPOTrainer

COUPLING = dict(coupling_rounds=2, coupling_prompts=4, coupling_epochs=1)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_resume_from_the_step_0_checkpoint_does_not_run_step_0_again(
    tmp_path, stop_after_save, monkeypatch, one_thread
):
    """With a coupling, step 0 pre-trains it: doing that again on resume made the run inexact (issue 18 item 3)."""

    def run(resume: bool = False):
        return train_policy(policy_config(tmp_path / "run", max_steps=1, **COUPLING), resume=resume, progress=False)

    run()
    (tmp_path / "run").rename(tmp_path / "ref")
    stop_after_save(run, 0)
    calls = []
    real = pretrain.pretrain_coupling
    monkeypatch.setattr(pretrain, "pretrain_coupling", lambda *a, **k: calls.append(1) or real(*a, **k))
    run(resume=True)
    assert calls == []
    assert [r["step"] for r in metrics_rows(tmp_path / "run")] == ["0", "1"]
    compare_runs(tmp_path / "ref", tmp_path / "run")


def test_a_fresh_run_refuses_an_existing_run_directory(tmp_path, one_thread):
    GRPOTrainer.from_config(policy_config(tmp_path, max_steps=0), progress=False).train()
    with pytest.raises(ValueError, match="already holds a training run .*pass --resume"):
        GRPOTrainer.from_config(policy_config(tmp_path, max_steps=0), progress=False).train()


MDM = [
    "--task",
    "sudoku4",
    "--n-layer",
    "1",
    "--n-head",
    "2",
    "--n-embd",
    "16",
    "--batch-size",
    "8",
    "--warmup-steps",
    "1",
    "--save-steps",
    "2",
    "--logging-steps",
    "1",
]


def test_train_mdm_with_zero_steps_saves_the_initial_model(tmp_path, capsys, one_thread):
    assert main(["train-mdm", *MDM, "--max-steps", "0", "--output-dir", str(tmp_path / "m")]) == 0
    assert f"saved {tmp_path / 'm' / 'last'}" in capsys.readouterr().out
    assert load_model(str(tmp_path / "m")).num_parameters() > 0  # the run directory loads as its last checkpoint
    assert main(["train-mdm", *MDM, "--max-steps", "0", "--output-dir", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "already holds a training run" in err and "--resume" in err and "--output-dir" in err
    assert "Traceback" not in err


def test_sigint_tells_the_exact_resume_command_and_it_resumes_exactly(tmp_path, capsys, monkeypatch, one_thread):
    argv = ["train-mdm", *MDM, "--max-steps", "4", "--output-dir", str(tmp_path / "run")]
    assert main(argv) == 0
    (tmp_path / "run").rename(tmp_path / "ref")
    capsys.readouterr()
    real, calls = tm.masked_diffusion_loss, []

    def interrupt_in_step_3(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(tm, "masked_diffusion_loss", interrupt_in_step_3)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert f"continue from the checkpoint in {tmp_path / 'run' / 'last'} with:" in err
    command = shlex.split(err.strip().splitlines()[-1])
    assert command == ["unmask", *argv, "--resume"]
    monkeypatch.setattr(tm, "masked_diffusion_loss", real)
    assert main(command[1:]) == 0
    compare_runs(tmp_path / "ref", tmp_path / "run")


def test_sigint_before_the_first_checkpoint_says_there_is_nothing_to_resume(tmp_path, capsys, monkeypatch):
    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(tm, "save_checkpoint", interrupt)
    assert main(["train-mdm", *MDM, "--max-steps", "1", "--output-dir", str(tmp_path / "run")]) == 130
    assert "nothing to resume, run the same command again" in capsys.readouterr().err


def test_resume_drops_metrics_rows_after_the_checkpoint_and_a_cut_last_row(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,loss,seconds\n1,0.5,1.0\n2,0.4,2.0\n3,0.3,3.0\n4,0.")
    MetricsLogger(tmp_path, resume_step=4).close()
    assert (tmp_path / "metrics.csv").read_text().splitlines() == [
        "step,loss,seconds",
        "1,0.5,1.0",
        "2,0.4,2.0",
        "3,0.3,3.0",
    ]
    MetricsLogger(tmp_path, resume_step=2).close()
    assert (tmp_path / "metrics.csv").read_text().splitlines()[-1] == "2,0.4,2.0"


def test_a_moved_run_resumes_by_a_relative_path_and_extends_its_max_steps(tmp_path, monkeypatch, one_thread):
    """The run directory is where the checkpoint is, whatever it is called now: a run trained for 1 step
    elsewhere, moved, and resumed through a relative path with --max-steps 2 equals a 2-step run."""
    train_policy(policy_config(tmp_path / "ref", max_steps=2), progress=False)
    train_policy(policy_config(tmp_path / "elsewhere" / "run", max_steps=1), progress=False)
    (tmp_path / "elsewhere" / "run").rename(tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    train_policy(policy_config("run", max_steps=2), resume=True, progress=False)
    for name in ("last/model.safetensors", "best/model.safetensors"):
        assert (tmp_path / "run" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
    assert metrics_rows(tmp_path / "run") == metrics_rows(tmp_path / "ref")


def test_resume_refuses_a_max_steps_below_the_checkpoint_and_warns_of_a_stretched_schedule(
    tmp_path, capsys, one_thread
):
    argv = ["train-mdm", *MDM, "--max-steps", "2", "--output-dir", str(tmp_path / "run")]
    assert main(argv) == 0
    assert main([*argv[:-4], "--max-steps", "1", "--output-dir", str(tmp_path / "run"), "--resume"]) == 2
    assert "the checkpoint is at step 2, past --max-steps 1; give --max-steps 2 or more" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="--max-steps 2 -> 3 changes the learning rate schedule from step 2 on"):
        assert main([*argv[:-4], "--max-steps", "3", "--output-dir", str(tmp_path / "run"), "--resume"]) == 0
    assert [r["step"] for r in metrics_rows(tmp_path / "run")] == ["1", "2", "3"]
