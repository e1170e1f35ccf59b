"""Bad input gets one clear line (exit status 2), never a traceback and never a silent result (issue 18, items
4-6 and 9): each case runs ``unmask.cli.main.main`` on the tiny built-in models and fails before any real work."""

import json
import shutil
from pathlib import Path

import pytest

from unmask.cli.main import main

ASSETS = Path(__file__).resolve().parents[2] / "src" / "unmask" / "assets"
TINY_MDM = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--batch-size", "4", "--warmup-steps", "1"]
TINY_GRPO = [
    "--task",
    "sudoku4",
    "--max-steps",
    "1",
    "--prompts-per-step",
    "2",
    "--num-generations",
    "2",
    "--eval-size",
    "2",
    "--clues",
    "6",
    "--d-model",
    "16",
]


def one_error(capsys, argv: list[str]) -> str:
    """Run the command; it must exit with status 2 and print exactly one error line and no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


@pytest.mark.parametrize(
    "argv,message",
    [
        # raw tracebacks before (issue 18 item 4)
        (["train-policy", "--eval-steps", "0"], "eval_steps (--eval-steps) must be an integer >= 1, got 0"),
        (["train-policy", "--minibatch-size", "0"], "minibatch_size (--minibatch-size) must be an integer >= 1, got 0"),
        (["train-mdm", "--save-steps", "0"], "save_steps (--save-steps) must be an integer >= 1, got 0"),
        (["train-mdm", "--logging-steps", "0"], "logging_steps (--logging-steps) must be an integer >= 1, got 0"),
        (
            ["train-policy", "--base-temperature", "0"],
            "base_temperature (--base-temperature) must be a number > 0 or none",
        ),
        (["train-policy", "--d-model", "30"], "d_model (--d-model) 30 must be divisible by n_head (--n-head) 4"),
        (["train-mdm", "--batch-size", "0"], "batch_size (--batch-size) must be an integer >= 1, got 0"),
        (["train-mdm", "--n-embd", "-16"], "n_embd (--n-embd) must be an integer >= 1, got -16"),
        (
            ["train-mdm", "--task", "gsm8k"],
            "task (--task) must be one of arithmetic, sudoku4, sudoku9, zebra, got 'gsm8k'",
        ),
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
        (
            ["train-policy", "--alpha-range", "3,1", "--policy", "bernoulli"],
            "alpha_range (--alpha-range) must be LO,HI",
        ),
        (["train-policy", "--policy", "bernoulli", "--stop-logit", "1"], "is a setting of --policy plackett-luce"),
        (["train-policy", "--policy", "maskgit"], "policy (--policy) must be one of upo, bernoulli, plackett-luce"),
        (["eval", "--bogus", "1"], "unrecognized arguments: --bogus 1"),
        (["demo", "--train-steps", "-1"], "train_steps (--train-steps) must be an integer >= 0"),
        (["demo", "--num", "0"], "num (--num) must be an integer >= 1, got 0"),
        (["pretrain-coupling", "--task", "sudoku4"], "give --output-dir DIR: where the pre-trained policy goes"),
        (["pretrain-coupling", *TINY_GRPO, "--output-dir", "pre"], "no coupling to pre-train: set --coupling-rounds"),
        (["train-policy", *TINY_GRPO, "--init-policy", "missing"], "no policy checkpoint at missing"),
    ],
)
def test_bad_flag_is_one_clear_line(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)  # nothing may be written, wherever it would go
    assert message in one_error(capsys, argv)
    assert not any(tmp_path.iterdir())


def test_python_api_gives_the_cli_message():
    from unmask.api import evaluate
    from unmask.training.grpo import GRPOConfig

    with pytest.raises(ValueError, match=r"^num \(--num\) must be an integer >= 1, got 0$"):
        evaluate(num=0)
    with pytest.raises(ValueError, match=r"^limit \(--limit\) must be an integer >= 1 or none, got -1$"):
        evaluate(limit=-1)
    with pytest.raises(ValueError, match=r"^epsilon \(--epsilon\) must be a number > 0, got -0.2$"):
        GRPOConfig.from_flat(epsilon=-0.2)


def test_data_that_is_a_directory_or_binary_is_named(capsys, tmp_path):
    assert "is a directory; give a sudoku4 data file" in one_error(
        capsys, ["eval", "--task", "sudoku4", "--data", str(tmp_path)]
    )
    binary = tmp_path / "puzzles.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00" * 8)
    line = one_error(capsys, ["eval", "--task", "sudoku4", "--data", str(binary)])
    assert f"--data {binary}: not a text data file" in line


@pytest.mark.parametrize("flag", ["--json", "--plot"])
def test_unwritable_report_paths_fail_before_decoding_and_name_the_path(capsys, tmp_path, flag):
    assert f"{flag} {tmp_path} is a directory" in one_error(
        capsys, ["eval", "--task", "sudoku4", "--num", "2", "--policies", "confidence", flag, str(tmp_path)]
    )
    missing = tmp_path / "no" / "r.json"
    assert f"{flag} {missing}: the directory {missing.parent} does not exist" in one_error(
        capsys, ["eval", "--task", "sudoku4", "--num", "2", "--policies", "confidence", flag, str(missing)]
    )


@pytest.mark.parametrize("command", [["train-mdm", *TINY_MDM], ["train-policy", *TINY_GRPO]], ids=["mdm", "policy"])
def test_output_dir_that_is_a_file_fails_before_training(capsys, tmp_path, command):
    file = tmp_path / "taken"
    file.write_text("x")
    assert f"--output-dir {file} is a file; give a directory" in one_error(
        capsys, [*command, "--output-dir", str(file)]
    )
    under = file / "run"
    assert f"--output-dir {under}: {file} is a file" in one_error(capsys, [*command, "--output-dir", str(under)])


def test_gsm8k_training_from_a_file_asks_for_held_out_data(capsys, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"question": "1 + 1?", "answer": "1 + 1 = 2\n#### 2"}) + "\n")
    line = one_error(
        capsys,
        [
            "train-policy",
            "--task",
            "gsm8k",
            "--model",
            "sudoku4",
            "--data",
            str(data),
            "--output-dir",
            str(tmp_path / "run"),
        ],
    )
    assert "give the held-out prompts with --eval-data FILE" in line


def copy_policy(tmp_path, name: str = "upo-sudoku4") -> Path:
    path = tmp_path / name
    shutil.copytree(ASSETS / "policies" / name, path)
    return path


@pytest.mark.parametrize(
    "change,message",
    [
        (
            lambda p: p.update(colour="blue"),
            "unknown key 'colour' for UPOConfig; valid keys: coupling_rounds, coupling_length, planner",
        ),
        (lambda p: p.update(d_model="32"), "d_model (--d-model) must be an integer >= 1, got '32'"),
        (lambda p: p.pop("kind"), "unknown policy kind None"),
    ],
)
def test_policy_checkpoint_with_bad_config_is_named(capsys, tmp_path, change, message):
    path = copy_policy(tmp_path)
    meta = json.loads((path / "config.json").read_text())
    change(meta["policy"])
    (path / "config.json").write_text(json.dumps(meta))
    line = one_error(capsys, ["eval", "--task", "sudoku4", "--model", "sudoku4", "--num", "2", "--policies", str(path)])
    assert message in line


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda m: m.update(colour="blue"), "unknown fields in transformer config: ['colour']"),
        (lambda m: m.pop("vocab_size"), "missing fields in transformer config: ['vocab_size']"),
        (lambda m: m.update(n_embd="64"), "transformer config field n_embd has the invalid value '64'"),
    ],
)
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

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(unmask.api, "evaluate", broken)
    assert main(["eval", "--task", "sudoku4"]) == 1
    err = capsys.readouterr().err
    assert "internal error (a bug in unmask; please report it): RuntimeError: boom" in err
    assert "--debug" in err and "Traceback" not in err
    assert main(["eval", "--task", "sudoku4", "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


# ----- issue 31 item 7: the last silent or unclear cases -----
def test_a_policy_used_with_another_mdm_of_the_same_shape_warns_and_shipped_names_resolve():
    """bernoulli-sudoku9-small reads confidences only, so it fits sudoku9-base; it was trained against -small."""
    from unmask.models import load_model
    from unmask.policies.resolve import resolve_policies

    with pytest.warns(UserWarning, match="trained against the MDM 'sudoku9-small', not 'sudoku9-base'"):
        (policy,) = resolve_policies("bernoulli-sudoku9-small", load_model("sudoku9-base"))
    assert policy.name == "bernoulli-sudoku9-small"


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda m: m.update(policy=["upo"]), "the 'policy' section must be a mapping of settings"),
        (lambda m: m["policy"].pop("feature_size"), "the 'policy' section has no feature_size"),
    ],
)
def test_policy_checkpoint_with_a_broken_section_is_named(capsys, tmp_path, change, message):
    path = copy_policy(tmp_path)
    meta = json.loads((path / "config.json").read_text())
    change(meta)
    (path / "config.json").write_text(json.dumps(meta))
    line = one_error(capsys, ["eval", "--task", "sudoku4", "--num", "2", "--policies", str(path)])
    assert message in line and "different checkpoints" not in line


def test_corrupt_weight_bytes_of_a_saved_policy_are_refused(capsys, tmp_path):
    from unmask.policies.learned import load_policy

    saved = tmp_path / "saved"
    load_policy(ASSETS / "policies" / "upo-sudoku4").save(saved, {"mdm": "sudoku4"})  # a save writes its manifest
    weights = saved / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-4:] = bytes(4)  # the last float: still a loadable file
    weights.write_bytes(bytes(data))
    line = one_error(capsys, ["eval", "--task", "sudoku4", "--num", "2", "--policies", str(saved)])
    assert (
        f"policy checkpoint {saved} is mixed or corrupt: model.safetensors is not the file its manifest lists" in line
    )


def test_a_cut_safetensors_shard_of_an_hf_model_is_a_user_error(capsys, tmp_path):
    pytest.importorskip("transformers")
    assert main(["make-tiny", "--output-dir", str(tmp_path), "--families", "llada"]) == 0
    weights = tmp_path / "llada" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    capsys.readouterr()
    line = one_error(
        capsys,
        [
            "eval",
            "--task",
            "gsm8k",
            "--model",
            f"hf:{tmp_path / 'llada'}",
            "--data",
            str(tmp_path / "none.jsonl"),
            "--policies",
            "confidence",
        ],
    )
    assert f"{weights} is not a complete safetensors file" in line and "download it again" in line


def test_errors_of_an_atomic_write_name_the_users_file_not_the_temporary_one(tmp_path):
    from unmask.core.checkpoint import save_json

    (tmp_path / "results.json").mkdir()
    with pytest.raises(IsADirectoryError) as error:
        save_json(tmp_path / "results.json", {})
    assert error.value.filename == str(tmp_path / "results.json") and ".tmp" not in str(error.value)


def test_metrics_csv_that_cannot_be_written_is_named(capsys, tmp_path):
    (tmp_path / "run" / "metrics.csv").mkdir(parents=True)
    line = one_error(
        capsys, ["train-mdm", *TINY_MDM, "--task", "sudoku4", "--max-steps", "1", "--output-dir", str(tmp_path / "run")]
    )
    assert str(tmp_path / "run" / "metrics.csv") in line and ".tmp" not in line


def test_more_steps_than_generated_positions_warns(capsys):
    with pytest.warns(UserWarning, match="steps 20 is more than the 12 masked positions to generate"):
        assert (
            main(
                ["eval", "--task", "sudoku4", "--num", "2", "--clues", "4", "--steps", "20", "--policies", "confidence"]
            )
            == 0
        )


@pytest.mark.parametrize("policies", ["confidence,,margin", "confidence,"])
def test_an_empty_policy_in_the_list_is_refused(capsys, policies):
    line = one_error(capsys, ["eval", "--task", "sudoku4", "--num", "2", "--policies", policies])
    assert "has an empty entry" in line


def test_a_rerun_demo_warns_that_it_replaces_the_earlier_one(tmp_path):
    """The warning comes before any work (turned into an error here, so that the demo stops at it)."""
    import warnings

    from unmask.api import demo

    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "demo_results.json").write_text("{}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="holds an earlier demo; it is replaced"):
            demo(output_dir=str(tmp_path / "demo"), num=1, train_steps=0)


# the Python API: one ValueError naming the problem, never a raw exception or a silent result
def _sudoku4():
    from unmask.models import load_model
    from unmask.tasks import get_task

    return get_task("sudoku4"), load_model("sudoku4")


def test_generate_refuses_float_ids_and_ids_outside_the_vocabulary_before_any_forward():
    import torch

    from unmask.engine.loop import generate
    from unmask.policies import get_policy

    task, model = _sudoku4()
    ids = task.encode(task.generate(2, seed=0, difficulty=6), model).input_ids
    with pytest.raises(ValueError, match="input_ids must hold integer token ids .*got dtype torch.float32"):
        generate(model, ids.float(), get_policy("confidence"))
    solved = torch.zeros_like(ids)  # no mask anywhere: no forward would see the bad id
    solved[0, 0] = model.vocab_size + 3
    with pytest.raises(ValueError, match=rf"token ids must lie in \[0, {model.vocab_size}\)"):
        generate(model, solved, get_policy("confidence"))


def test_task_methods_refuse_what_they_cannot_use():
    task, model = _sudoku4()
    with pytest.raises(ValueError, match="sudoku4: examples must be SudokuExample objects.*got str"):
        task.encode(["1234"], model)
    examples = task.generate(2, seed=0)
    with pytest.raises(ValueError, match="sudoku4: 1 completions for 2 examples"):
        task.score(examples, [[1] * 16])
    with pytest.raises(ValueError, match="number of examples to generate must be an integer >= 0, got -1"):
        task.generate(-1)


@pytest.mark.parametrize("spec", [None, 3, ""])
def test_a_policy_spec_that_is_not_a_string_is_refused(spec):
    from unmask.policies import get_policy
    from unmask.policies.resolve import resolve_policies

    with pytest.raises(ValueError, match="a policy spec is a non-empty string"):
        get_policy(spec)
    _, model = _sudoku4()
    with pytest.raises(ValueError, match="a policy spec is a non-empty string"):
        resolve_policies(["confidence", spec], model)


@pytest.mark.parametrize("length", [{"gen_length": 0}, {"max_new_tokens": -1}])
def test_unmask_generate_refuses_a_length_below_1_before_loading_anything(length):
    import unmask

    with pytest.raises(
        ValueError, match=f"{next(iter(length))} must be an integer >= 1 .*got {next(iter(length.values()))}"
    ):
        unmask.generate(None, prompts=["1 + 2"], **length)
