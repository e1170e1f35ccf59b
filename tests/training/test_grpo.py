import math

import pytest
import torch

from unmask.api import pretrain_coupling, train_policy
from unmask.policies.learned import load_policy
from unmask.training.grpo import GRPOConfig, GRPOTrainer, greedy_baseline_advantages, group_advantages
from unmask.training.mdm import MDMTrainConfig, train_mdm
from unmask.training.pretrain import pretrain_step
from unmask.training.reference import Reference


@pytest.fixture(scope="module")
def mdm_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("mdm") / "sudoku4-tiny"
    train_mdm(
        MDMTrainConfig(
            task="sudoku4",
            output_dir=str(out),
            n_layer=2,
            n_head=2,
            n_embd=32,
            max_steps=80,
            batch_size=32,
            warmup_steps=2,
            save_steps=80,
            logging_steps=40,
        ),
        progress=False,
    )
    return str(out)


def cfg(mdm_dir, out, **kw):
    base = dict(
        task="sudoku4",
        model=mdm_dir,
        output_dir=str(out),
        max_steps=2,
        prompts_per_step=3,
        num_generations=4,
        eval_steps=1,
        eval_size=8,
        difficulty=[5],
        d_model=16,
        minibatch_size=16,
        learning_rate=1e-3,
    )
    return GRPOConfig.from_flat({**base, **kw})


def test_group_advantages_are_normalised_per_group():
    adv = group_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0, 0.5, 0.5, 0.5, 0.5]), 4)
    assert adv[:4].tolist() == pytest.approx([0.866, -0.866, 0.866, -0.866], abs=1e-3)
    assert adv[4:].tolist() == [0.0] * 4


def test_unscaled_advantages_keep_small_reward_differences_small():
    """All rollouts correct, differing only by a speed term: GRPO's std scaling blows the difference up to +-1
    (what collapsed the parallel policy to one NFE on arithmetic-carry); advantage_scale='none' keeps it."""
    rewards = torch.tensor([1.0, 0.98, 1.0, 0.98])
    assert group_advantages(rewards, 4).abs().tolist() == pytest.approx([0.866] * 4, abs=1e-2)
    assert group_advantages(rewards, 4, scale=False).tolist() == pytest.approx([0.01, -0.01, 0.01, -0.01])
    greedy = greedy_baseline_advantages(rewards, 4, torch.tensor([0.99]), scale=False)
    assert greedy.tolist() == pytest.approx([0.01, -0.01, 0.01, -0.01])


def test_unknown_advantage_scale_or_policy_setting_is_refused(mdm_dir, tmp_path):
    with pytest.raises(ValueError, match=r"advantage_scale \(--advantage-scale\) must be one of std, none"):
        GRPOTrainer.from_config(cfg(mdm_dir, tmp_path, advantage_scale="mad"), progress=False)
    with pytest.raises(
        ValueError,
        match=r"base_temperature \(--base-temperature\) is a setting of --policy upo, "
        r"not of --policy bernoulli",
    ):
        GRPOTrainer.from_config(cfg(mdm_dir, tmp_path, base_temperature=0.1, policy="bernoulli"), progress=False)


def test_greedy_baseline_rewards_only_samples_that_beat_greedy():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    adv = greedy_baseline_advantages(rewards, 4, torch.tensor([0.0, 1.0]))
    assert adv[0] > 0 and (adv[1:4] == 0).all()  # prompt 1: the one sample that beats greedy, others tie it
    assert (adv[4:] == 0).all()  # prompt 2: every sample ties greedy, whatever the group mean
    assert group_advantages(rewards, 4)[1:4].lt(0).all()  # while GRPO pushes the tied samples down


def test_greedy_baseline_decodes_each_prompt_once_more(mdm_dir, tmp_path):
    trainer = GRPOTrainer.from_config(
        cfg(mdm_dir, tmp_path, baseline="greedy", difficulty=[4], base_temperature=None), progress=False
    )
    calls = []
    trainer.model.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    buf, stats = trainer.rollout(trainer.prompts(0))
    assert 0 <= stats["greedy_reward"] <= 1 and buf.advantage.shape == (12,)
    assert calls[0] == 12 and 3 in calls  # the 3 x 4 sampled rollouts, then the 3 greedy decodes
    with pytest.raises(ValueError, match=r"baseline \(--baseline\) must be one of group, greedy"):
        GRPOTrainer.from_config(cfg(mdm_dir, tmp_path, baseline="mean"), progress=False)


@pytest.mark.parametrize("reference", ["confidence", "softmax", "topk", "none"])
def test_update_never_calls_the_mdm_and_favours_positive_advantage(mdm_dir, tmp_path, reference):
    trainer = GRPOTrainer.from_config(
        cfg(
            mdm_dir,
            tmp_path,
            reference=reference,
            beta=0.0,
            num_iterations=4,
            base_temperature=None,
            difficulty=[4],
            num_generations=6,
        ),
        progress=False,
    )
    buf, stats = trainer.rollout(trainer.prompts(0))
    assert len(buf) > 0 and stats["nfe"] > 0
    calls = []
    trainer.model.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        before = trainer.policy.log_prob(buf.obs, buf.action)
    trainer.update(buf)
    assert calls == [], "the update phase must not run the MDM (Algorithm 2)"
    with torch.no_grad():
        after = trainer.policy.log_prob(buf.obs, buf.action)
    gain = ((after - before) * buf.advantage[buf.traj]).sum()
    assert buf.advantage.abs().sum() > 0
    assert gain > 0


COUPLING = dict(coupling_rounds=2, coupling_prompts=6, coupling_epochs=2)


@pytest.mark.parametrize("extra", [{}, COUPLING], ids=["plain", "coupling"])
def test_resume_is_exact(mdm_dir, tmp_path, stop_after_save, extra):
    straight = GRPOTrainer.from_config(cfg(mdm_dir, tmp_path / "a", max_steps=3, **extra), progress=False)
    if extra:
        pretrain_step(straight)
    straight.train()
    stopped = GRPOTrainer.from_config(cfg(mdm_dir, tmp_path / "b", max_steps=3, **extra), progress=False)
    if extra:
        pretrain_step(stopped)
    stop_after_save(stopped.train, 2)
    resumed = GRPOTrainer.from_config(cfg(mdm_dir, tmp_path / "b", max_steps=3, **extra), progress=False)
    resumed.train(resume=True)
    for (k, a), b in zip(straight.policy.state_dict().items(), resumed.policy.state_dict().values()):
        assert torch.equal(a, b), k
    assert (tmp_path / "b" / "best" / "model.safetensors").is_file()


def test_max_minutes_stops_with_a_resumable_checkpoint(mdm_dir, tmp_path):
    straight = GRPOTrainer.from_config(cfg(mdm_dir, tmp_path / "a", max_steps=3, eval_steps=5), progress=False)
    straight.train()
    budget = GRPOTrainer.from_config(cfg(mdm_dir, tmp_path / "b", max_steps=3, eval_steps=5), progress=False)
    budget.train(max_minutes=1e-9)  # out of time after the first step: evaluated and saved there
    assert budget.step == 1
    rows = (tmp_path / "b" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and "eval_solved" in rows[0]  # header, step 0, step 1
    resumed = GRPOTrainer.from_config(cfg(mdm_dir, tmp_path / "b", max_steps=3, eval_steps=5), progress=False)
    resumed.train(resume=True)
    assert resumed.step == 3
    for (k, a), b in zip(straight.policy.state_dict().items(), resumed.policy.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="max_minutes must be > 0"):
        budget.train(max_minutes=0)


def test_resume_refuses_changed_settings(mdm_dir, tmp_path):
    GRPOTrainer.from_config(cfg(mdm_dir, tmp_path, max_steps=1), progress=False).train()
    with pytest.raises(ValueError, match="settings differ"):
        GRPOTrainer.from_config(cfg(mdm_dir, tmp_path, max_steps=1, epsilon=0.3), progress=False).train(resume=True)


def test_non_finite_loss_is_skipped_and_counted(mdm_dir, tmp_path):
    trainer = GRPOTrainer.from_config(
        cfg(mdm_dir, tmp_path, max_steps=1), reward_fn=lambda c, e, **kw: [math.nan] * len(c), progress=False
    )
    before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    with pytest.warns(UserWarning, match="non-finite loss"):
        trainer.train()
    assert trainer.skipped > 0
    for k, v in trainer.policy.state_dict().items():
        assert torch.equal(v, before[k])


def test_bad_reference_and_scheduler_are_explained(mdm_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown reference 'conf'"):
        Reference("conf")
    with pytest.raises(ValueError, match=r"lr_scheduler_type \(--lr-scheduler-type\) must be one of constant, cosine"):
        GRPOTrainer.from_config(cfg(mdm_dir, tmp_path, lr_scheduler_type="linear"), progress=False)


def test_coupling_is_pretrained_before_grpo_and_saved(mdm_dir, tmp_path):
    config = cfg(mdm_dir, tmp_path, max_steps=1, **COUPLING)
    fresh = GRPOTrainer.from_config(config, progress=False).policy
    assert fresh.coupling.weight.shape == (16, 16)  # the 4x4 grid's positions
    train_policy(config, progress=False)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[1] == "coupling_nll" and float(rows[1].split(",")[1]) > 0
    loaded = load_policy(tmp_path / "last")
    assert loaded.config.coupling_rounds == 2
    assert not torch.equal(loaded.coupling.weight, fresh.coupling.weight)


def test_pretrain_command_then_init_policy_is_one_train_policy_run(mdm_dir, tmp_path):
    """The coupling pre-training is its own step: `pretrain-coupling` + `train-policy --init-policy` gives the
    weights of one `train-policy` run; the pre-trained checkpoint changed the coupling only."""
    one = train_policy(cfg(mdm_dir, tmp_path / "one", max_steps=2, **COUPLING), progress=False)
    pre = pretrain_coupling(cfg(mdm_dir, tmp_path / "pre", **COUPLING), progress=False)
    two = train_policy(cfg(mdm_dir, tmp_path / "two", max_steps=2, init_policy=str(pre), **COUPLING), progress=False)
    a, b = load_policy(one / "last").state_dict(), load_policy(two / "last").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [(run / "metrics.csv").read_text().splitlines() for run in (one, two)]
    assert [r.split(",")[:-1] for r in rows[0]] == [r.split(",")[:-1] for r in rows[1]]  # all but the seconds
    pretrained, fresh = (
        load_policy(pre),
        GRPOTrainer.from_config(cfg(mdm_dir, tmp_path / "f", **COUPLING), progress=False).policy,
    )
    assert len(pretrained.record["coupling_nll"]) == COUPLING["coupling_epochs"]
    for k, v in fresh.state_dict().items():
        assert torch.equal(pretrained.state_dict()[k], v) != k.startswith("coupling."), k
    with pytest.raises(ValueError, match=r"other settings than this run's upo policy \(d_model: 16 there, 8 here"):
        GRPOTrainer.from_config(
            cfg(mdm_dir, tmp_path / "x", init_policy=str(pre), **{**COUPLING, "d_model": 8}), progress=False
        )
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        pretrain_coupling(cfg(mdm_dir, tmp_path / "pre", **COUPLING), progress=False)
    with pytest.raises(ValueError, match="no coupling to pre-train"):
        pretrain_coupling(cfg(mdm_dir, tmp_path / "y"), progress=False)


def test_coupling_settings_are_checked(mdm_dir, tmp_path):
    with pytest.raises(ValueError, match=r"coupling_epochs \(--coupling-epochs\) must be an integer >= 1"):
        GRPOTrainer.from_config(cfg(mdm_dir, tmp_path, coupling_rounds=2, coupling_epochs=0), progress=False)
    with pytest.raises(ValueError, match="needs a base temperature"):
        GRPOTrainer.from_config(cfg(mdm_dir, tmp_path, coupling_rounds=2, base_temperature=None), progress=False)


@pytest.mark.parametrize("policy", ["bernoulli", "plackett-luce"])
def test_parallel_policies_read_coupled_confidences(mdm_dir, tmp_path, policy):
    """A parallel policy with a coupling reads q_i(token_i) (network and fallback) and pre-trains it too."""
    trainer = GRPOTrainer.from_config(cfg(mdm_dir, tmp_path, policy=policy, max_steps=1, **COUPLING), progress=False)
    pol = trainer.policy
    buf, _ = trainer.rollout(trainer.prompts(0))
    obs = buf.take(torch.arange(4))
    assert torch.allclose(pol.read_confidence(obs), pol.coupling.token_log_prob(obs).exp())
    with torch.no_grad():
        pol.coupling.weight.fill_(3.0)  # a strong coupling changes what the network reads
    assert not torch.allclose(pol.read_confidence(obs), obs["confidence"])
    assert not torch.equal(pol.scores(obs), pol.scorer(obs, obs["confidence"])[0] / pol.temperature)
    train_policy(cfg(mdm_dir, tmp_path / "run", policy=policy, max_steps=1, **COUPLING), progress=False)
    assert "coupling_nll" in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]


def test_coupling_on_a_task_without_targets_fails_before_any_rollout(mdm_dir, tmp_path, monkeypatch):
    from unmask.tasks.base import Task
    from unmask.tasks.sudoku import SudokuTask

    monkeypatch.setattr(SudokuTask, "targets", Task.targets)
    rollouts = []
    monkeypatch.setattr("unmask.training.imitation.generate", lambda *a, **k: rollouts.append(1))
    with pytest.raises(ValueError, match="no per-position target tokens.*--coupling-prompts 0"):
        train_policy(cfg(mdm_dir, tmp_path, **COUPLING), progress=False)
    assert not rollouts
    assert not GRPOTrainer.from_config(
        cfg(mdm_dir, tmp_path, **{**COUPLING, "coupling_prompts": 0}), progress=False
    ).needs_pretraining


def test_the_trainer_takes_its_objects_and_from_config_builds_the_same(mdm_dir, tmp_path):
    """GRPOTrainer(policy, model, task, config) trains the objects it is given; from_config builds equal ones."""
    from unmask.models import load_model
    from unmask.tasks import get_task
    from unmask.training.grpo import build_policy, generation_length, held_out_examples

    config = cfg(mdm_dir, tmp_path / "a", max_steps=1)
    built = GRPOTrainer.from_config(config, progress=False)
    model, task = load_model(mdm_dir), get_task("sudoku4")
    torch.manual_seed(config.run.seed)
    policy = build_policy(config, model, generation_length(task, model, held_out_examples(task, config)))
    given = GRPOTrainer(policy, model, task, config, progress=False)
    assert given.policy is policy and given.model is model and given.task is task
    for (name, a), (_, b) in zip(built.policy.state_dict().items(), policy.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="the policy is a upo policy but the config trains bernoulli"):
        GRPOTrainer(policy, model, task, cfg(mdm_dir, tmp_path / "b", policy="bernoulli"), progress=False)


def test_both_kl_estimators_are_logged_under_their_names():
    """approx_kl is Schulman's k3 = (r - 1) - log r (>= 0, TRL's name); kl_k1 = -log r, signed."""
    from unmask.training.grpo import RolloutBuffer, upo_loss

    class Fixed(torch.nn.Module):
        def __init__(self, logp):
            super().__init__()
            self.logp = logp

        def scores(self, obs):
            return obs["x"]

        def log_prob(self, obs, action, scores=None):
            return self.logp

        def entropy(self, obs, scores):
            return torch.zeros(len(self.logp))

    old, new = torch.tensor([-1.0, -2.0, -0.5]), torch.tensor([-1.2, -1.5, -0.5])
    buf = RolloutBuffer(
        obs={"x": torch.zeros(3, 1)},
        action=torch.zeros(3, 1, dtype=torch.long),
        old_log_prob=old,
        traj=torch.tensor([0, 0, 1]),
        advantage=torch.tensor([1.0, -1.0]),
        length=torch.tensor([2, 1]),
    )
    _, stats = upo_loss(Fixed(new), buf, torch.arange(3), Reference("none"), 0.2, None, 2)
    r = (new - old).exp()
    assert stats["kl_k1"] == pytest.approx(float((old - new).mean()))
    assert stats["approx_kl"] == pytest.approx(float(((r - 1) - (new - old)).mean())) and stats["approx_kl"] > 0
