import json

import numpy as np
import pytest
import torch

from unmask.cli.main import main
from unmask.engine.config import SamplingConfig
from unmask.evaluation.order import plot_order, reveal_order
from unmask.models import MaskedTransformer, TransformerConfig
from unmask.policies import get_policy
from unmask.tasks import get_task

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def arithmetic():
    task = get_task("arithmetic", op="add", max_digits=3)
    vocab, mask = task.vocab()
    torch.manual_seed(0)
    model = MaskedTransformer(TransformerConfig(vocab, mask, task.coordinates(), n_layer=1, n_head=2, n_embd=16)).eval()
    return task, model, task.generate(6, seed=0)


def test_left_to_right_reveals_answer_positions_in_increasing_order(arithmetic):
    task, model, examples = arithmetic
    result = reveal_order(task, model, examples, get_policy("left_to_right"))
    assert result.order.shape == (6, task.answer_width)  # the prompt is not part of the order
    assert (result.order == np.arange(task.answer_width)).all()
    assert result.prompts == [task.layout(ex)[: task.gen_start] for ex in examples]
    assert all(len(row) == task.answer_width for row in result.tokens)
    assert result.shape == (1, task.answer_width)


@pytest.mark.parametrize(
    "spec,steps", [("confidence", None), ("random", None), ("threshold:0.5", None), ("confidence", 2)]
)
def test_every_generated_position_gets_one_step_within_the_row_nfe(arithmetic, spec, steps):
    task, model, examples = arithmetic
    result = reveal_order(task, model, examples, get_policy(spec), SamplingConfig(steps=steps))
    assert (result.order >= 0).all()
    assert (result.order.max(1) == result.nfe - 1).all()
    for row in result.order:  # every step reveals something
        assert set(row.tolist()) == set(range(row.max() + 1))
    if steps is None and not spec.startswith("threshold"):
        assert all(sorted(row) == list(range(task.answer_width)) for row in result.order.tolist())
    norm = result.normalised
    assert np.nanmin(norm) == 0 and np.nanmax(norm) == 1


def test_given_cells_have_no_step_and_grids_keep_their_shape(tiny_sudoku4_model, tmp_path):
    task = get_task("sudoku4")
    examples = task.generate(5, seed=0, difficulty=8)
    result = reveal_order(task, tiny_sudoku4_model, examples, get_policy("left_to_right"))
    puzzles = np.array([ex.puzzle for ex in examples])
    assert ((result.order < 0) == (puzzles > 0)).all()
    for row, puzzle in zip(result.order, puzzles):
        assert (row[puzzle == 0] == np.arange(8)).all()  # blanks in reading order
    assert np.isnan(result.normalised[puzzles > 0]).all()
    assert result.shape == (4, 4)
    assert [t for t, v in zip(result.tokens[0], examples[0].puzzle) if v] == [str(v) for v in examples[0].puzzle if v]
    data = json.loads(json.dumps(result.to_json()))
    assert len(data["examples"]) == 5 and len(data["mean_normalised_step"]) == 16
    plot_order(result, tmp_path / "grid.png", num_examples=3)
    assert (tmp_path / "grid.png").read_bytes()[:8] == PNG


def test_cli_writes_heatmap_and_json(tmp_path, capsys):
    png, out = tmp_path / "order.png", tmp_path / "order.json"
    assert (
        main(
            [
                "show-order",
                "--task",
                "arithmetic",
                "--policy",
                "confidence",
                "--num",
                "6",
                "--difficulty",
                "2",
                "--out",
                str(png),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    assert png.read_bytes()[:8] == PNG
    data = json.loads(out.read_text())
    assert data["policy"] == "confidence" and data["task"] == "arithmetic" and len(data["examples"]) == 6
    assert "mean reveal step" in capsys.readouterr().out
    assert main(["show-order", "--task", "arithmetic", "--policy", "maxconf", "--out", str(png)]) == 2
