import pytest

from unmask.api import resolve_policy
from unmask.evaluation.evaluate import pass_at_n, run_policy
from unmask.policies import get_policy
from unmask.policies.learned import LearnedPolicy
from unmask.tasks import get_task


def test_run_policy_scores_every_example(tiny_sudoku4_model):
    task = get_task("sudoku4")
    examples = task.generate(10, seed=0, difficulty=6)
    result, per = run_policy(task, tiny_sudoku4_model, examples, get_policy("confidence"), batch_size=4)
    assert result.n == 10 and len(per["solved"]) == 10
    assert result.nfe == 10.0  # one token per step, 10 blanks each
    assert result.solved_rate == pytest.approx(per["solved"].mean())
    assert result.tpf == 1.0 and result.aup == pytest.approx(100 * result.solved_rate)  # one point: TPF x solved %


def test_tokens_per_forward_counts_the_generated_positions(tiny_sudoku4_model):
    task = get_task("sudoku4")
    examples = task.generate(6, seed=2, difficulty=4) + task.generate(6, seed=2, difficulty=8)  # 12 and 8 blanks
    result, per = run_policy(task, tiny_sudoku4_model, examples, get_policy("threshold:0.01"), batch_size=5)
    assert result.tpf == pytest.approx(6 * (12 + 8) / per["nfe"].sum()) and result.tpf > 1
    assert result.aup == pytest.approx(result.tpf * 100 * result.solved_rate)


def test_pass_at_n_is_monotone_and_starts_at_pass_at_1(tiny_sudoku4_model):
    task = get_task("sudoku4")
    examples = task.generate(20, seed=1, difficulty=5)
    curve = pass_at_n(task, tiny_sudoku4_model, examples, get_policy("random"), 4, seed=3)
    single, _ = run_policy(task, tiny_sudoku4_model, examples, get_policy("random"), seed=3)
    assert curve[0] == pytest.approx(single.solved_rate)
    assert all(a <= b for a, b in zip(curve, curve[1:]))
    with pytest.raises(ValueError, match="deterministic"):
        pass_at_n(task, tiny_sudoku4_model, examples, get_policy("confidence"), 2)


def test_learned_policy_specs_take_options(tmp_path, tiny_sudoku4_model):
    LearnedPolicy.for_model("upo", tiny_sudoku4_model, d_model=16, n_head=2).save(tmp_path / "pol")
    policy = resolve_policy(f"{tmp_path / 'pol'}:sigma=0.2", tiny_sudoku4_model)
    assert policy.sigma == 0.2 and policy.capabilities.stochastic and policy.name == "upo:pol:sigma=0.2"
    assert resolve_policy(str(tmp_path / "pol"), tiny_sudoku4_model).mode == "greedy"
    with pytest.raises(ValueError, match="unknown option 'tau=1'"):
        resolve_policy(f"{tmp_path / 'pol'}:tau=1", tiny_sudoku4_model)
