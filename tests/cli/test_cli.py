import json

import pytest

from unmask.cli.main import main


def test_eval_prints_table_and_writes_json_and_plot(tmp_path, capsys):
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    rc = main(
        [
            "eval",
            "--task",
            "sudoku4",
            "--num",
            "12",
            "--clues",
            "6",
            "--policies",
            "random,confidence,threshold:0.9",
            "--json",
            str(out),
            "--plot",
            str(png),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "confidence" in text and "threshold:0.9" in text
    data = json.loads(out.read_text())
    assert data["model"] == "sudoku4" and data["task"] == "sudoku4"
    assert [r["policy"] for r in data["results"]] == ["random", "confidence", "threshold:0.9"]
    for r in data["results"]:
        assert set(r) == {"policy", "solved_rate", "cell_accuracy", "nfe", "positions", "seconds", "n", "tpf", "aup"}
        assert r["n"] == 12 and r["aup"] == pytest.approx(r["tpf"] * 100 * r["solved_rate"])
    assert "TPF" in text and "AUP" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["eval", "--task", "sudoku4", "--policies", "maxconf"], "unknown policy 'maxconf'"),
        (
            ["eval", "--task", "sudoku5"],
            "task (--task) must be one of arithmetic, gsm8k, math500, sudoku4, sudoku9, zebra, got 'sudoku5'",
        ),
        (["eval", "--task", "sudoku4", "--model", "nope"], "unknown model 'nope'"),
        (["eval", "--task", "sudoku4", "--data", "/nonexistent.csv"], "does not exist"),
        (["eval", "--task", "sudoku4", "--model", "sudoku9-small", "--num", "2"], "does not read sudoku4 grids"),
        (["eval", "--task", "sudoku4", "--policies", "bernoulli", "--num", "2"], "no shipped bernoulli policy"),
        (
            ["eval", "--task", "arithmetic", "--task-option", "bogus=4", "--num", "2"],
            "has no option 'bogus'; its options: op, max_digits",
        ),
        (
            ["eval", "--task", "arithmetic", "--task-option", "max_digits=abc", "--num", "2"],
            "max_digits (--task-option max_digits) must be an integer, got 'abc'",
        ),
        (["eval", "--task", "arithmetic", "--task-option", "max_digits", "--num", "2"], "takes KEY=VALUE"),
        (
            ["eval", "--task", "arithmetic", "--task-option", "max_digits=4", "--num", "2"],
            "does not read this arithmetic",
        ),
        (
            ["eval", "--task", "arithmetic", "--task-option", "propagate=2", "--num", "2"],
            "propagate is a probability in [0, 1]",
        ),
    ],
)
def test_bad_input_is_one_clear_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_train_mdm_takes_task_options_and_eval_reuses_them(tmp_path, capsys):
    mdm = tmp_path / "mul"
    options = ["--task-option", "op=mul", "--task-option", "multiplier_digits=1", "--task-option", "max_digits=3"]
    assert (
        main(
            [
                "train-mdm",
                "--task",
                "arithmetic",
                *options,
                "--output-dir",
                str(mdm),
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
                "--max-steps",
                "2",
            ]
        )
        == 0
    )
    assert json.loads((mdm / "last" / "config.json").read_text())["train"]["task_options"] == {
        "op": "mul",
        "multiplier_digits": 1,
        "max_digits": 3,
    }
    assert main(["eval", "--task", "arithmetic", *options, "--model", str(mdm), "--num", "4"]) == 0
    capsys.readouterr()
    assert main(["eval", "--task", "arithmetic", "--model", str(mdm), "--num", "4"]) == 0  # the options it recorded
    assert (
        main(
            ["eval", "--task", "arithmetic", "--task-option", "multiplier_digits=2", "--model", str(mdm), "--num", "4"]
        )
        == 2
    )
    assert "train.task_options" in capsys.readouterr().err  # the error says where the layout it reads is recorded


def test_train_mdm_and_policy_from_the_command_line(tmp_path, capsys):
    mdm = tmp_path / "mdm"
    common = [
        "--task",
        "sudoku4",
        "--output-dir",
        str(mdm),
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
    ]
    assert main(["train-mdm", *common, "--max-steps", "2"]) == 0
    assert main(["train-mdm", *common, "--max-steps", "2", "--seed", "1", "--resume"]) == 2  # settings differ: refused
    assert "settings differ" in capsys.readouterr().err
    pol = tmp_path / "pol"
    assert (
        main(
            [
                "train-policy",
                "--task",
                "sudoku4",
                "--model",
                str(mdm),
                "--output-dir",
                str(pol),
                "--max-steps",
                "1",
                "--prompts-per-step",
                "2",
                "--num-generations",
                "2",
                "--eval-size",
                "4",
                "--clues",
                "6",
                "--d-model",
                "16",
                "--base-temperature",
                "none",
            ]
        )
        == 0
    )
    assert (pol / "best" / "model.safetensors").is_file() and (pol / "last" / "optimizer.safetensors").is_file()
    assert (
        main(
            ["eval", "--task", "sudoku4", "--model", str(mdm), "--num", "4", "--policies", f"confidence,{pol / 'best'}"]
        )
        == 0
    )
    assert "upo:pol/best" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_trains_on_4x4_and_compares_on_both_sudokus(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--output-dir", str(out), "--num", "6", "--train-steps", "2"]) == 0
    assert (out / "upo-sudoku4" / "best" / "model.safetensors").is_file()
    run = json.loads((out / "upo-sudoku4" / "best" / "config.json").read_text())["train"]
    assert run["run"]["task"] == "sudoku4" and run["reference"] == "none" and run["policy"]["base_temperature"] is None
    data = json.loads((out / "demo_results.json").read_text())
    rows = {task: [r["policy"] for r in data[task]["results"]] for task in ("sudoku4", "sudoku9")}
    assert rows["sudoku4"][-2:] == ["upo", "upo:upo-sudoku4/best"] and "bernoulli" not in rows["sudoku4"]
    imitated = ["upo-dagger-sudoku9-small", "upo-dagger-sudoku9-small:bound=0.01"]
    assert (
        rows["sudoku9"][-5:] == ["upo", "bernoulli", *imitated, "oracle:parallel"] and "confidence" in rows["sudoku9"]
    )
    assert all(r["n"] == 6 for task in data for r in data[task]["results"])
    for task in ("sudoku4", "sudoku9"):
        assert (out / f"demo_{task}.png").read_bytes()[:4] == b"\x89PNG"
    assert "upo:upo-sudoku4/best" in capsys.readouterr().out


def test_eval_writes_its_resolved_config_and_reads_it_back(tmp_path, capsys):
    """Every command takes --config; eval writes the resolved config beside its JSON, and that file reproduces it."""
    import yaml

    recipe = tmp_path / "eval.yaml"
    recipe.write_text("task: sudoku4\npolicies: confidence,margin\nnum: 6\nseed: 3\n")
    first = tmp_path / "first.json"
    assert main(["eval", "--config", str(recipe), "--steps", "4", "--json", str(first)]) == 0
    resolved = yaml.safe_load((tmp_path / "first.config.yaml").read_text())
    assert resolved["policies"] == "confidence,margin" and resolved["num"] == 6 and resolved["steps"] == 4
    second = tmp_path / "second.json"
    assert main(["eval", "--config", str(tmp_path / "first.config.yaml"), "--json", str(second)]) == 0
    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    assert [r["solved_rate"] for r in a["results"]] == [r["solved_rate"] for r in b["results"]]
    assert [r["nfe"] for r in a["results"]] == [r["nfe"] for r in b["results"]]


@pytest.mark.parametrize(
    "command", ["eval", "frontier", "show-order", "train-policy", "pretrain-coupling", "train-mdm", "demo", "make-tiny"]
)
def test_every_command_takes_a_recipe_and_shows_at_most_about_30_flags(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    flags = [line for line in text.splitlines() if line.startswith("  --")]
    assert "--config FILE.yaml" in text and len(flags) <= 32, len(flags)
