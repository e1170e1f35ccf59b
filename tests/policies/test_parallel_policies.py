import itertools
import math

import pytest
import torch

from unmask.engine.config import SamplingConfig
from unmask.engine.loop import generate
from unmask.engine.state import StepState
from unmask.models import MaskedTransformer, TransformerConfig
from unmask.policies import get_policy
from unmask.policies.configs import ParallelConfig, PlackettLuceConfig
from unmask.policies.distributions import bernoulli_log_prob, stop_log_prob
from unmask.policies.learned import LearnedPolicy, load_policy
from unmask.tasks import get_task

ALLOWED = torch.tensor([[True, True, False, True]])


def perturb(policy, std=0.3, seed=0):
    """Random weights everywhere (zero-initialised heads included), so no test passes by symmetry."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return policy


def puzzles(model, n=6, seed=5, clues=5):
    task = get_task("sudoku4")
    return task.encode(task.generate(n, seed=seed, difficulty=clues), model).input_ids


def test_bernoulli_log_probs_sum_to_one_over_every_subset_including_the_empty_one():
    logits = torch.tensor([[0.4, -1.3, 5.0, 2.2]])
    subsets = [s for r in range(4) for s in itertools.combinations([0, 1, 3], r)]
    actions = [torch.tensor([list(s) or [-1]]) for s in subsets]
    total = sum(bernoulli_log_prob(logits, ALLOWED, a).exp().item() for a in actions)
    assert total == pytest.approx(1.0, abs=1e-6)
    empty = bernoulli_log_prob(logits, ALLOWED, torch.tensor([[-1]])).item()
    assert empty == pytest.approx(sum(math.log(1 - 1 / (1 + math.exp(-b))) for b in (0.4, -1.3, 2.2)), abs=1e-6)


def test_stop_plackett_luce_log_probs_sum_to_one_over_nonempty_ordered_subsets():
    scores = torch.tensor([[0.4, -1.3, 9.0, 2.2, -0.5]])  # last column: STOP utility
    orders = [o for r in range(1, 4) for o in itertools.permutations([0, 1, 3], r)]
    total = sum(
        stop_log_prob(scores, ALLOWED, torch.tensor([list(o) + [-1] * (3 - len(o))])).exp().item() for o in orders
    )
    assert total == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda m: LearnedPolicy.for_model("bernoulli", m, d_model=16, temperature=0.7),
        lambda m: LearnedPolicy.for_model("bernoulli", m, d_model=16, alpha_range=[0.0, 4.0], base_threshold=None),
        lambda m: LearnedPolicy.for_model("plackett-luce", m, d_model=16, stop_logit=None),
        lambda m: LearnedPolicy.for_model("plackett-luce", m, d_model=16, stop_logit=1.5, temperature=2.0),
        lambda m: LearnedPolicy.for_model("plackett-luce", m, d_model=16, count="schedule"),
    ],
    ids=["bernoulli", "bernoulli-alpha", "pl-learned-stop", "pl-fixed-stop", "pl-schedule"],
)
def test_recorded_log_probs_match_recomputation(tiny_sudoku4_model, make):
    policy = perturb(make(tiny_sudoku4_model))
    alpha = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 0.5])  # per-row inputs; read by the conditioned policy only
    x = puzzles(tiny_sudoku4_model)
    out = generate(
        tiny_sudoku4_model,
        x,
        policy,
        SamplingConfig(steps=4),
        record=True,
        generator=torch.Generator().manual_seed(1),
        inputs={"alpha": alpha},
    )
    assert (out.nfe <= (x == tiny_sudoku4_model.mask_id).sum(1)).all()
    for rec in out.trajectory:
        obs = {k: v for k, v in rec.data.items() if k not in ("action", "old_log_prob")}
        with torch.no_grad():
            again = policy.log_prob(obs, rec.data["action"])
        assert torch.allclose(again, rec.data["old_log_prob"], atol=1e-5)
        assert torch.isfinite(again).all()
        drawn = (rec.data["action"] >= 0).sum(1)
        assert (rec.reveal.sum(1) == drawn.clamp(min=1)).all()  # the fallback adds one only to empty draws
        if policy.capabilities.conditioned:
            assert torch.equal(obs["alpha"], alpha[rec.rows])
        else:
            assert "alpha" not in obs


def test_empty_bernoulli_draws_fall_back_to_max_confidence(tiny_sudoku4_model):
    """A policy that never draws reveals the most confident position each step: max-confidence decoding,
    with the all-zeros event recorded as the action."""
    policy = LearnedPolicy.for_model("bernoulli", tiny_sudoku4_model, d_model=16, base_threshold=None)
    torch.nn.init.constant_(policy.scorer.head.bias, -30.0)
    x = puzzles(tiny_sudoku4_model)
    out = generate(tiny_sudoku4_model, x, policy, record=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.sequences, generate(tiny_sudoku4_model, x, get_policy("confidence")).sequences)
    for rec in out.trajectory:
        assert (rec.data["action"] == -1).all()
        assert (rec.data["old_log_prob"] > -1e-6).all()  # log P(all zeros) ~ 0


@pytest.mark.parametrize("kind", ["bernoulli", "plackett-luce"])
def test_untrained_greedy_policy_is_the_threshold_rule(tiny_sudoku4_model, kind):
    """The warm start: logit = gain (logit(c) - logit(0.9)), so greedy decoding is threshold:0.9."""
    policy = LearnedPolicy.for_model(kind, tiny_sudoku4_model, d_model=16)
    policy = policy.with_options(mode="greedy")
    x = puzzles(tiny_sudoku4_model, n=12, clues=4)
    ours = generate(tiny_sudoku4_model, x, policy)
    ref = generate(tiny_sudoku4_model, x, get_policy("threshold:0.9"))
    assert torch.equal(ours.sequences, ref.sequences) and torch.equal(ours.nfe, ref.nfe)


@pytest.mark.parametrize("kind", ["bernoulli", "plackett-luce"])
def test_untrained_alpha_conditioned_policy_is_a_family_of_threshold_rules(tiny_sudoku4_model, kind):
    """--base-threshold-hi: the warm start's threshold moves logit-linearly from 0.6 at alpha LO to 0.2 at HI."""
    policy = LearnedPolicy.for_model(
        kind, tiny_sudoku4_model, d_model=16, alpha_range=[0.0, 4.0], base_threshold=0.6, base_threshold_hi=0.2
    )
    policy = policy.with_options(mode="greedy")
    x = puzzles(tiny_sudoku4_model, n=12, clues=4)
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    at_3 = 1 / (1 + math.exp(-(logit(0.6) + 0.75 * (logit(0.2) - logit(0.6)))))  # 3/4 of the way, in logit space
    nfe = []
    for alpha, threshold in ((0.0, 0.6), (3.0, at_3), (4.0, 0.2)):
        ours = generate(tiny_sudoku4_model, x, policy.with_options(alpha=alpha))
        ref = generate(tiny_sudoku4_model, x, get_policy(f"threshold:{threshold}"))
        assert torch.equal(ours.sequences, ref.sequences) and torch.equal(ours.nfe, ref.nfe)
        nfe.append(ours.nfe.float().mean().item())
    assert nfe[0] >= nfe[1] >= nfe[2] and nfe[0] > nfe[2]  # the untrained policy answers alpha: faster at HI
    with pytest.raises(ValueError, match="needs an alpha range"):
        ParallelConfig(base_threshold_hi=0.6)
    with pytest.raises(ValueError, match=r"base_threshold_hi \(--base-threshold-hi\) must be a number in \(0, 1\)"):
        ParallelConfig(alpha_range=[0.0, 1.0], base_threshold_hi=1.5)


def test_one_policy_runs_on_other_mdms_and_lengths(tmp_path, tiny_sudoku4_model):
    """Confidence-only inputs: a policy saved for a 9x9 MDM decodes 4x4 grids with another MDM (RoPE, no vocab)."""
    big = MaskedTransformer(TransformerConfig(10, 9, get_task("sudoku9").coordinates(), 1, 2, 32, task="sudoku9"))
    for kind in ("bernoulli", "plackett-luce"):
        perturb(LearnedPolicy.for_model(kind, big, d_model=16, alpha_range=[0.0, 2.0])).save(tmp_path / kind)
        loaded = load_policy(tmp_path / kind)
        assert loaded.kind == kind and loaded.config.mdm_name == "sudoku9" and loaded.mode == "sample"
        loaded.check_model(tiny_sudoku4_model)
        loaded = loaded.with_options(alpha="0.5")
        out = generate(
            tiny_sudoku4_model, puzzles(tiny_sudoku4_model), loaded, generator=torch.Generator().manual_seed(0)
        )
        assert (out.sequences != tiny_sudoku4_model.mask_id).all()


def test_alpha_is_an_input(tiny_sudoku4_model):
    policy = perturb(LearnedPolicy.for_model("bernoulli", tiny_sudoku4_model, d_model=16, alpha_range=[0.0, 4.0]))
    n, length = 3, 16
    obs = {
        "confidence": torch.rand(n, length),
        "masked": torch.ones(n, length, dtype=torch.bool),
        "allowed": torch.ones(n, length, dtype=torch.bool),
        "time": torch.full((n,), 0.5),
    }
    low = policy.scores({**obs, "alpha": torch.zeros(n)})
    high = policy.scores({**obs, "alpha": torch.full((n,), 4.0)})
    assert not torch.allclose(low, high)


def test_bad_settings_and_inputs_are_explained(tiny_sudoku4_model):
    with pytest.raises(ValueError, match=r"temperature \(--policy-temperature\) must be a number > 0"):
        ParallelConfig(temperature=0.0)
    with pytest.raises(ValueError, match=r"alpha \(--alpha\) must be a number >= 0"):
        ParallelConfig(alpha=-1.0)
    with pytest.raises(ValueError, match="LO,HI with LO < HI"):
        ParallelConfig(alpha_range=[2.0, 1.0])
    with pytest.raises(ValueError, match="outside the alpha range"):
        ParallelConfig(alpha=5.0, alpha_range=[0.0, 1.0])
    with pytest.raises(ValueError, match="base_threshold"):
        ParallelConfig(base_threshold=1.0)
    with pytest.raises(ValueError, match="one of stop, schedule"):
        PlackettLuceConfig(count="k")
    fixed = LearnedPolicy.for_model("bernoulli", tiny_sudoku4_model, d_model=16)
    with pytest.raises(ValueError, match="trained at the fixed alpha 1"):
        fixed.with_options(alpha="0.5")
    with pytest.raises(ValueError, match="tau_pi"):
        fixed.with_options(temperature="-1")
    ranged = LearnedPolicy.for_model("bernoulli", tiny_sudoku4_model, d_model=16, alpha_range=[0.0, 2.0])
    with pytest.raises(ValueError, match=r"outside the range the policy was trained for \[0, 2\]"):
        ranged.with_options(alpha="3")
    n, length = 2, 16
    state = StepState(
        probs=torch.rand(n, length, 5),
        tokens=torch.zeros(n, length, dtype=torch.long),
        confidence=torch.randn(n, length) * 5,
        candidates=torch.ones(n, length, dtype=torch.bool),
        masked=torch.ones(n, length, dtype=torch.bool),
        num_transfer=torch.ones(n, dtype=torch.long),
        total=torch.full((n,), length),
        rows=torch.arange(n),
    )
    with pytest.raises(ValueError, match=r"reads MDM confidences \(probabilities in \[0, 1\]\)"):
        fixed.act(state)
