"""Several processes (unmask.core.distributed): shards, and two gloo processes giving the one-process results.

The slow tests launch real process groups on the CPU: ``torchrun --nproc_per_node 2`` for ``unmask eval`` and
``unmask train-policy`` (each asserting the world size it ran with), two spawned processes for a rank that fails,
and ``accelerate launch`` on the CPU, which starts one process and is refused.
"""

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from unmask.cli.main import main as cli
from unmask.core.checkpoint import (
    LAST,
    MANIFEST,
    PREVIOUS,
    WEIGHTS,
    load_json,
    load_tensors,
    resumable_checkpoint,
    save_checkpoint,
)
from unmask.core.distributed import Distributed

ACCELERATE = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")


def launch(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """``torchrun`` two gloo processes of ``python -m unmask ARGS`` (one thread each); rank 0 must say that two
    processes ran."""
    pytest.importorskip("accelerate")
    port = str(29400 + os.getpid() % 500)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        port,
        "-m",
        "unmask",
        "--",
        *args,
    ]
    done = subprocess.run(
        cmd, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "unmask: 2 processes (gloo, CPU)" in done.stderr
    return done


@pytest.fixture
def mdm_dir(tmp_path, tiny_sudoku4_model):
    """The untrained tiny MDM as a checkpoint: its answers vary with the random draws, so results do."""
    out = tmp_path / "tiny-mdm"
    save_checkpoint(out, tiny_sudoku4_model, {"name": "tiny", "model": tiny_sudoku4_model.config.to_dict()})
    return str(out)


@pytest.mark.parametrize("n", range(2, 12))
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_hold_every_item_once_in_order(n, world):
    if n < world:
        with pytest.raises(ValueError, match=f"cannot be shared by {world} processes"):
            Distributed(0, world).shard(list(range(n)))
        return
    shards = [list(Distributed(r, world).shard(list(range(n)))) for r in range(world)]
    assert sum(shards, []) == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_prompts_that_do_not_split_evenly_are_refused():
    with pytest.raises(
        ValueError,
        match=r"--prompts-per-step 6 does not split evenly over 4 processes.*use "
        r"--prompts-per-step 4 or 8, or launch 1, 2, 3, 6 processes",
    ):
        Distributed(1, 4).shard_groups(list(range(6)))
    assert list(Distributed(1, 3).shard_groups(list(range(6)))) == [2, 3]


def test_one_process_is_the_identity():
    one = Distributed()
    x = torch.arange(5)
    assert one.gather(x) is x and torch.equal(one.local(x), x) and one.mean({"a": 1.5}) == {"a": 1.5}
    positions, total = one.step_positions(torch.tensor([3, 0, 2]))
    assert positions.tolist() == [0, 1, 2, 3, 4] and total == 5
    assert one.any(True) and not one.any(False) and not one.all_finite(torch.tensor(float("nan")))


@pytest.mark.slow
def test_eval_on_two_processes_writes_the_one_process_json(tmp_path, mdm_dir):
    """Deterministic and stochastic policies, sampled tokens, 7 examples over 2 processes (4 + 3), and a batch
    size that differs from the shards: the JSON is the one-process JSON but for wall times."""
    args = [
        "eval",
        "--task",
        "sudoku4",
        "--model",
        mdm_dir,
        "--num",
        "7",
        "--difficulty",
        "6",
        "--temperature",
        "1.0",
        "--policies",
        "confidence,random,topk_softmax,threshold:0.5",
        "--pass-at",
        "2",
    ]
    assert cli([*args, "--json", str(tmp_path / "one.json")]) == 0
    launch([*args, "--batch-size", "3", "--json", str(tmp_path / "two.json")], tmp_path)
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert (one.pop("processes"), two.pop("processes")) == (1, 2)
    for report in (one, two):
        for row in report["results"]:
            row.pop("seconds")
    assert len({r["cell_accuracy"] for r in one["results"]}) > 1  # the policies differ: the comparison can fail
    assert one == two


TRAIN = [
    "train-policy",
    "--task",
    "sudoku4",
    "--policy",
    "bernoulli",
    "--base-threshold",
    "none",
    "--temperature",
    "1.0",
    "--reward-form",
    "none",
    "--max-steps",
    "3",
    "--prompts-per-step",
    "4",
    "--num-generations",
    "4",
    "--eval-steps",
    "1",
    "--eval-size",
    "5",
    "--difficulty",
    "5",
    "--d-model",
    "16",
    "--minibatch-size",
    "24",
    "--learning-rate",
    "1e-2",
]


@pytest.mark.slow
def test_train_policy_on_two_processes_continues_a_one_process_run_exactly(tmp_path, mdm_dir, monkeypatch):
    """Resumed under another world size, two processes train on as one would: the same weights (up to the
    order of floating-point sums), metrics.csv written by rank 0 alone, one row per step."""
    from unmask.training.grpo import GRPOTrainer

    args = [*TRAIN, "--model", mdm_dir]
    assert cli([*args, "--output-dir", str(tmp_path / "one")]) == 0
    real_save = GRPOTrainer.save

    def save_then_stop(self):
        real_save(self)
        if self.step == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(GRPOTrainer, "save", save_then_stop)
    assert cli([*args, "--output-dir", str(tmp_path / "two")]) == 130  # stopped after step 1's checkpoint
    launch([*args, "--output-dir", str(tmp_path / "two"), "--resume"], tmp_path)
    one, two = (load_tensors(tmp_path / run / LAST / WEIGHTS) for run in ("one", "two"))
    before = load_tensors(tmp_path / "one" / (LAST + PREVIOUS) / WEIGHTS)  # step 2
    assert max((one[k] - before[k]).abs().max() for k in one) > 1e-3  # step 3 moved the weights
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=1e-4, rtol=0), k
    rows = [(tmp_path / run / "metrics.csv").read_text().splitlines() for run in ("one", "two")]
    assert [r.split(",")[0] for r in rows[1]] == ["step", "0", "1", "2", "3"] == [r.split(",")[0] for r in rows[0]]


def _failing_rank(rank: int, port: int, settings: dict) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    from unmask.training.grpo import GRPOConfig, GRPOTrainer

    trainer = GRPOTrainer.from_config(GRPOConfig.from_flat(settings), progress=False)
    if rank == 1:
        real_update = trainer.update

        def fail_in_step_3(buf):
            if trainer.step == 2:  # steps 1 and 2 are done and saved
                os._exit(3)  # as a kill or a lost node would: no goodbye to the other process
            return real_update(buf)

        trainer.update = fail_in_step_3
    trainer.train()


@pytest.mark.slow
def test_a_failing_rank_stops_the_other_with_a_message_and_a_whole_checkpoint(tmp_path, mdm_dir, capfd):
    """Rank 1 vanishes in step 3; rank 0 stops at its next collective. Minibatches of 2 stored steps also leave
    ranks with none of a minibatch's steps in steps 1 and 2 (they join the all-reduce at weight 0)."""
    settings = dict(
        task="sudoku4",
        model=mdm_dir,
        output_dir=str(tmp_path / "run"),
        policy="bernoulli",
        max_steps=4,
        prompts_per_step=2,
        num_generations=2,
        eval_steps=1,
        eval_size=2,
        difficulty=[5],
        d_model=16,
        minibatch_size=2,
        base_threshold=None,
        temperature=1.0,
    )
    port = 29900 + os.getpid() % 90
    spawn = multiprocessing.get_context("spawn")
    ranks = [spawn.Process(target=_failing_rank, args=(r, port, settings)) for r in (0, 1)]
    for p in ranks:
        p.start()
    for p in ranks:
        p.join(timeout=240)
    assert [p.exitcode for p in ranks] == [1, 3], "rank 0 must stop (not hang) once rank 1 is gone"
    err = capfd.readouterr().err
    assert "unmask: 2 processes (gloo, CPU)" in err and "another process of this run stopped" in err
    last = resumable_checkpoint(tmp_path / "run")  # the last save is whole: --resume continues from it
    assert last.name == LAST and load_json(last / MANIFEST)["step"] == 2


@pytest.mark.slow
def test_accelerate_launch_on_the_cpu_is_refused_not_run_as_one_process(tmp_path):
    """accelerate 1.x's CPU launch starts one process without WORLD_SIZE: one error naming torchrun."""
    if ACCELERATE is None:
        pytest.skip("accelerate is not installed (pip install -e '.[distributed]')")
    cmd = [
        ACCELERATE,
        "launch",
        "--cpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "unmask",
        "eval",
        "--task",
        "sudoku4",
        "--num",
        "2",
    ]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0  # (accelerate adds its own traceback of the exit status)
    assert (
        "unmask eval: error: asked for several processes through accelerate launch, but this process was started "
        "alone" in done.stderr
    )
    assert "torchrun --nproc_per_node N -m unmask -- COMMAND" in done.stderr


def test_an_mpirun_world_without_world_size_is_refused(monkeypatch, capsys):
    import unmask.core.distributed as distributed

    monkeypatch.setattr(distributed, "_CURRENT", None)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    assert cli(["eval", "--task", "sudoku4", "--num", "2"]) == 2
    assert "asked for 4 processes through mpirun, but this process was started alone" in capsys.readouterr().err
