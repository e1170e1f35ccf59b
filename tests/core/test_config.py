"""Typed configs (unmask.core.config): checks when built, flags and recipes from the field metadata, and every
shipped recipe and stored checkpoint config loading."""

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from unmask.cli.main import build_parser, main
from unmask.core.config import Config, ConfigError, add_config_arguments, flat_fields, load_recipe, option
from unmask.engine.config import SamplingConfig
from unmask.evaluation.run_config import RunConfig
from unmask.policies.learned import load_policy
from unmask.training.grpo import GRPOConfig
from unmask.training.mdm import MDMTrainConfig

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "src" / "unmask" / "assets"
RECIPES = ROOT / "recipes"
SHIPPED = sorted(ASSETS.glob("*/*/config.json"))


@dataclass
class Toy(Config):
    """A config with one field of each kind."""

    count: int = option(2, "a count", low=1)
    rate: float = option(0.5, "a probability", low=0.0, high=1.0, high_open=True)
    mode: str = option("a", "a choice", choices=("a", "b"))
    sizes: list[int] = option([1, 2], "sizes", low=0)
    span: list[float] | None = option(None, "a range", low=0.0, length=2)
    cap: int | None = option(None, "an optional bound", low=1)


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"count": 0}, r"count \(--count\) must be an integer >= 1, got 0"),
        ({"count": 2.5}, r"count \(--count\) must be an integer >= 1, got 2.5"),
        ({"count": True}, r"count \(--count\) must be an integer >= 1, got True"),
        ({"rate": 1.0}, r"rate \(--rate\) must be a number in \[0, 1\), got 1.0"),
        ({"rate": float("nan")}, r"rate \(--rate\) must be a finite number, got nan"),
        ({"rate": float("inf")}, r"rate \(--rate\) must be a finite number, got inf"),
        ({"rate": "0.5"}, r"rate \(--rate\) must be a number in \[0, 1\), got '0.5'"),
        ({"mode": "c"}, r"mode \(--mode\) must be one of a, b, got 'c'"),
        ({"sizes": [1, -1]}, r"sizes \(--sizes\) must be a list of integers >= 0, got \[1, -1\]"),
        ({"sizes": "1,2"}, r"sizes \(--sizes\) must be a list of integers >= 0, got '1,2'"),
        ({"span": [3.0, 1.0]}, r"span \(--span\) must be LO,HI with LO < HI, got 3,1"),
        ({"span": [1.0]}, r"span \(--span\) must be LO,HI: 2 numbers >= 0 or none, got \[1.0\]"),
        ({"cap": 0}, r"cap \(--cap\) must be an integer >= 1 or none, got 0"),
    ],
)
def test_every_field_is_checked_when_the_config_is_built(kw, message):
    with pytest.raises(ConfigError, match=message):
        Toy(**kw)


def test_ints_become_floats_and_lists_stay_lists():
    toy = Toy(rate=0, span=(0, 8))
    assert toy.rate == 0.0 and isinstance(toy.rate, float) and toy.span == [0.0, 8.0]
    assert Toy.from_dict(toy.to_dict()) == toy and Toy.from_flat(toy.flat()) == toy


def test_flags_carry_help_choices_and_parse_lists_ranges_and_none():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Toy)
    helps = {a.dest: a.help for a in parser._actions if a.dest != "help"}
    assert set(helps) == {"count", "rate", "mode", "sizes", "span", "cap"}
    assert "a count [an integer >= 1; default: 2]" == helps["count"]
    assert "one of a, b" in helps["mode"]
    args = parser.parse_args(["--sizes", "3,4", "--span", "0,8", "--cap", "none", "--mode", "b"])
    assert vars(args) == {"sizes": [3, 4], "span": [0.0, 8.0], "cap": None, "mode": "b"}  # only what was typed
    assert Toy.from_flat(vars(args)) == Toy(sizes=[3, 4], span=[0.0, 8.0], mode="b")


def test_grpo_config_nests_run_and_policy_by_kind():
    cfg = GRPOConfig.from_flat(
        policy="plackett-luce",
        pl_count="schedule",
        steps=4,
        max_steps=3,
        difficulty=[5, 6],
        policy_temperature=0.5,
        alpha=0.5,
    )
    assert cfg.max_steps == 3 and cfg.run.sampling.steps == 4 and cfg.run.difficulty == [5, 6]
    assert cfg.policy_kind == "plackett-luce" and cfg.policy.count == "schedule" and cfg.policy.temperature == 0.5
    assert cfg.alpha == 0.5 and "alpha" not in cfg.to_dict()["policy"]  # one alpha: the trainer's (the policy's
    # default input is derived from it when the trainer builds the policy)
    stored = cfg.to_dict()
    assert stored["policy"]["kind"] == "plackett-luce" and "mdm_name" not in stored["policy"]  # derived: not stored
    assert GRPOConfig.from_dict(json.loads(json.dumps(stored))) == cfg
    with pytest.raises(
        ConfigError,
        match=r"stop_logit \(--stop-logit\) is a setting of --policy plackett-luce, not of "
        r"--policy bernoulli; bernoulli takes: coupling_rounds, planner, pair_channels",
    ):
        GRPOConfig.from_flat(policy="bernoulli", stop_logit=1.0)


def test_every_flag_of_every_command_has_help_text():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        for action in parser._actions:
            assert action.help, f"unmask {name} {action.option_strings}: no help text"


def test_config_flags_cover_every_setting():
    """Every settable field of the trainers' configs is a flag of its command (dict fields have their own flags)."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command, cls in (("train-policy", GRPOConfig), ("train-mdm", MDMTrainConfig), ("eval", RunConfig)):
        dests = {a.dest for a in sub.choices[command]._actions}
        assert {k for k, leaf in flat_fields(cls).items() if leaf.spec.base is not dict} <= dests


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.parent.name)
def test_every_shipped_checkpoint_config_loads(path):
    meta = json.loads(path.read_text())
    if path.parent.parent.name == "policies":
        cfg = GRPOConfig.from_dict(meta["train"], source=str(path))
        assert cfg.policy_kind == meta["policy"]["kind"] and cfg.run.task == meta["task"]
        policy = load_policy(path.parent)
        for key, value in cfg.policy.to_dict().items():  # the training settings are the policy's architecture
            assert getattr(policy.config, key) == value, key
    else:
        cfg = MDMTrainConfig.from_dict(meta["train"], source=str(path))
        assert (cfg.n_layer, cfg.n_embd, cfg.n_head) == (
            meta["model"]["n_layer"],
            meta["model"]["n_embd"],
            meta["model"]["n_head"],
        )


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.parent.name)
def test_every_shipped_checkpoint_has_its_recipe_and_its_card_points_to_it(path):
    recipe = RECIPES / f"{path.parent.name}.yaml"
    meta = json.loads(path.read_text())
    cls = GRPOConfig if path.parent.parent.name == "policies" else MDMTrainConfig
    assert cls.from_flat(load_recipe(recipe), source=str(recipe)) == cls.from_dict(meta["train"])
    assert f"--config recipes/{recipe.name}" in (path.parent / "README.md").read_text()


def test_every_recipe_belongs_to_a_shipped_checkpoint():
    assert {p.stem for p in RECIPES.glob("*.yaml")} == {p.parent.name for p in SHIPPED}


def write(tmp_path, text: str) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "text,message",
    [
        ("max_step: 3\n", "recipe.yaml: unknown key 'max_step'; valid keys: output_dir, max_steps"),
        ("max_steps: three\n", r"recipe.yaml: max_steps \(--max-steps\) must be an integer >= 0, got 'three'"),
        ("epsilon: -0.2\n", r"recipe.yaml: epsilon \(--epsilon\) must be a number > 0, got -0.2"),
        ("policy: maskgit\n", "recipe.yaml: policy must be one of upo, bernoulli, plackett-luce, got 'maskgit'"),
        ("difficulty: 24,28\n", r"recipe.yaml: difficulty \(--difficulty\) must be a list of integers >= 0"),
        ("- max_steps\n", "recipe.yaml: a recipe is a mapping of option names to values"),
        ("max_steps: [\n", "recipe.yaml: not a readable YAML file"),
    ],
)
def test_a_bad_recipe_is_one_error_naming_the_file_the_key_and_the_valid_values(tmp_path, capsys, text, message):
    assert main(["train-policy", "--config", write(tmp_path, text), "--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert re.search(message, err), err


def test_flags_override_the_recipe_and_the_run_stores_what_was_used(tmp_path, capsys):
    recipe = write(
        tmp_path,
        "task: sudoku4\nn_layer: 1\nn_head: 2\nn_embd: 16\nbatch_size: 4\nwarmup_steps: 1\n"
        "max_steps: 5\nlearning_rate: 0.01\ntask_options: {}\n",
    )
    out = tmp_path / "mdm"
    assert main(["train-mdm", "--config", recipe, "--max-steps", "1", "--output-dir", str(out)]) == 0
    stored = json.loads(next(out.rglob("config.json")).read_text())["train"]
    assert stored["max_steps"] == 1 and stored["learning_rate"] == 0.01 and stored["n_embd"] == 16


def test_training_steps_and_diffusion_steps_are_two_flags():
    args = build_parser().parse_args(["train-policy", "--steps", "4", "--max-steps", "7"])
    cfg = GRPOConfig.from_flat({k: v for k, v in vars(args).items() if k in flat_fields(GRPOConfig)})
    assert cfg.run.sampling.steps == 4 and cfg.max_steps == 7


def test_sampling_config_is_checked_at_the_edge():
    with pytest.raises(ValueError, match=r"steps \(--steps\) must be an integer >= 1 or none, got 0"):
        SamplingConfig(steps=0)
    with pytest.raises(ValueError, match=r"temperature \(--temperature\) must be a finite number, got nan"):
        SamplingConfig(temperature=float("nan"))
