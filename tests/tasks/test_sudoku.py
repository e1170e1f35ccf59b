import random

import pytest

from unmask.tasks import get_task
from unmask.tasks.sudoku import grid_errors
from unmask.tasks.sudoku_solver import generate_puzzle, solve


@pytest.mark.parametrize("box,clues", [(2, 6), (3, 36), (3, 26)])
def test_generated_puzzles_are_unique_with_exact_clue_count(box, clues):
    rng = random.Random(1)
    for _ in range(5):
        puzzle, solution = generate_puzzle(box, clues, rng)
        assert sum(1 for v in puzzle if v) == clues
        assert solve(puzzle, box, limit=3) == [solution]
        assert not grid_errors(solution, box) and all(solution)


def test_generation_is_seeded():
    task = get_task("sudoku9")
    a = task.generate(3, seed=7, difficulty=32)
    b = task.generate(3, seed=7, difficulty=32)
    c = task.generate(3, seed=8, difficulty=32)
    assert [e.puzzle for e in a] == [e.puzzle for e in b]
    assert [e.puzzle for e in a] != [e.puzzle for e in c]


def test_csv_roundtrip(tmp_path):
    task = get_task("sudoku9")
    examples = task.generate(4, seed=0, difficulty=30)
    path = tmp_path / "p.csv"
    task.save(examples, str(path))
    loaded = task.load(str(path))
    assert [(e.puzzle, e.solution) for e in loaded] == [(e.puzzle, e.solution) for e in examples]


def test_csv_dots_and_missing_solution(tmp_path):
    task = get_task("sudoku4")
    path = tmp_path / "p.csv"
    path.write_text("Puzzle\n3.0220000210032.\n")
    (ex,) = task.load(str(path))
    assert ex.puzzle[:4] == [3, 0, 0, 2]
    assert not grid_errors(ex.solution, 2) and all(ex.solution)


@pytest.mark.parametrize(
    "row,message",
    [
        ("31022000021003,3142243142131324", "expected 16 characters"),
        ("3102200002100x20,3142243142131324", "invalid character 'x'"),
        ("3302200002100320,3142243142131324", "contradictory clues"),
        ("3102200002100320,3142243142131342", "breaks the rules"),
        ("4102200002100320,3142243142131324", "disagrees with the puzzle"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, row, message):
    path = tmp_path / "bad.csv"
    path.write_text("Puzzle,Solution\n3102200002100320,3142243142131324\n" + row + "\n")
    with pytest.raises(ValueError, match=message) as e:
        get_task("sudoku4").load(str(path))
    assert f"{path}:3" in str(e.value)


def test_reward_is_fraction_of_blanks_and_solved_needs_validity():
    task = get_task("sudoku4")
    (ex,) = task.generate(1, seed=0, difficulty=8)
    blanks = [i for i, v in enumerate(ex.puzzle) if not v]
    wrong = list(ex.solution)
    wrong[blanks[0]] = wrong[blanks[0]] % 4 + 1
    scores = task.score([ex, ex], [ex.solution, wrong])
    assert scores.reward.tolist() == [1.0, 1 - 1 / len(blanks)]
    assert scores.solved.tolist() == [True, False]
    assert task.reward([ex.solution], [ex]) == [1.0]


def test_d1_test_set_loads(shared_data):
    examples = get_task("sudoku4").load(str(shared_data / "sudoku4x4_test_d1.csv"))
    assert len(examples) == 500
    # 124 of the 500 d1 puzzles have several solutions; the given one is always among them
    assert all(e.solution in solve(e.puzzle, 2, limit=10) for e in examples)
    assert sum(len(solve(e.puzzle, 2, limit=2)) > 1 for e in examples) == 124


def test_training_stream_yields_valid_grids():
    import torch

    task = get_task("sudoku9")
    grids, learnable = task.sample_targets(16, torch.Generator().manual_seed(0))
    assert grids.shape == (16, 81) and learnable.all()
    for g in grids.tolist():
        assert not grid_errors([v + 1 for v in g], 3)
    assert len({tuple(g) for g in grids.tolist()}) == 16


def test_unknown_task_lists_valid_ones():
    with pytest.raises(ValueError, match="valid tasks: .*sudoku4, sudoku9"):
        get_task("sudoku16")
