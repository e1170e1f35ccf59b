"""Imitation of the oracle (unmask.training.imitation) and the planner (unmask.policies.planner): the objective of each
action family, a planner that starts as its scorer, and the phase inside train-policy (checkpoints, log, exact
resume); the DAgger pipeline of issue 32 (the coupling's cliques as planner inputs, a round-0 actor, rounds that
aggregate)."""

import csv
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from kill_harness import policy_config

from unmask.api import train_policy
from unmask.core.checkpoint import load_tensors
from unmask.models import load_model
from unmask.policies.learned import LearnedPolicy, load_policy
from unmask.policies.planner import Planner, cliques
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


def killed_after_round(monkeypatch, r, start) -> None:
    """``start()`` a run that is killed once imitation round ``r``'s checkpoint is written."""
    real = imitation.Imitation.save

    def stop(self):
        real(self)
        if self.round == r:
            raise KeyboardInterrupt

    monkeypatch.setattr(imitation.Imitation, "save", stop)
    with pytest.raises(KeyboardInterrupt):
        start()
    monkeypatch.setattr(imitation.Imitation, "save", real)


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

    killed_after_round(monkeypatch, 1, lambda: run(tmp_path / "run", **settings))
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


# ----- the DAgger pipeline of issue 32: clique inputs, a round-0 actor, aggregation -----


def block_strength(sizes, inside=0.9, outside=0.1):
    """A (L, L) strength with blocks of ``sizes`` along the diagonal (zero diagonal)."""
    blocks = torch.block_diag(*[torch.full((s, s), inside) for s in sizes])
    return torch.where(blocks > 0, blocks, torch.full_like(blocks, outside)).fill_diagonal_(0.0)


def test_cliques_recovers_the_blocks_of_a_block_diagonal_strength_and_respects_the_minimum_size():
    members = cliques(block_strength([5, 3, 5]), threshold=0.3, min_size=4)
    expected = torch.zeros(2, 13)
    expected[0, :5], expected[1, 8:] = 1.0, 1.0
    assert torch.equal(members, expected)
    assert len(cliques(block_strength([5, 3, 5]), threshold=0.3, min_size=3)) == 3
    assert len(cliques(block_strength([5, 3, 5]), threshold=0.05, min_size=3)) == 1  # every pair an edge
    with pytest.raises(ValueError, match="no clique of >= 6 positions .*lower --clique-threshold or --clique-min-size"):
        cliques(block_strength([5, 3, 5]), threshold=0.3, min_size=6)


def cocktail_party(pairs: int) -> torch.Tensor:
    """Every pair an edge but i, i + pairs: 2^pairs maximal cliques, each position in half of them."""
    strength = 1.0 - torch.eye(2 * pairs)
    strength[torch.arange(pairs), torch.arange(pairs) + pairs] = 0.0
    strength[torch.arange(pairs) + pairs, torch.arange(pairs)] = 0.0
    return strength


def test_a_coupling_graph_that_is_no_set_of_units_is_refused():
    """Dense graphs (zebra's coupling at 0.3: tens of thousands of overlapping cliques) have no units to read."""
    with pytest.raises(ValueError, match="64 cliques, 32 of them through one position: it is no set of units"):
        cliques(cocktail_party(6), threshold=0.3, min_size=3)
    with pytest.raises(ValueError, match="more than 384 maximal cliques: it is no set of units.*--planner-pairs"):
        cliques(cocktail_party(12), threshold=0.3, min_size=3)


def test_the_clique_planners_features_are_the_sorted_per_clique_sums():
    members = torch.zeros(3, 6)
    members[0, [0, 1, 2]], members[1, [2, 3, 4, 5]], members[2, [0, 2, 5]] = 1.0, 1.0, 1.0
    planner = Planner(6, channels=0, layers=0, d_model=8, n_head=2, cliques=members, slots=2)
    obs = observation(n=2, length=6, vocab=4)
    f = planner.features(obs, obs["token_probs"].amax(-1))[..., 7:]
    probs, tokens, masked = obs["token_probs"], obs["tokens"], obs["masked"]
    for n in range(2):
        for i in range(6):
            t = tokens[n, i]
            holding = [set(torch.nonzero(k).flatten().tolist()) for k in members if k[i]]
            s = sorted(
                (sum(probs[n, j, t].item() for j in k if masked[n, j] and j != i) for k in holding), reverse=True
            )
            w = sorted((sum(probs[n, j, t].item() for j in k if not masked[n, j]) for k in holding), reverse=True)
            pad = lambda v: (v + [0.0, 0.0])[:2]  # noqa: E731
            expected = torch.tensor(pad(s) + pad(w)) * masked[n, i]
            assert torch.allclose(f[n, i], expected, atol=1e-6), (n, i)


def coupled(model, **settings):
    """A bernoulli policy for ``model`` (sudoku4: 16 positions) with a coupling whose strength holds the four rows
    of the grid as its cliques."""
    policy = LearnedPolicy.for_model("bernoulli", model, d_model=8, coupling_rounds=1, coupling_length=16, **settings)
    with torch.no_grad():
        policy.coupling.weight.copy_(torch.where(block_strength([4] * 4) > 0.5, 2.0, -4.0))
    return policy


def test_a_clique_planner_checkpoint_reloads_to_identical_utilities(tmp_path):
    model = load_model("sudoku4")
    torch.manual_seed(0)
    policy = coupled(model, planner=True, planner_pairs="cliques", planner_length=16, planner_d_model=8)
    policy.use_cliques(cliques(policy.coupling.strength.detach(), 0.3, 4))
    assert (policy.config.planner_cliques, policy.config.planner_slots) == (4, 1)
    torch.nn.init.normal_(policy.planner.head[-1].weight)
    policy.save(tmp_path / "p")
    loaded = load_policy(tmp_path / "p")
    obs = {**observation(length=16, vocab=5), "time": torch.rand(3)}
    obs["confidence"] = obs["token_probs"].amax(-1)
    assert torch.equal(loaded.planner.cliques, policy.planner.cliques)
    assert policy.planner(obs, obs["confidence"]).abs().sum() > 0  # the planner takes part
    assert torch.equal(loaded.scores(obs), policy.scores(obs))


def test_the_actor_drives_the_rollout_while_the_learner_observes():
    from unmask.engine.policy import Policy
    from unmask.policies import get_policy
    from unmask.policies.oracle import correct

    model, task = load_model("sudoku4"), get_task("sudoku4")
    examples = task.generate(6, seed=1, difficulty=6)
    torch.manual_seed(0)
    learner = LearnedPolicy.for_model("bernoulli", model, d_model=8)
    confidence = get_policy("confidence")

    class Direct(Policy):  # max-confidence decoding, each step's mask and labels recorded as they are
        capabilities = replace(confidence.capabilities, needs_target=True)

        def act(self, state, record=False):
            data = {"masked": state.masked, "tokens": state.tokens, "gold": correct(state)} if record else {}
            return confidence.select(state), data

    states = imitation.collect_states(task, model, learner, examples, None, 0, actor=confidence, progress=False)
    direct = imitation.labelled_rollouts(task, model, Direct(), examples, None, 0, progress=False)
    for key in ("masked", "tokens", "gold", "target"):
        assert torch.equal(states[key], direct[key]), key
    assert "confidence" in states and "time" in states  # the learner's observation, not the actor's
    own = imitation.collect_states(task, model, learner, examples, None, 0, progress=False)
    assert len(own["masked"]) != len(states["masked"]) or not torch.equal(own["masked"], states["masked"])


def dagger_run(out, init, resume=False, **settings):
    """A tiny run of recipes/upo-dagger-sudoku9-small.yaml's pipeline on sudoku4."""
    pipeline = {
        "init_policy": str(init),
        "coupling_rounds": 1,
        "planner": True,
        "planner_pairs": "cliques",
        "clique_min_size": 4,
        "planner_d_model": 8,
        "planner_layers": 1,
        "imitation_actor": "confidence",
        "imitation_actor_prompts": 5,
        "imitation_rounds": 3,
        "imitation_prompts": 3,
        "imitation_epochs": 1,
        "imitation_aggregate": True,
        "imitation_mode": "greedy",
        "eval_size": 4,
        "max_steps": 1,
    }
    config = policy_config(out, **{**pipeline, **settings})
    return train_policy(config, resume=resume, progress=False)


@pytest.fixture
def coupled_checkpoint(tmp_path):
    torch.manual_seed(0)
    coupled(load_model("sudoku4")).save(tmp_path / "coupled", {})
    return tmp_path / "coupled"


def test_dagger_rounds_fit_on_every_earlier_rounds_states(tmp_path, monkeypatch, coupled_checkpoint):
    fitted = []
    real = imitation.Imitation.fit
    monkeypatch.setattr(imitation.Imitation, "fit", lambda self, states: fitted.append(states) or real(self, states))
    dagger_run(tmp_path / "run", coupled_checkpoint)
    saved = [load_tensors(tmp_path / "run" / imitation.PHASE / "states" / f"round-{r}.safetensors") for r in range(3)]
    assert sorted(saved[0]) == sorted(
        ["token_probs", "tokens", "masked", "allowed", "gold", "confidence_read", "scorer_logits"]
    )
    for r in range(3):
        for k, v in fitted[r].items():
            assert torch.equal(v, torch.cat([s[k] for s in saved[: r + 1]])), (r, k)
    with open(tmp_path / "run" / imitation.PHASE / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["fit_states"]) for r in rows[1:]] == [sum(len(s["gold"]) for s in saved[: r + 1]) for r in range(3)]
    policy = load_policy(tmp_path / "run" / "best")
    assert policy.config.planner_cliques == 4 and torch.equal(
        policy.planner.cliques, cliques(policy.coupling.strength.detach(), 0.3, 4)
    )
    # the fitted calibration goes with the weights (what bound=EPS reads), and GRPO starts from imitation's best
    phase = tmp_path / "run" / imitation.PHASE
    fitted_calibration = json.loads((phase / "last" / "trainer_state.json").read_text())["calibration"]
    assert load_policy(phase / "last").config.calibration == pytest.approx(fitted_calibration)
    best = load_policy(phase / "best").config.calibration
    assert load_policy(tmp_path / "run" / "last").config.calibration == best


@pytest.mark.slow
def test_an_interrupted_dagger_run_resumes_exactly(tmp_path, monkeypatch, coupled_checkpoint):
    dagger_run(tmp_path / "ref", coupled_checkpoint)
    killed_after_round(monkeypatch, 2, lambda: dagger_run(tmp_path / "run", coupled_checkpoint))
    dagger_run(tmp_path / "run", coupled_checkpoint, resume=True)
    for name in (f"{imitation.PHASE}/best", f"{imitation.PHASE}/last", "last"):
        assert (tmp_path / "run" / name / "model.safetensors").read_bytes() == (
            tmp_path / "ref" / name / "model.safetensors"
        ).read_bytes(), name
        assert load_policy(tmp_path / "run" / name).config == load_policy(tmp_path / "ref" / name).config, name


def test_bad_dagger_settings_are_one_clear_error(tmp_path, coupled_checkpoint):
    with pytest.raises(
        ValueError, match="cliques reads the cliques of the policy's learned coupling.*--coupling-rounds"
    ):
        policy_config(tmp_path / "a", planner=True, planner_pairs="cliques").validate()
    with pytest.raises(ValueError, match="cliques reads the cliques of a trained coupling.*--init-policy"):
        policy_config(tmp_path / "b", planner=True, planner_pairs="cliques", coupling_rounds=1).validate()
    with pytest.raises(ValueError, match="no clique of >= 5 positions.*lower --clique-threshold"):
        dagger_run(tmp_path / "c", coupled_checkpoint, clique_min_size=5)
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        dagger_run(tmp_path / "d", coupled_checkpoint, imitation_actor="nope")
