import math

import numpy as np
import pytest
import torch

from unmask.core.checkpoint import save_checkpoint
from unmask.engine.loop import generate
from unmask.policies import get_policy
from unmask.policies.distributions import order_to_mask
from unmask.policies.learned import LearnedPolicy, load_policy
from unmask.tasks import get_task
from unmask.tasks.base import Scores
from unmask.training.grpo import GRPOConfig, GRPOTrainer, group_advantages
from unmask.training.rewards import speed_reward
from unmask.training.steering import ExpertSteering, mixture_log_prob


@pytest.fixture
def mdm_dir(tmp_path, tiny_sudoku4_model):
    """The untrained tiny MDM as a checkpoint: its answers vary, so rewards do."""
    out = tmp_path / "tiny-mdm"
    save_checkpoint(out, tiny_sudoku4_model, {"name": "tiny", "model": tiny_sudoku4_model.config.to_dict()})
    return str(out)


def cfg(model, out, **kw):
    base = dict(
        task="sudoku4",
        model=model,
        output_dir=str(out),
        policy="bernoulli",
        max_steps=2,
        prompts_per_step=3,
        num_generations=4,
        eval_steps=1,
        eval_size=6,
        difficulty=[5],
        d_model=16,
        minibatch_size=64,
        learning_rate=1e-2,
    )
    return GRPOConfig.from_flat({**base, **kw})


def test_speed_reward_formulas():
    correct, nfe, length = torch.tensor([1, 1, 0, 0]), torch.tensor([1, 10, 1, 10]), torch.tensor(10)
    assert speed_reward(correct, nfe, length, 2.0).tolist() == pytest.approx([1.0, 0.01, 0.0, 0.0])
    assert speed_reward(correct, nfe, length, 0.0).tolist() == [1.0, 1.0, 0.0, 0.0]
    assert speed_reward(correct, nfe, length, 0.5, "additive").tolist() == pytest.approx([0.95, 0.5, -0.05, -0.5])
    with pytest.raises(ValueError, match="unknown speed reward"):
        speed_reward(correct, nfe, length, 1.0, "sum")


def test_only_the_additive_reward_pays_fast_wrong_answers():
    """The reward-hacking mechanism of Jazbec §3.3: in an all-wrong group, the additive reward still ranks
    rollouts by speed; the multiplicative one gives no signal."""
    wrong, nfe, length = torch.zeros(4), torch.tensor([2, 4, 8, 16]), torch.tensor(16)
    additive = group_advantages(speed_reward(wrong, nfe, length, 1.0, "additive"), 4)
    assert additive[0] > 0 > additive[-1]
    assert group_advantages(speed_reward(wrong, nfe, length, 1.0), 4).abs().max() == 0


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"policy": "plackett-luce", "stop_logit": None},
        {"policy": "plackett-luce", "pl_count": "schedule", "steps": 4},
    ],
    ids=["bernoulli", "pl-stop", "pl-schedule"],
)
def test_update_trains_parallel_policies_without_the_mdm(tmp_path, kw):
    """Plain initialisation (random reveals) with the shipped 4x4 MDM: answers and rewards vary."""
    trainer = GRPOTrainer.from_config(
        cfg("sudoku4", tmp_path, reward_form="none", num_iterations=4, difficulty=[4], base_threshold=None, **kw),
        progress=False,
    )
    buf, stats = trainer.rollout(trainer.prompts(0))
    advantage = buf.advantage[buf.traj]
    assert (advantage > 0).any() and (advantage < 0).any()
    old = buf.old_log_prob.clone()
    trainer.model = None  # Algorithm 2: the update phase trains the policy alone
    trainer.update(buf)
    with torch.no_grad():
        change = trainer.policy.log_prob(buf.obs, buf.action) - old
    assert (change * advantage / buf.length[buf.traj]).sum() > 0  # the surrogate the update ascends (Eq. 19)


def test_rewards_use_correctness_nfe_and_length(mdm_dir, tmp_path):
    seen = {}

    def reward_fn(completions, examples, nfe, length, alpha, **kw):
        seen.update(nfe=nfe, length=length, alpha=alpha, logprob=kw["logprob"])
        return (-nfe.float()).tolist()

    trainer = GRPOTrainer.from_config(cfg(mdm_dir, tmp_path, alpha=0.5), reward_fn=reward_fn, progress=False)
    trainer.rollout(trainer.prompts(0))
    assert seen["nfe"].shape == (12,) and (seen["length"] == 11).all() and (seen["alpha"] == 0.5).all()
    trainer.reward_fn = None
    scores = Scores(reward=np.zeros(3), solved=np.array([True, True, False]), cell_accuracy=np.zeros(3))
    nfe, length, alpha = torch.tensor([2, 11, 1]), torch.tensor([11, 11, 11]), torch.full((3,), 0.5)
    got = trainer.rewards([None] * 3, [None] * 3, scores, nfe, length, alpha, torch.zeros(3))
    assert torch.allclose(got.cpu(), torch.tensor([(10 / 11) ** 0.5, (1 / 11) ** 0.5, 0.0]))


def test_expert_steps_are_recorded_as_policy_actions_with_mixture_log_probs(tiny_sudoku4_model):
    task = get_task("sudoku4")
    x = task.encode(task.generate(4, seed=3, difficulty=5), tiny_sudoku4_model).input_ids
    policy = LearnedPolicy.for_model("bernoulli", tiny_sudoku4_model, d_model=16)
    expert_of = torch.tensor([-1, 0, -1, 0])
    actor = ExpertSteering(policy, [get_policy("threshold:0.9")], expert_of, num_generations=3)
    out = generate(tiny_sudoku4_model, x, actor, record=True, generator=torch.Generator().manual_seed(0))
    alone = generate(tiny_sudoku4_model, x[expert_of >= 0], get_policy("threshold:0.9"))
    assert torch.equal(out.sequences[expert_of >= 0], alone.sequences) and torch.equal(
        out.nfe[expert_of >= 0], alone.nfe
    )
    for rec in out.trajectory:
        steered = expert_of[rec.rows] >= 0
        action = rec.data["action"]
        assert torch.equal(order_to_mask(action, rec.reveal.shape[1])[steered], rec.reveal[steered])
        obs = {k: v for k, v in rec.data.items() if k not in ("action", "old_log_prob")}
        logp = policy.log_prob(obs, action)
        expected = torch.where(steered, mixture_log_prob(logp, 3, 1), logp)
        assert torch.allclose(rec.data["old_log_prob"], expected, atol=1e-5)
        assert (rec.data["old_log_prob"][steered] >= math.log(1 / 4) - 1e-6).all()


@pytest.mark.slow
def test_alpha_conditioned_steered_training_resumes_exactly(mdm_dir, tmp_path, stop_after_save):
    settings = dict(max_steps=3, alpha_range=[0, 2], alpha=1.0, expert_steering=["threshold:0.9"], num_generations=3)
    straight = GRPOTrainer.from_config(cfg(mdm_dir, tmp_path / "a", **settings), progress=False)
    buf, stats = straight.rollout(straight.prompts(0))
    alphas = buf.obs["alpha"]
    group_of = buf.traj // 4
    for g in group_of.unique():
        assert alphas[group_of == g].unique().numel() == 1
    assert 0 <= alphas.min() and alphas.max() <= 2 and alphas.unique().numel() > 1
    assert buf.steered.view(-1, 4)[:, -1].all() and not buf.steered.view(-1, 4)[:, :-1].any()
    assert "expert_solved" in stats
    straight = GRPOTrainer.from_config(cfg(mdm_dir, tmp_path / "a", **settings), progress=False)
    straight.train()
    stop_after_save(GRPOTrainer.from_config(cfg(mdm_dir, tmp_path / "b", **settings), progress=False).train, 2)
    resumed = GRPOTrainer.from_config(cfg(mdm_dir, tmp_path / "b", **settings), progress=False)
    resumed.train(resume=True)
    for (k, a), b in zip(straight.policy.state_dict().items(), resumed.policy.state_dict().values()):
        assert torch.equal(a, b), k
    best = load_policy(tmp_path / "b" / "best")
    assert best.capabilities.conditioned and best.config.alpha_range == [0.0, 2.0]
    assert (tmp_path / "b" / "metrics.csv").read_text().splitlines()[0].count("eval_reward") == 1


@pytest.mark.parametrize(
    "kw,message",
    [
        (
            {"policy": "mask-predict"},
            r"policy \(--policy\) must be one of upo, bernoulli, plackett-luce, got 'mask-predict'",
        ),
        ({"reference": "confidence"}, "use --reference none"),
        ({"reward_form": "sum"}, r"reward_form \(--reward-form\) must be one of auto, multiplicative, additive, none"),
        ({"alpha": -1.0}, r"alpha \(--alpha\) must be a number >= 0"),
        ({"policy_temperature": 0.0}, r"temperature \(--policy-temperature\) must be a number > 0"),
        ({"alpha_range": [2]}, r"alpha_range \(--alpha-range\) must be LO,HI: 2 numbers >= 0"),
        ({"alpha_range": "a,b"}, r"alpha_range \(--alpha-range\) must be LO,HI"),
        ({"alpha_range": [0, 0.5]}, "lies outside the alpha range"),
        (
            {"policy": "upo", "alpha_range": [0, 1]},
            "is a setting of --policy bernoulli / plackett-luce, not of --policy upo",
        ),
        (
            {"policy": "upo", "base_threshold_hi": 0.8},
            "is a setting of --policy bernoulli / plackett-luce, not of --policy upo",
        ),
        ({"base_threshold_hi": 0.8}, "needs an alpha range"),
        ({"expert_steering": ["threshold:1.5"]}, "threshold must"),
        (
            {"policy": "plackett-luce", "pl_count": "schedule", "expert_steering": ["threshold:0.9"]},
            "variable-count policy",
        ),
        ({"baseline": "greedy", "expert_steering": ["threshold:0.9"]}, "does not combine with expert steering"),
    ],
)
def test_bad_settings_are_explained(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        GRPOTrainer.from_config(cfg("sudoku4", tmp_path, **kw), progress=False)


def test_train_policy_command_line_trains_an_alpha_conditioned_policy(tmp_path, capsys):
    from unmask.cli.main import main

    out = tmp_path / "bern"
    assert (
        main(
            [
                "train-policy",
                "--task",
                "sudoku4",
                "--policy",
                "bernoulli",
                "--alpha-range",
                "0,2",
                "--alpha",
                "1",
                "--base-threshold-hi",
                "0.6",
                "--expert-steering",
                "threshold:0.9",
                "--output-dir",
                str(out),
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
            ]
        )
        == 0
    )
    saved = load_policy(out / "best")
    assert (
        saved.kind == "bernoulli" and saved.config.alpha_range == [0.0, 2.0] and saved.config.base_threshold_hi == 0.6
    )
    assert (
        main(["eval", "--task", "sudoku4", "--num", "4", "--policies", f"threshold:0.9,{out / 'best'}", "--alpha", "2"])
        == 0
    )
    assert "bernoulli:bern/best:alpha=2" in capsys.readouterr().out
