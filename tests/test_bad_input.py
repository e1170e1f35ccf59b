"""Bad input gets one clear line (exit status 2), never a traceback and never a silent result (issue 18, items
4-6 and 9): each case runs ``unmask.cli.main`` on the tiny built-in models and fails before any real work."""

import json
import shutil
from pathlib import Path

import pytest

from unmask.cli import main

ASSETS = Path(__file__).resolve().parents[1] / "src" / "unmask" / "assets"
TINY_MDM = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--batch-size", "4", "--warmup-steps", "1"]
TINY_GRPO = ["--task", "sudoku4", "--max-steps", "1", "--prompts-per-step", "2", "--num-generations", "2",
             "--eval-size", "2", "--clues", "6", "--d-model", "16"]


def one_error(capsys, argv: list[str]) -> str:
    """Run the command; it must exit with status 2 and print exactly one error line and no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


@pytest.mark.parametrize("argv,message", [
    # raw tracebacks before (issue 18 item 4)
    (["train-policy", "--eval-steps", "0"], "eval_steps (--eval-steps) must be an integer >= 1, got 0"),
    (["train-policy", "--minibatch-size", "0"], "minibatch_size (--minibatch-size) must be an integer >= 1, got 0"),
    (["train-mdm", "--save-steps", "0"], "save_steps (--save-steps) must be an integer >= 1, got 0"),
    (["train-mdm", "--logging-steps", "0"], "logging_steps (--logging-steps) must be an integer >= 1, got 0"),
    (["train-policy", "--base-temperature", "0"], "base_temperature (--base-temperature) must be a number > 0 or none"),
    (["train-policy", "--d-model", "30"], "d_model (--d-model) 30 must be divisible by n_head (--n-head) 4"),
    (["train-mdm", "--batch-size", "0"], "batch_size (--batch-size) must be an integer >= 1, got 0"),
    (["train-mdm", "--n-embd", "-16"], "n_embd (--n-embd) must be an integer >= 1, got -16"),
    (["train-mdm", "--task", "gsm8k"], "task (--task) must be one of arithmetic, sudoku4, sudoku9, zebra, got 'gsm8k'"),
    # silent results before (item 5)
    (["eval", "--limit", "-1"], "limit (--limit) must be an integer >= 1 or none, got -1"),
    (["eval", "--limit", "0"], "limit (--limit) must be an integer >= 1 or none, got 0"),
    (["eval", "--task", "sudoku4", "--num", "2", "--pass-at", "0"], "pass_at (--pass-at) must be an integer >= 1"),
    (["train-policy", "--epsilon", "-0.2"], "epsilon (--epsilon) must be a number > 0, got -0.2"),
    (["train-policy", "--max-steps", "-1"], "max_steps (--max-steps) must be an integer >= 0, got -1"),
    (["train-policy", "--eval-size", "0"], "eval_size (--eval-size) must be an integer >= 1, got 0"),
    (["train-policy", "--num-generations", "1"], "num_generations (--num-generations) 1 with the group baseline"),
    # unclear messages before (item 6)
    (["eval", "--num", "0"], "num (--num) must be an integer >= 1, got 0"),
    (["eval", "--batch-size", "0"], "batch_size (--batch-size) must be an integer >= 1, got 0"),
    (["eval", "--task", "sudoku4", "--num", "2", "--policies", "threshold:abc"], "threshold"),
    (["eval", "--temperature", "nan"], "temperature (--temperature) must be a finite number, got nan"),
    (["eval", "--steps", "abc"], "steps (--steps) must be an integer >= 1 or none, got 'abc'"),
    (["eval", "--clues", "x"], "difficulty (--difficulty) must be a list of integers >= 0, got 'x'"),
    (["train-policy", "--alpha-range", "3,1", "--policy", "bernoulli"], "alpha_range (--alpha-range) must be LO,HI"),
    (["train-policy", "--policy", "bernoulli", "--stop-logit", "1"], "is a setting of --policy plackett-luce"),
    (["train-policy", "--policy", "maskgit"], "policy (--policy) must be one of upo, bernoulli, plackett-luce"),
    (["eval", "--bogus", "1"], "unrecognized arguments: --bogus 1"),
    (["demo", "--train-steps", "-1"], "train_steps (--train-steps) must be an integer >= 0"),
    (["demo", "--num", "0"], "num (--num) must be an integer >= 1, got 0"),
    (["pretrain-coupling", "--task", "sudoku4"], "give --output-dir DIR: where the pre-trained policy goes"),
    (["pretrain-coupling", *TINY_GRPO, "--output-dir", "pre"], "no coupling to pre-train: set --coupling-rounds"),
    (["train-policy", *TINY_GRPO, "--init-policy", "missing"], "no policy checkpoint at missing"),
])
def test_bad_flag_is_one_clear_line(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)  # nothing may be written, wherever it would go
    assert message in one_error(capsys, argv)
    assert not any(tmp_path.iterdir())


def test_python_api_gives_the_cli_message():
    from unmask.api import evaluate_policies
    from unmask.rl.grpo import GRPOConfig

    with pytest.raises(ValueError, match=r"^num \(--num\) must be an integer >= 1, got 0$"):
        evaluate_policies(num=0)
    with pytest.raises(ValueError, match=r"^limit \(--limit\) must be an integer >= 1 or none, got -1$"):
        evaluate_policies(limit=-1)
    with pytest.raises(ValueError, match=r"^epsilon \(--epsilon\) must be a number > 0, got -0.2$"):
        GRPOConfig.from_flat(epsilon=-0.2)


def test_data_that_is_a_directory_or_binary_is_named(capsys, tmp_path):
    assert "is a directory; give a sudoku4 data file" in one_error(
        capsys, ["eval", "--task", "sudoku4", "--data", str(tmp_path)])
    binary = tmp_path / "puzzles.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00" * 8)
    line = one_error(capsys, ["eval", "--task", "sudoku4", "--data", str(binary)])
    assert f"--data {binary}: not a text data file" in line


@pytest.mark.parametrize("flag", ["--json", "--plot"])
def test_unwritable_report_paths_fail_before_decoding_and_name_the_path(capsys, tmp_path, flag):
    assert f"{flag} {tmp_path} is a directory" in one_error(
        capsys, ["eval", "--task", "sudoku4", "--num", "2", "--policies", "confidence", flag, str(tmp_path)])
    missing = tmp_path / "no" / "r.json"
    assert f"{flag} {missing}: the directory {missing.parent} does not exist" in one_error(
        capsys, ["eval", "--task", "sudoku4", "--num", "2", "--policies", "confidence", flag, str(missing)])


@pytest.mark.parametrize("command", [["train-mdm", *TINY_MDM], ["train-policy", *TINY_GRPO]], ids=["mdm", "policy"])
def test_output_dir_that_is_a_file_fails_before_training(capsys, tmp_path, command):
    file = tmp_path / "taken"
    file.write_text("x")
    assert f"--output-dir {file} is a file; give a directory" in one_error(capsys, [*command, "--output-dir", str(file)])
    under = file / "run"
    assert f"--output-dir {under}: {file} is a file" in one_error(capsys, [*command, "--output-dir", str(under)])


def test_gsm8k_training_from_a_file_asks_for_held_out_data(capsys, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"question": "1 + 1?", "answer": "1 + 1 = 2\n#### 2"}) + "\n")
    line = one_error(capsys, ["train-policy", "--task", "gsm8k", "--model", "sudoku4", "--data", str(data),
                              "--output-dir", str(tmp_path / "run")])
    assert "give the held-out prompts with --eval-data FILE" in line


def copy_policy(tmp_path, name: str = "upo-sudoku4") -> Path:
    path = tmp_path / name
    shutil.copytree(ASSETS / "policies" / name, path)
    return path


@pytest.mark.parametrize("change,message", [
    (lambda p: p.update(colour="blue"), "unknown key 'colour' for UPOConfig; valid keys: feature_size"),
    (lambda p: p.update(d_model="32"), "d_model (--d-model) must be an integer >= 1, got '32'"),
    (lambda p: p.pop("kind"), "unknown policy kind None"),
])
def test_policy_checkpoint_with_bad_config_is_named(capsys, tmp_path, change, message):
    path = copy_policy(tmp_path)
    meta = json.loads((path / "config.json").read_text())
    change(meta["policy"])
    (path / "config.json").write_text(json.dumps(meta))
    line = one_error(capsys, ["eval", "--task", "sudoku4", "--model", "sudoku4", "--num", "2", "--policies", str(path)])
    assert message in line


@pytest.mark.parametrize("change,message", [
    (lambda m: m.update(colour="blue"), "unknown fields in transformer config: ['colour']"),
    (lambda m: m.pop("vocab_size"), "missing fields in transformer config: ['vocab_size']"),
    (lambda m: m.update(n_embd="64"), "transformer config field n_embd has the invalid value '64'"),
])
def test_model_checkpoint_with_bad_config_is_named(capsys, tmp_path, change, message):
    path = tmp_path / "mdm"
    shutil.copytree(ASSETS / "models" / "sudoku4", path)
    meta = json.loads((path / "config.json").read_text())
    change(meta["model"])
    (path / "config.json").write_text(json.dumps(meta))
    line = one_error(capsys, ["eval", "--task", "sudoku4", "--model", str(path), "--num", "2"])
    assert str(path / "config.json") in line and message in line


def test_model_name_cannot_steer_the_shipped_policy_lookup_outside_the_assets(capsys, tmp_path):
    """A checkpoint's ``name`` picks the shipped policy ``<kind>-<name>``; '..' in it must not reach other files."""
    path = tmp_path / "mdm"
    shutil.copytree(ASSETS / "models" / "sudoku4", path)
    meta = json.loads((path / "config.json").read_text())
    meta["name"] = "sudoku4/../../models/sudoku4"  # policies/upo-sudoku4/../../models/sudoku4: an MDM, not a policy
    (path / "config.json").write_text(json.dumps(meta))
    line = one_error(capsys, ["eval", "--task", "sudoku4", "--model", str(path), "--num", "2", "--policies", "upo"])
    assert "no shipped upo policy for model 'sudoku4/../../models/sudoku4'" in line


def test_an_unexpected_error_says_it_is_a_bug_and_shows_the_traceback_only_with_debug(capsys, monkeypatch):
    import unmask.api

    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(unmask.api, "evaluate_policies", broken)
    assert main(["eval", "--task", "sudoku4"]) == 1
    err = capsys.readouterr().err
    assert "internal error (a bug in unmask; please report it): RuntimeError: boom" in err
    assert "--debug" in err and "Traceback" not in err
    assert main(["eval", "--task", "sudoku4", "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err
