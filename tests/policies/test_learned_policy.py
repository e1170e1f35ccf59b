import itertools
import math
from dataclasses import replace

import pytest
import torch

from unmask.engine.config import SamplingConfig
from unmask.engine.loop import generate
from unmask.policies import get_policy
from unmask.policies.distributions import plackett_luce_log_prob
from unmask.policies.learned import LearnedPolicy, load_policy
from unmask.tasks import get_task


def test_plackett_luce_is_a_distribution():
    scores = torch.tensor([[0.3, -1.0, 2.0, 0.5]])
    allowed = torch.tensor([[True, True, True, False]])
    for k in (1, 2):
        total = sum(
            plackett_luce_log_prob(scores, allowed, torch.tensor([list(order)])).exp().item()
            for order in itertools.permutations([0, 1, 2], k)
        )
        assert total == pytest.approx(1.0, abs=1e-6)
    single = plackett_luce_log_prob(scores, allowed, torch.tensor([[2]]))
    assert single.item() == pytest.approx(
        math.log(math.exp(2) / (math.exp(0.3) + math.exp(-1) + math.exp(2))), abs=1e-6
    )


def test_untrained_upo_decodes_like_max_confidence(tiny_sudoku4_model):
    """Zero-initialised residual: greedy g_phi is g_conf (the 'start as the reference' design)."""
    task = get_task("sudoku4")
    x = task.encode(task.generate(16, seed=2, difficulty=6), tiny_sudoku4_model).input_ids
    policy = LearnedPolicy.for_model("upo", tiny_sudoku4_model, d_model=16, n_head=2)
    a = generate(tiny_sudoku4_model, x, policy).sequences
    b = generate(tiny_sudoku4_model, x, get_policy("confidence")).sequences
    assert torch.equal(a, b)


def test_topk_realisation_only_picks_among_top_k(tiny_sudoku4_model):
    task = get_task("sudoku4")
    x = task.encode(task.generate(8, seed=4, difficulty=4), tiny_sudoku4_model).input_ids
    policy = LearnedPolicy.for_model("upo", tiny_sudoku4_model, d_model=16, n_head=2, top_k=2, base_temperature=None)
    policy = policy.with_options(mode="sample")
    out = generate(tiny_sudoku4_model, x, policy, record=True, generator=torch.Generator().manual_seed(0))
    for rec in out.trajectory:
        assert (rec.data["allowed"].sum(1) <= 2).all()
        assert (rec.reveal <= rec.data["allowed"]).all()
        # uniform over the Top-K set when untrained without base term
        assert torch.allclose(rec.data["old_log_prob"], -rec.data["allowed"].sum(1).float().log())


def test_recorded_log_prob_matches_recomputation(tiny_sudoku4_model):
    task = get_task("sudoku4")
    x = task.encode(task.generate(6, seed=5, difficulty=5), tiny_sudoku4_model).input_ids
    policy = LearnedPolicy.for_model("upo", tiny_sudoku4_model, d_model=16, n_head=2)
    torch.nn.init.normal_(policy.scorer.mlp[-1].weight, std=0.5)
    policy = policy.with_options(mode="sample")
    out = generate(
        tiny_sudoku4_model, x, policy, SamplingConfig(steps=4), record=True, generator=torch.Generator().manual_seed(1)
    )
    for rec in out.trajectory:
        obs = {k: v for k, v in rec.data.items() if k not in ("action", "old_log_prob")}
        assert torch.allclose(policy.log_prob(obs, rec.data["action"]), rec.data["old_log_prob"], atol=1e-5)
        assert torch.equal((rec.data["action"] >= 0).sum(1), rec.reveal.sum(1))


def test_save_load_and_model_mismatch(tmp_path, tiny_sudoku4_model):
    policy = LearnedPolicy.for_model("upo", tiny_sudoku4_model, d_model=16, n_head=2)
    policy.save(tmp_path / "p")
    loaded = load_policy(tmp_path / "p")
    for a, b in zip(policy.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    loaded.check_model(tiny_sudoku4_model)
    from unmask.models import MaskedTransformer, TransformerConfig

    other = MaskedTransformer(TransformerConfig(10, 9, get_task("sudoku9").coordinates(), 1, 2, 32, task="sudoku9"))
    with pytest.raises(ValueError, match="policy was trained with MDM"):
        loaded.check_model(other)
    with pytest.raises(FileNotFoundError, match="no policy checkpoint"):
        load_policy(tmp_path / "missing")


def test_coupling_observation_sees_each_position_distribution_or_written_token(tiny_sudoku4_model):
    task = get_task("sudoku4")
    x = task.encode(task.generate(4, seed=3, difficulty=6), tiny_sudoku4_model).input_ids
    policy = LearnedPolicy.for_model(
        "upo", tiny_sudoku4_model, d_model=16, n_head=2, coupling_rounds=1, coupling_length=16
    )
    out = generate(tiny_sudoku4_model, x, policy, record=True)
    for rec in out.trajectory[:3]:
        obs = rec.data["token_probs"]
        masked = rec.data["allowed"]  # one block: the candidates are the masked positions
        assert torch.allclose(obs.sum(-1), torch.ones(obs.shape[:2]), atol=1e-5)
        assert (obs[~masked].max(-1).values == 1).all()  # revealed: the one-hot of the written token
        assert (obs[masked][:, tiny_sudoku4_model.mask_id] == 0).all()  # masked: p_theta(x_0 | x_n)
    first = out.trajectory[0].data["token_probs"][0]
    clues = x[0] != tiny_sudoku4_model.mask_id
    assert torch.equal(first[clues].argmax(-1), x[0][clues])


def test_coupling_policy_scores_refined_marginals(tiny_sudoku4_model, tmp_path):
    """The base score is log q_i(token_i) / tau0 with q the coupling's refinement; a strong coupling between
    two masked cells that want the same digit lowers both their scores, and a checkpoint restores it."""
    task = get_task("sudoku4")
    x = task.encode(task.generate(4, seed=3, difficulty=6), tiny_sudoku4_model).input_ids
    policy = LearnedPolicy.for_model(
        "upo", tiny_sudoku4_model, d_model=16, n_head=2, coupling_rounds=3, coupling_length=16
    )
    rec = generate(tiny_sudoku4_model, x, policy, record=True).trajectory[0]
    obs = rec.data
    assert {"token_probs", "masked", "tokens"} <= obs.keys()
    i, j = 0, 1
    obs = {k: v[:1].clone() for k, v in obs.items()}
    obs["masked"][0, [i, j]] = obs["allowed"][0, [i, j]] = True
    obs["token_probs"][0, [i, j]] = torch.tensor([0.9, 0.05, 0.03, 0.02, 0.0])
    obs["tokens"][0, [i, j]] = 0
    before = policy.scores(obs)
    with torch.no_grad():
        policy.coupling.weight[i, j] = policy.coupling.weight[j, i] = 5.0
    after = policy.scores(obs)
    assert after[0, i] < before[0, i] - 10 and after[0, j] < before[0, j] - 10
    log_q = policy.coupling(obs["token_probs"], obs["masked"])[0, i, 0]
    assert after[0, i].item() == pytest.approx(log_q.item() / 0.05, abs=1e-3)  # the residual is still zero
    policy.save(tmp_path / "p")
    loaded = load_policy(tmp_path / "p")
    assert torch.equal(loaded.scores(obs), after)


def test_coupling_refuses_large_vocabularies(tiny_sudoku4_model, monkeypatch):
    monkeypatch.setattr(tiny_sudoku4_model, "vocab_size", 50_000)
    with pytest.raises(ValueError, match="--coupling-rounds 0"):
        LearnedPolicy.for_model("upo", tiny_sudoku4_model, coupling_rounds=2, coupling_length=16)


def test_options_give_a_view_that_shares_the_weights(tiny_sudoku4_model):
    """Decoding options never change the policy: a view decodes with them, on the same parameters."""
    policy = LearnedPolicy.for_model("upo", tiny_sudoku4_model, d_model=16, n_head=2)
    view = policy.with_options(mode="sample", sigma=0.1)
    assert (policy.mode, policy.sigma, policy.capabilities.stochastic) == ("greedy", 0.0, False)
    assert (view.mode, view.sigma, view.capabilities.stochastic) == ("sample", 0.1, True)
    with torch.no_grad():
        policy.scorer.mlp[-1].bias.fill_(0.25)
    assert view.scorer.mlp[-1].bias.item() == 0.25
    assert set(policy.OPTIONS) == {"mode", "sigma", "bound"}  # g_phi has no tau_pi and no alpha input
    with pytest.raises(ValueError, match="unknown option 'temperature=2'; upo policies take mode=greedy|sample"):
        policy.with_options(temperature=2)
    with pytest.raises(ValueError, match="sigma takes FLOAT >= 0"):
        policy.with_options(sigma="x")


def test_checkpoints_of_the_earlier_layout_load(tmp_path, tiny_sudoku4_model):
    """unmask 0.1 named g_phi's layers at the top level and f_phi's under ``net.``, a STOP head ``stop_head.``."""
    from safetensors.torch import load_file, save_file

    for kind, settings in (("upo", dict(n_head=2)), ("plackett-luce", dict(stop_logit=None))):
        policy = LearnedPolicy.for_model(kind, tiny_sudoku4_model, d_model=16, **settings)
        with torch.no_grad():
            for p in policy.parameters():
                p.add_(torch.randn_like(p))
        policy.save(tmp_path / kind)
        weights = tmp_path / kind / "model.safetensors"
        old = {
            k.replace("scorer.", "" if kind == "upo" else "net.").replace("action.", ""): v
            for k, v in load_file(weights).items()
        }
        assert any(k.startswith("stop_head.") for k in old) == (kind == "plackett-luce")
        save_file(old, weights)
        (tmp_path / kind / "manifest.json").unlink()
        loaded = load_policy(tmp_path / kind)
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in policy.state_dict().items())


def test_a_zero_count_step_reveals_the_most_confident_candidate(tiny_sudoku4_model):
    """Dream's timestep schedule with many steps gives early steps a count of 0; g_phi then reveals the most
    confident candidate (the fallback) instead of stopping the engine."""
    task = get_task("sudoku4")
    x = task.encode(task.generate(4, seed=3, difficulty=6), tiny_sudoku4_model).input_ids
    masks = (x == tiny_sudoku4_model.mask_id).sum(1)
    policy = LearnedPolicy.for_model("upo", tiny_sudoku4_model, d_model=16, n_head=2)
    out = generate(
        tiny_sudoku4_model, x, policy, SamplingConfig(sampler="dream", steps=4 * int(masks.max())), record=True
    )
    assert (out.sequences != tiny_sudoku4_model.mask_id).all() and (out.nfe <= masks).all()
    zero = [rec for rec in out.trajectory if (rec.data["action"] < 0).all(1).any()]
    assert zero and all(rec.reveal.sum(1).min() == 1 for rec in zero)


def test_per_row_policy_inputs_are_checked(tiny_sudoku4_model):
    task = get_task("sudoku4")
    x = task.encode(task.generate(3, seed=3, difficulty=6), tiny_sudoku4_model).input_ids
    with pytest.raises(
        ValueError, match=r"policy input 'alpha' must be a tensor with one entry per row, shape \(3, ...\)"
    ):
        generate(tiny_sudoku4_model, x, get_policy("confidence"), inputs={"alpha": torch.zeros(2)})


def test_the_correctness_bound_reveals_the_longest_prefix_it_allows(tiny_sudoku4_model, tmp_path):
    """bound=EPS: the largest k with sum_{r<=k} log sigmoid(e^a u_(r) + b) >= log(1 - EPS), at least one."""
    policy = LearnedPolicy.for_model("upo", tiny_sudoku4_model, d_model=16, n_head=2)
    with pytest.raises(ValueError, match="only a policy trained by imitation"):
        policy.with_options(bound=0.1)
    policy.config = replace(policy.config, calibration=[0.0, 0.0])
    u = torch.tensor([[4.0, 3.0, -1.0, 2.0], [-5.0, -6.0, 0.0, 0.0]])
    allowed = torch.tensor([[True, True, True, True], [True, True, False, False]])
    # row 0: log sigmoid 4, 3, 2 = -0.018, -0.049, -0.127: two stay above log 0.9 = -0.105; row 1: none, so one
    assert policy.with_options(bound=0.1).bound_count(u, allowed).tolist() == [2, 1]
    assert policy.with_options(bound=0.2).bound_count(u, allowed).tolist() == [3, 1]
    for bad, message in (({"bound": 1}, r"probability in \[0, 1\)"), ({"bound": 0.1, "mode": "sample"}, "greedy")):
        with pytest.raises(ValueError, match=message):
            policy.with_options(**bad)

    task = get_task("sudoku4")
    x = task.encode(task.generate(6, seed=7, difficulty=6), tiny_sudoku4_model).input_ids
    greedy = generate(tiny_sudoku4_model, x, policy)
    policy.config = replace(policy.config, calibration=[0.0, -50.0])  # no token is ever sure: one per step
    one = generate(tiny_sudoku4_model, x, policy.with_options(bound=0.1))
    assert torch.equal(one.sequences, greedy.sequences) and torch.equal(one.nfe, greedy.nfe)
    policy.config = replace(policy.config, calibration=[0.0, 50.0])  # every token sure: all at once
    assert (generate(tiny_sudoku4_model, x, policy.with_options(bound=0.1)).nfe == 1).all()
    policy.save(tmp_path / "p")
    assert load_policy(tmp_path / "p").config.calibration == [0.0, 50.0]
