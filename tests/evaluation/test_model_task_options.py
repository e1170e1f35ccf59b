"""Settings the model already knows: a checkpoint's recorded task options are used unless the user gives others."""

from __future__ import annotations

import pytest

from unmask.api import resolve_task
from unmask.cli.main import main
from unmask.models import recorded_task_options


def test_a_checkpoint_records_its_task_options():
    assert recorded_task_options("arithmetic-carry", "arithmetic") == {"max_digits": 16, "propagate": 0.8}
    assert recorded_task_options("arithmetic", "arithmetic") == {}  # trained with the defaults
    assert recorded_task_options("arithmetic-carry", "sudoku9") == {}  # another task: nothing applies
    assert recorded_task_options("hf:some/model", "gsm8k") == {}


def test_given_options_win_over_recorded_ones():
    task, model = resolve_task("arithmetic", "arithmetic-carry", {"propagate": 0.0})
    assert model == "arithmetic-carry" and (task.max_digits, task.propagate) == (16, 0.0)
    task, model = resolve_task("arithmetic", None)
    assert model == "arithmetic" and task.max_digits == 8


@pytest.mark.parametrize(
    "command",
    [
        ["eval", "--policies", "confidence,threshold:0.9"],
        pytest.param(["show-order", "--policy", "confidence", "--out", "{tmp}/order.png"], marks=pytest.mark.slow),
    ],
)
def test_eval_and_show_order_work_out_of_the_box(command, tmp_path, capsys):
    args = [a.format(tmp=tmp_path) for a in command]
    code = main([*args, "--task", "arithmetic", "--model", "arithmetic-carry", "--num", "8", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    if command[0] == "eval":
        assert "confidence " in capsys.readouterr().out


def test_options_the_model_was_not_trained_with_are_refused():
    code = main(
        [
            "eval",
            "--task",
            "arithmetic",
            "--model",
            "arithmetic-carry",
            "--task-option",
            "max_digits=8",
            "--num",
            "2",
            "--policies",
            "confidence",
            "--device",
            "cpu",
        ]
    )
    assert code == 2


@pytest.mark.slow
def test_train_policy_reads_the_model_options():
    from unmask.training.grpo import GRPOConfig, GRPOTrainer

    config = GRPOConfig.from_flat(task="arithmetic", model="arithmetic-carry", max_steps=0, eval_size=2)
    trainer = GRPOTrainer.from_config(config, progress=False)
    assert (trainer.task.max_digits, trainer.task.propagate) == (16, 0.8)
