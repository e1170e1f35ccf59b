"""Imitation of the oracle (unmask.training.imitation) and the planner (unmask.policies.planner): the objective of each
action family, a planner that starts as its scorer, and the phase inside train-policy (checkpoints, log, exact
resume)."""

import csv
import math
from pathlib import Path

import pytest
import torch
from kill_harness import policy_config

from unmask.api import train_policy
from unmask.models import load_model
from unmask.policies.learned import LearnedPolicy, load_policy
from unmask.policies.planner import Planner
from unmask.tasks import get_task
from unmask.training import imitation


def test_the_imitation_loss_is_the_weighted_likelihood_of_the_oracle_labels_over_allowed_positions():
    u = torch.tensor([[0.5, -1.0, 2.0]])
    allowed, gold = torch.tensor([[True, True, False]]), torch.tensor([[True, False, True]])
    loss = imitation.imitation_loss(u, gold, allowed, torch.tensor([0.0, 0.0]), negative_weight=3.0)
    expected = -(math.log(torch.sigmoid(torch.tensor(0.5))) + 3 * math.log(torch.sigmoid(torch.tensor(1.0)))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    scaled = imitation.imitation_loss(u / 4, gold, allowed, torch.tensor([math.log(4.0), 0.0]), negative_weight=3.0)
    assert scaled.item() == pytest.approx(expected, rel=1e-5)  # the calibration's scale


def observation(n=3, length=16, vocab=5):
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(n, length, vocab, generator=g), -1)
    masked = torch.rand(n, length, generator=g) < 0.7
    return {"token_probs": probs, "tokens": probs.argmax(-1), "masked": masked, "allowed": masked}


@pytest.mark.parametrize("layers", [0, 1])
def test_an_untrained_planner_adds_nothing_and_a_trained_one_reads_other_positions(layers):
    planner = Planner(16, channels=2, layers=layers, d_model=8, n_head=2)
    obs = observation()
    conf = obs["token_probs"].amax(-1)
    assert torch.equal(planner(obs, conf), torch.zeros(3, 16))
    torch.nn.init.normal_(planner.head[-1].weight)
    before = planner(obs, conf)
    other = dict(obs, token_probs=obs["token_probs"].clone())
    other["token_probs"][:, 5] = other["token_probs"][:, 5].roll(1, -1)  # only position 5 changes
    after = planner(other, conf)
    assert not torch.allclose(before[:, 0], after[:, 0])  # position 0 sees position 5 (pairwise channels)
    with pytest.raises(ValueError, match="learned over 16 generated positions; this generation region has 8"):
        planner({k: v[:, :8] for k, v in obs.items()}, conf[:, :8])


def test_a_policy_with_a_planner_starts_as_the_same_policy_without_one():
    model = load_model("sudoku4")
    torch.manual_seed(0)
    plain = LearnedPolicy.for_model("bernoulli", model, d_model=8)
    planned = LearnedPolicy.for_model("bernoulli", model, d_model=8, planner=True, planner_length=16)
    planned.load_state_dict({**planned.state_dict(), **plain.state_dict()})
    obs = {**observation(length=16, vocab=5), "time": torch.rand(3)}
    obs["confidence"] = obs["token_probs"].amax(-1)
    assert torch.equal(plain.scores(obs), planned.scores(obs))


def run(out, resume=False, **settings):
    config = policy_config(
        out,
        planner=True,
        pair_channels=2,
        planner_d_model=8,
        imitation_rounds=2,
        imitation_prompts=3,
        imitation_epochs=1,
        eval_size=4,
        **settings,
    )
    return train_policy(config, resume=resume, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bernoulli", "upo"])
def test_train_policy_imitates_then_grpo_with_its_log_checkpoints_and_exact_resume(tmp_path, monkeypatch, kind):
    settings = {"max_steps": 1, "policy": kind, **({"reference": "none"} if kind == "upo" else {})}
    run(tmp_path / "ref", **settings)
    ref = tmp_path / "ref" / imitation.PHASE
    with open(ref / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["0", "1", "2"] and all(float(r["states"]) > 0 for r in rows[1:])
    best = max(rows, key=lambda r: float(r["eval_solved"]))  # round 0 (the starting policy) competes too
    assert load_policy(ref / "best").record["eval_solved"] == float(best["eval_solved"])
    assert load_policy(ref / "best").planner is not None
    assert (tmp_path / "ref" / "last").is_dir() and (tmp_path / "ref" / "metrics.csv").is_file()

    real = imitation.Imitation.save

    def stop_after_first_round(self):
        real(self)
        if self.round == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(imitation.Imitation, "save", stop_after_first_round)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "run", **settings)
    monkeypatch.setattr(imitation.Imitation, "save", real)
    with pytest.raises(ValueError, match="already holds a training run"):
        run(tmp_path / "run", **settings)
    run(tmp_path / "run", resume=True, **settings)
    for name in ("best", "last"):
        for f in ("model.safetensors",):
            assert (tmp_path / "run" / imitation.PHASE / name / f).read_bytes() == (ref / name / f).read_bytes()
    assert (tmp_path / "run" / "last" / "model.safetensors").read_bytes() == (
        tmp_path / "ref" / "last" / "model.safetensors"
    ).read_bytes()


def test_imitation_on_a_task_without_targets_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="task gsm8k gives none .*--imitation-rounds"):
        imitation.collect_states(get_task("gsm8k"), None, None, [object()], None, 0)


def test_a_run_may_start_from_a_policy_without_a_planner_and_add_one(tmp_path):
    train_policy(policy_config(tmp_path / "plain", max_steps=0), progress=False)
    plain = load_policy(tmp_path / "plain" / "best")
    from unmask.training.grpo import GRPOTrainer

    trainer = GRPOTrainer.from_config(
        policy_config(
            tmp_path / "planned",
            max_steps=0,
            planner=True,
            pair_channels=2,
            planner_d_model=8,
            init_policy=str(tmp_path / "plain" / "best"),
        ),
        progress=False,
    )
    assert trainer.policy.planner is not None
    ours = trainer.policy.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in plain.state_dict().items())
    with pytest.raises(ValueError, match="d_model: 8 there, 16 here"):
        GRPOTrainer.from_config(
            policy_config(
                tmp_path / "other", max_steps=0, planner=True, d_model=16, init_policy=str(tmp_path / "plain" / "best")
            ),
            progress=False,
        )


def test_the_ablation_recipes_are_valid_train_policy_configs():
    import yaml

    from unmask.training.grpo import GRPOConfig

    recipes = sorted((Path(__file__).resolve().parents[2] / "recipes" / "ablations").glob("*.yaml"))
    assert recipes
    for recipe in recipes:
        config = GRPOConfig.from_flat(yaml.safe_load(recipe.read_text()), source=str(recipe))
        config.validate()
        assert config.imitation_rounds > 0
