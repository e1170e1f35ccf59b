import pytest
import torch

from unmask.engine import StepState
from unmask.policies import get_policy


def make_state(confidence, candidates=None, num_transfer=1, probs=None, seed=0):
    conf = torch.tensor(confidence, dtype=torch.float32)
    b, L = conf.shape
    if probs is None:
        probs = torch.stack([conf, 1 - conf], -1)
    cand = torch.ones(b, L, dtype=torch.bool) if candidates is None else torch.tensor(candidates)
    return StepState(
        probs=probs, tokens=torch.zeros(b, L, dtype=torch.long), confidence=conf, candidates=cand, masked=cand,
        num_transfer=torch.full((b,), num_transfer), step=torch.zeros(b, dtype=torch.long),
        total=cand.sum(1), generator=torch.Generator().manual_seed(seed),
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
    with pytest.raises(ValueError, match=r"threshold must lie in \(0, 1\]"):
        get_policy("threshold:1.5")
    with pytest.raises(ValueError, match="unknown argument 'tau'"):
        get_policy("threshold:tau=0.5")
