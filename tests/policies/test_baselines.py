"""The training-free baselines (unmask.policies.baselines): KLASS, PC-Sampler and DUS, on hand-built steps."""

import json

import pytest
import torch

from unmask.engine.config import SamplingConfig
from unmask.engine.loop import generate
from unmask.engine.state import RowMemory, StepState
from unmask.engine.streams import ExampleStreams
from unmask.policies import get_policy
from unmask.policies.baselines import dilated_levels
from unmask.tasks import get_task


def step(probs, candidates=None, num_transfer=1, rows=None, memory=None):
    """A step whose tokens are each position's argmax (temperature 0)."""
    probs = torch.tensor(probs, dtype=torch.float32)
    b, L, _ = probs.shape
    cand = torch.ones(b, L, dtype=torch.bool) if candidates is None else torch.tensor(candidates)
    conf, tokens = probs.max(-1)
    return StepState(
        probs=probs,
        tokens=tokens,
        confidence=conf * cand,
        candidates=cand,
        masked=cand,
        num_transfer=torch.full((b,), num_transfer),
        total=cand.sum(1),
        rows=None if rows is None else torch.tensor(rows),
        memory=memory,
    )


def revealed(policy, state):
    return [row.nonzero().squeeze(1).tolist() for row in policy.select(state)]


# position 0: confident and stable; 1: confident, moves; 2: stable, unsure; 3: confident and stable
FIRST = [[[0.95, 0.05], [0.97, 0.03], [0.6, 0.4], [0.92, 0.08]]]
SECOND = [[[0.95, 0.05], [0.5, 0.5], [0.6, 0.4], [0.93, 0.07]]]
STILL = [[[0.95, 0.05], [0.97, 0.03], [0.6, 0.4], [0.93, 0.07]]]


def test_klass_reveals_the_confident_positions_whose_distribution_stopped_moving():
    policy, memory = get_policy("klass:conf_threshold=0.9:kl_threshold=0.01:history_length=1"), RowMemory(1)
    assert revealed(policy, step(FIRST, memory=memory)) == [[1]]  # no previous step: the most confident (fallback)
    assert revealed(policy, step(SECOND, memory=memory)) == [[0, 3]]  # 1 moved (KL .3), 2 under the threshold


def test_klass_needs_history_length_stable_steps():
    policy, memory = get_policy("klass"), RowMemory(1)  # history_length 2
    assert revealed(policy, step(FIRST, memory=memory)) == [[1]]
    assert revealed(policy, step(STILL, memory=memory)) == [[1]]  # one stable step: not yet, fallback
    assert revealed(policy, step(STILL, memory=memory)) == [[0, 1, 3]]


def test_klass_fallback_takes_the_schedules_count():
    state = step(FIRST, num_transfer=2, memory=RowMemory(1))
    assert revealed(get_policy("klass"), state) == [[0, 1]]


def test_klass_keeps_each_rows_history_when_rows_leave_the_batch():
    policy, memory = get_policy("klass:history_length=1"), RowMemory(2)
    moving = [[0.5, 0.5], [0.5, 0.5], [0.6, 0.4], [0.5, 0.5]]
    assert revealed(policy, step([moving, FIRST[0]], rows=[0, 1], memory=memory)) == [[2], [1]]
    # row 0 finished: the step holds row 1 only, which must be compared with its own previous distribution
    assert revealed(policy, step(STILL, rows=[1], memory=memory)) == [[0, 1, 3]]


def test_klass_waits_at_the_start_of_each_block():
    policy, memory = get_policy("klass"), RowMemory(1)
    first_block = [[True, True, False, False]]
    for _ in range(2):
        revealed(policy, step(STILL, candidates=first_block, memory=memory))
    assert revealed(policy, step(STILL, candidates=first_block, memory=memory)) == [[0, 1]]
    # the next block's positions enter: its first step waits (history_length - 1 = 1 step) however stable, and
    # falls back to the schedule's count; the step after reveals the ready position 3 only (2 is unsure)
    second_block = [[False, False, True, True]]
    assert revealed(policy, step(STILL, candidates=second_block, num_transfer=2, memory=memory)) == [[2, 3]]
    assert revealed(policy, step(STILL, candidates=second_block, num_transfer=2, memory=memory)) == [[3]]


def test_klass_decodes_each_example_as_it_would_alone(tiny_sudoku4_model):
    task, model = get_task("sudoku4"), tiny_sudoku4_model
    examples = task.generate(6, seed=3, difficulty=5)
    policy = get_policy("klass:conf_threshold=0.3:kl_threshold=0.5")
    enc = task.encode(examples, model)
    together = generate(model, enc.input_ids, policy, SamplingConfig(), gen_start=enc.gen_start)
    assert (together.nfe < together.nfe.new_tensor(12)).any()  # it reveals several positions at some steps
    for j in (0, 4):
        alone = generate(model, enc.input_ids[j : j + 1], policy, SamplingConfig(), gen_start=enc.gen_start)
        assert torch.equal(alone.sequences[0], together.sequences[j]) and alone.nfe[0] == together.nfe[j]


CONF = [[[0.7, 0.3], [0.9, 0.1], [0.8, 0.2], [0.6, 0.4]]]


def test_pc_sampler_without_position_weight_is_max_confidence():
    assert revealed(get_policy("pc_sampler:lambd=0"), step(CONF, num_transfer=2)) == [[1, 2]]


def test_pc_sampler_position_weight_favours_early_positions():
    # exp(-lambd i): with lambd=1, position 0 (0.7) beats position 1 (0.9 / e = 0.33)
    assert revealed(get_policy("pc_sampler:lambd=1"), step(CONF)) == [[0]]
    # the weight counts from the row's first candidate (a factor common to the row), far from the region's start
    assert revealed(
        get_policy("pc_sampler:lambd=1"), step([[[0.5, 0.5]] * 800 + CONF[0]], candidates=[[False] * 800 + [True] * 4])
    ) == [[800]]
    later = step(CONF, candidates=[[False, False, True, True]])
    assert revealed(get_policy("pc_sampler:lambd=0.25"), later) == [[2]]


def test_pc_sampler_calibration_demotes_frequent_tokens(tmp_path):
    background = tmp_path / "P_baseline.json"
    background.write_text(json.dumps({"num_token": 100, "p_baseline_dict": {"0": 99}}))  # token 0 is 99% of text
    probs = [[[0.9, 0.1], [0.3, 0.7]]]  # position 0 predicts the frequent token 0 at 0.9, position 1 token 1 at 0.7
    assert revealed(get_policy(f"pc_sampler:lambd=0:background={background}"), step(probs)) == [[1]]
    assert revealed(get_policy("pc_sampler:lambd=0"), step(probs)) == [[0]]
    # alpha caps the calibrated confidence: both capped, the position weight decides
    assert revealed(get_policy(f"pc_sampler:lambd=0.1:alpha=0.001:background={background}"), step(probs)) == [[0]]


def test_dilated_levels_are_the_papers_coarse_to_fine_groups():
    assert dilated_levels(8) == (0, 2, 1, 2, 0, 2, 1, 2)  # strides 4, 2, 1
    assert dilated_levels(6) == (0, 1, 1, 0, 1, 1)  # strides 3, 1
    assert dilated_levels(5) == (0, 0, 0, 0, 0)  # {0, 2, 4} then {1, 3}: the smaller last group joins the one before
    assert dilated_levels(9, base=3) == (0, 1, 1, 0, 1, 1, 0, 1, 1)
    assert dilated_levels(4, base=1) == (0, 0, 0, 0)


def test_dus_reveals_the_next_group_of_the_leftmost_block_and_skips_empty_groups():
    policy = get_policy("dus:block_length=4")
    probs = [[[0.5, 0.5]] * 8]
    assert revealed(policy, step(probs)) == [[0, 2]]
    assert revealed(policy, step(probs, candidates=[[False, True, False, True] + [True] * 4])) == [[1, 3]]
    assert revealed(policy, step(probs, candidates=[[False] * 4 + [True] * 4])) == [[4, 6]]
    # positions 4 and 6 were given (clues): their group is skipped, not spent on an empty step
    assert revealed(policy, step(probs, candidates=[[False] * 4 + [False, True, False, True]])) == [[5, 7]]
    assert revealed(get_policy("dus"), step(probs)) == [[0, 4]]  # one block of 8


def test_dus_nfe_is_the_number_of_groups(tiny_sudoku4_model):
    task, model = get_task("sudoku4"), tiny_sudoku4_model
    examples = task.generate(3, seed=1, difficulty=4)
    enc = task.encode(examples, model)
    out = generate(
        model,
        enc.input_ids,
        get_policy("dus"),
        SamplingConfig(),
        gen_start=enc.gen_start,
        generator=ExampleStreams(0, range(3)),
    )
    masked = enc.input_ids[:, enc.gen_start :] == model.mask_id
    levels = torch.tensor(dilated_levels(masked.shape[1]))
    assert out.nfe.tolist() == [len(set(levels[m].tolist())) for m in masked]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("klass:history_length=0", "history_length must be an integer >= 1"),
        ("klass:conf_threshold=1.5", "conf_threshold must be a finite number >= 0 and <= 1"),
        ("klass:kl_threshold=0", "kl_threshold must be a finite number > 0"),
        ("pc_sampler:alpha=0", "alpha must be a finite number > 0"),
        ("pc_sampler:lambd=-1", "lambd must be a finite number >= 0"),
        ("pc_sampler:background=/nonexistent.json", "PC-Sampler's P_baseline.json"),
        ("dus:base=0", "base must be an integer >= 1"),
        ("dus:block_length=2.5", "block_length must be an integer >= 1"),
    ],
)
def test_bad_arguments_are_explained(spec, message):
    with pytest.raises(ValueError, match=message):
        get_policy(spec)
