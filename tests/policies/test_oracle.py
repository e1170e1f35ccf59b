"""The ground-truth oracles (unmask.policies.oracle): what they reveal, that they need the gold answer, and
that on the shipped sudoku MDM they solve what the issue measured (a gold position exists at every step)."""

import math

import pytest
import torch

from unmask.engine.config import SamplingConfig
from unmask.engine.loop import generate
from unmask.engine.state import StepState
from unmask.evaluation.evaluate import run_policy
from unmask.models import load_model
from unmask.policies import get_policy
from unmask.policies.oracle import gt_margin
from unmask.tasks import get_task


def state(target=None, k=1):
    """3 candidates: position 0 is confident but wrong, 1 right and unsure, 2 right and sure; 3 is written."""
    probs = torch.tensor([[[0.9, 0.1, 0.0], [0.2, 0.5, 0.3], [0.05, 0.05, 0.9], [0.0, 0.0, 1.0]]])
    candidates = torch.tensor([[True, True, True, False]])
    inputs = {} if target is None else {"target": torch.tensor([target])}
    return StepState(
        probs=probs,
        candidates=candidates,
        masked=candidates,
        num_transfer=torch.tensor([k]),
        total=torch.tensor([3]),
        tokens=probs.argmax(-1),
        confidence=probs.amax(-1),
        inputs=inputs,
    )


def test_the_oracle_reveals_the_surest_gold_position_and_the_parallel_one_all_gold_positions():
    s = state([1, 1, 2, 2])
    assert get_policy("oracle").select(s).tolist() == [[False, False, True, False]]
    assert get_policy("gt_margin").select(s).tolist() == [[False, False, True, False]]
    assert get_policy("oracle:parallel=1").select(s).tolist() == [[False, True, True, False]]
    assert get_policy("oracle").select(state([1, 1, 2, 2], k=2)).tolist() == [[False, True, True, False]]


def test_with_no_gold_candidate_the_parallel_oracle_still_reveals_one_position():
    s = state([2, 0, 0, 2])
    assert get_policy("gt_margin:parallel=1").select(s).sum().item() == 1


def test_gt_margin_is_the_gold_log_probability_over_the_strongest_rival():
    probs = torch.tensor([[[0.6, 0.3, 0.1], [0.6, 0.3, 0.1]]])
    m = gt_margin(probs, torch.tensor([[0, 1]]))
    assert m[0, 0].item() == pytest.approx(math.log(0.6 / 0.3), rel=1e-5)
    assert m[0, 1].item() == pytest.approx(math.log(0.3 / 0.6), rel=1e-5)


def test_an_oracle_without_the_gold_answer_says_how_to_give_it():
    with pytest.raises(ValueError, match="oracle policies read the gold answer"):
        get_policy("oracle").select(state())


def test_oracles_on_a_task_without_targets_are_one_clear_error():
    from unmask.evaluation.evaluate import gold_tokens

    with pytest.raises(ValueError, match="task gsm8k gives none .*drop oracle"):
        gold_tokens(get_task("gsm8k"), [], None)


def test_oracle_solves_every_sudoku_with_the_shipped_mdm_and_in_few_forwards_when_parallel():
    task, model = get_task("sudoku9"), load_model("sudoku9-small")
    examples = task.generate(24, seed=5, difficulty=28)
    one, _ = run_policy(task, model, examples, get_policy("oracle"))
    parallel, _ = run_policy(task, model, examples, get_policy("oracle:parallel=1"))
    confidence, _ = run_policy(task, model, examples, get_policy("confidence"))
    assert one.solved_rate == 1.0 and one.nfe == 53
    assert parallel.solved_rate == 1.0 and parallel.nfe < 5
    assert confidence.solved_rate < 1.0


def test_generate_takes_the_gold_tokens_as_a_per_row_input():
    task, model = get_task("sudoku4"), load_model("sudoku4")
    examples = task.generate(4, seed=0, difficulty=6)
    enc = task.encode(examples, model)
    target = task.targets(examples, model)
    out = generate(
        model,
        enc.input_ids,
        get_policy("oracle:parallel=1"),
        SamplingConfig(),
        gen_start=enc.gen_start,
        inputs={"target": target},
    )
    assert torch.equal(out.sequences[:, enc.gen_start :], target)
    with pytest.raises(ValueError, match=r"one entry per row, shape \(4, ...\)"):
        generate(model, enc.input_ids, get_policy("oracle"), SamplingConfig(), inputs={"target": target[:2]})


def test_zebra_and_arithmetic_give_their_gold_tokens():
    for name, difficulty in (("zebra", None), ("arithmetic", 3)):
        task = get_task(name)
        model = load_model(task.default_model)
        examples = task.generate(3, seed=0, difficulty=difficulty)
        enc = task.encode(examples, model)
        target = task.targets(examples, model)
        assert target.shape == enc.input_ids[:, enc.gen_start :].shape
        solved = enc.input_ids.clone()
        solved[:, enc.gen_start :] = target
        assert task.score(examples, task.decode(examples, solved, model)).solved.all()
