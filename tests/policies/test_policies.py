import pytest
import torch

from unmask.engine.state import StepState
from unmask.engine.streams import SharedStream
from unmask.policies import get_policy


def make_state(confidence, candidates=None, num_transfer=1, probs=None, seed=0, transfer_probability=None):
    conf = torch.tensor(confidence, dtype=torch.float32)
    b, L = conf.shape
    if probs is None:
        probs = torch.stack([conf, 1 - conf], -1)
    cand = torch.ones(b, L, dtype=torch.bool) if candidates is None else torch.tensor(candidates)
    draws = SharedStream(torch.Generator().manual_seed(seed)).bind(torch.arange(b), 0, L, torch.device("cpu"))
    p = None if transfer_probability is None else torch.full((b,), transfer_probability)
    return StepState(
        probs=probs,
        tokens=torch.zeros(b, L, dtype=torch.long),
        confidence=conf,
        candidates=cand,
        masked=cand,
        num_transfer=torch.full((b,), num_transfer),
        total=cand.sum(1),
        draws=draws,
        transfer_probability=p,
    )


def picked(policy, state):
    return [row.nonzero().squeeze(1).tolist() for row in get_policy(policy).select(state)]


def test_confidence_picks_most_confident_candidates():
    state = make_state([[0.2, 0.9, 0.8, 0.95]], candidates=[[True, True, True, False]], num_transfer=2)
    assert picked("confidence", state) == [[1, 2]]


def test_margin_and_entropy_use_the_full_distribution():
    probs = torch.tensor([[[0.5, 0.49, 0.01], [0.45, 0.1, 0.45], [0.4, 0.3, 0.3]]])
    state = make_state([[0.5, 0.45, 0.4]], probs=probs)
    assert picked("margin", state) == [[2]]  # margins .01, 0, .1
    assert picked("entropy", state) == [[0]]  # lowest entropy


def test_left_to_right_and_random():
    state = make_state([[0.1, 0.9, 0.5, 0.7]], candidates=[[False, True, True, True]])
    assert picked("left_to_right", state) == [[1]]
    draws = {tuple(picked("random", make_state([[0.5] * 6], seed=s))[0]) for s in range(20)}
    assert len(draws) > 3


def test_threshold_reveals_all_above_or_the_best():
    assert picked("threshold:0.7", make_state([[0.75, 0.2, 0.9]])) == [[0, 2]]
    assert picked("threshold:0.95", make_state([[0.75, 0.2, 0.9]])) == [[2]]


def test_topk_softmax_samples_only_among_top_k():
    seen = set()
    for s in range(50):
        seen |= set(picked("topk_softmax:k=2:temperature=1.0", make_state([[0.1, 0.9, 0.8, 0.3]], seed=s))[0])
    assert seen == {1, 2}


def test_specs_are_parsed_and_bad_specs_explained():
    assert get_policy("threshold:0.8").threshold == 0.8
    p = get_policy("topk_softmax:3:temperature=0.5")
    assert (p.k, p.temperature) == (3, 0.5)
    with pytest.raises(ValueError, match="valid policies: random, confidence"):
        get_policy("max_conf")
    with pytest.raises(ValueError, match=r"threshold must be a finite number > 0 and <= 1"):
        get_policy("threshold:1.5")
    with pytest.raises(ValueError, match=r"threshold must be a finite number"):
        get_policy("threshold:abc")
    with pytest.raises(ValueError, match="unknown argument 'tau'"):
        get_policy("threshold:tau=0.5")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("topk_softmax:temperature=nan", "temperature must be a finite number > 0"),
        ("topk_softmax:temperature=inf", "temperature must be a finite number > 0"),
        ("topk_softmax:k=2.5", "k must be an integer >= 1"),
        ("topk_softmax:k=0", "k must be an integer >= 1"),
        ("factor:0", "factor must be a finite number > 0"),
        ("eb:-1", "gamma must be a finite number >= 0"),
        ("eb:nan", "gamma must be a finite number >= 0"),
        ("confidence:alg_temp=-1", "alg_temp must be a finite number >= 0"),
    ],
)
def test_bad_policy_arguments_get_one_clear_error(spec, message):
    with pytest.raises(ValueError, match=message):
        get_policy(spec)


def test_factor_rule_follows_fast_dllm():
    # sorted 0.99, 0.8, 0.3, 0.2; bounds 1 - f/(j + 2) at f=1: j=1: 0.667 (0.8 passes), j=2: 0.75 (0.3 fails) -> 2
    assert picked("factor:1", make_state([[0.2, 0.99, 0.3, 0.8]])) == [[1, 3]]
    # the first failure at the last index reveals all (upstream's rule): 0.9, 0.8 pass, 0.1 < 0.75 fails at j=2=n-1
    assert picked("factor:1", make_state([[0.1, 0.9, 0.8]])) == [[0, 1, 2]]
    assert picked("factor:0.01", make_state([[0.5, 0.4, 0.3, 0.2]])) == [[0]]


def test_entropy_bounded_reveals_the_largest_low_entropy_prefix():
    probs = torch.tensor([[[1.0, 0.0], [0.5, 0.5], [0.9, 0.1], [0.99, 0.01]]])
    conf = probs.max(-1).values.tolist()
    # entropies 0, 0.693, 0.325, 0.056; sorted: 0 (0), 0.056 (3), 0.325 (2), 0.693 (1)
    assert picked("eb:0", make_state(conf, probs=probs)) == [[0, 3]]  # a zero-entropy token is free
    assert picked("eb:0.06", make_state(conf, probs=probs)) == [[0, 2, 3]]  # 0 + 0.056 <= 0.06: three tokens
    assert picked("eb:0.05", make_state(conf, probs=probs)) == [[0, 3]]
    assert picked("eb:10", make_state(conf, probs=probs)) == [[0, 1, 2, 3]]
    assert picked("eb:0", make_state([[0.5, 0.5]], probs=torch.full((1, 2, 2), 0.5))) == [[0]]  # at least one


def test_origin_reveals_each_position_with_the_transfer_probability():
    counts = [len(picked("origin", make_state([[0.5] * 40], seed=s, transfer_probability=0.25))[0]) for s in range(30)]
    assert 5 < sum(counts) / len(counts) < 15
    assert picked("origin", make_state([[0.5] * 5], transfer_probability=1.0)) == [[0, 1, 2, 3, 4]]


def test_alg_temp_draws_in_proportion_to_the_tempered_scores():
    seen = [
        tuple(picked("confidence:alg_temp=0.05", make_state([[0.1, 0.9, 0.85, 0.2]], seed=s))[0]) for s in range(40)
    ]
    assert set(seen) == {(1,), (2,)}
    assert (
        get_policy("confidence:alg_temp=0.5").capabilities.stochastic
        and not get_policy("confidence").capabilities.stochastic
    )
