import pytest
import torch

from unmask.engine.loop import generate
from unmask.models import load_model
from unmask.policies import get_policy
from unmask.tasks import get_task
from unmask.tasks.arithmetic import ArithmeticExample, parse_answer


def test_layout_right_aligns_operands_and_answer_with_pads():
    task = get_task("arithmetic", op="add", max_digits=4)
    assert task.layout(ArithmeticExample(123, "+", 989)) == "_123+_989=_1112"
    assert task.layout(ArithmeticExample(9999, "+", 1)) == "9999+___1=10000"  # carry into the extra digit
    assert task.layout(ArithmeticExample(0, "+", 0)) == "___0+___0=____0"
    mul = get_task("arithmetic", op="mul", max_digits=3)
    assert mul.layout(ArithmeticExample(999, "*", 99)) == "999*_99=_98901"
    assert (mul.gen_start, mul.answer_width, mul.length) == (8, 6, 14)


def test_short_multiplication_layout(tmp_path):
    task = get_task("arithmetic", op="mul", max_digits=4, multiplier_digits=1)
    assert task.layout(ArithmeticExample(9999, "*", 9)) == "9999*9=89991"
    assert (task.gen_start, task.answer_width, task.length) == (7, 5, 12)
    examples = task.generate(30, seed=1, difficulty=3)
    assert all(100 <= e.a <= 999 and 0 <= e.b <= 9 and e.op == "*" for e in examples)
    (tmp_path / "p.txt").write_text("12*34\n")
    with pytest.raises(ValueError, match=r"p.txt:1: operand 34 has 2 digits; .* at most 1 \(multiplier_digits\)"):
        task.load(str(tmp_path / "p.txt"))
    with pytest.raises(ValueError, match=r"multiplier_digits must be in \[1, max_digits=4\]"):
        get_task("arithmetic", max_digits=4, multiplier_digits=5)
    assert get_task("arithmetic").length == 27  # the shipped model's layout is unchanged


def test_tokenizer_round_trip_and_vocab():
    task = get_task("arithmetic", max_digits=4)
    text = "_123+_989=_1112"
    ids = task.tokenize(text)
    assert task.detokenize(ids) == text
    vocab_size, mask_id = task.vocab()
    assert max(ids) < mask_id == vocab_size - 1
    assert task.detokenize([1, mask_id]) == "1?"


@pytest.mark.parametrize(
    "text,value",
    [
        ("_1112", 1112),
        ("10000", 10000),
        ("____0", 0),
        ("01112", None),
        ("1_112", None),
        ("_____", None),
        ("_11?2", None),
    ],
)
def test_answers_parse_only_as_pads_then_a_number_without_leading_zeros(text, value):
    assert parse_answer(text) == value


def test_reward_is_fraction_of_answer_characters_and_solved_is_exact():
    task = get_task("arithmetic", op="add", max_digits=4)
    ex = ArithmeticExample(123, "+", 989)
    scores = task.score([ex] * 5, ["_1112", "01112", "_1113", "1112", "___1112"])
    assert scores.reward.tolist() == [1.0, 0.8, 0.8, 1.0, 0.0]  # short completions are right-aligned
    assert scores.solved.tolist() == [True, False, False, True, False]
    assert task.reward(["_1112"], [ex]) == [1.0]


def test_generation_is_seeded_and_has_the_requested_digits():
    task = get_task("arithmetic", op="mixed", max_digits=3)
    a, b = task.generate(20, seed=3, difficulty=2), task.generate(20, seed=3, difficulty=2)
    assert [str(e) for e in a] == [str(e) for e in b]
    assert [str(e) for e in a] != [str(e) for e in task.generate(20, seed=4, difficulty=2)]
    assert all(10 <= e.a <= 99 and 10 <= e.b <= 99 for e in a) and {e.op for e in a} == {"+", "*"}
    assert all(len(str(e.a)) == 3 for e in task.generate(5))  # default: max_digits
    with pytest.raises(ValueError, match=r"digits must be in \[1, 3\]"):
        task.generate(1, difficulty=4)


def test_save_load_round_trip(tmp_path):
    task = get_task("arithmetic", op="mixed", max_digits=3)
    examples = task.generate(6, seed=0)
    path = tmp_path / "p.txt"
    task.save(examples, str(path))
    assert [str(e) for e in task.load(str(path))] == [str(e) for e in examples]
    path.write_text("# comment\n12 + 3\n\n7*8=56\n")
    assert [str(e) for e in task.load(str(path))] == ["12+3=15", "7*8=56"]


@pytest.mark.parametrize(
    "line,message",
    [
        ("12-3", "expected a problem like"),
        ("12+3=16", r"12\+3 is 15, not 16"),
        ("12345+1", "operand 12345 has 5 digits"),
        ("12*3", "'\\*' problems need op='mul' or 'mixed'"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.txt"
    path.write_text("1+2\n" + line + "\n")
    with pytest.raises(ValueError, match=message) as e:
        get_task("arithmetic", op="add", max_digits=4).load(str(path))
    assert f"{path}:2" in str(e.value)


def test_training_stream_learns_the_answer_region_only():
    task = get_task("arithmetic", op="add", max_digits=4)
    targets, learnable = task.sample_targets(64, torch.Generator().manual_seed(0))
    assert targets.shape == (64, task.length)
    assert not learnable[:, : task.gen_start].any() and learnable[:, task.gen_start :].all()
    for row in targets.tolist():
        a, rest = task.detokenize(row).replace("_", "").split("+")
        b, answer = rest.split("=")
        assert int(a) + int(b) == int(answer)


def test_shipped_model_decodes_and_mismatched_layouts_are_refused():
    task, model = get_task("arithmetic"), load_model("arithmetic")
    examples = task.generate(32, seed=0, difficulty=2)
    enc = task.encode(examples, model)
    assert (enc.input_ids[:, enc.gen_start :] == model.mask_id).all()
    assert (enc.input_ids[:, : enc.gen_start] != model.mask_id).all()
    out = generate(model, enc.input_ids, get_policy("confidence"), gen_start=enc.gen_start)
    scores = task.score(examples, task.decode(examples, out.sequences, model))
    assert scores.solved.mean() > 0.5
    with pytest.raises(ValueError, match="does not read this arithmetic layout"):
        get_task("arithmetic", max_digits=task.max_digits - 1).encode(examples[:1], model)


def _longest_propagate_run(ex: ArithmeticExample, width: int) -> int:
    """Longest run of digit pairs summing to 9 (a carry entering it runs through it)."""
    a, b = str(ex.a).zfill(width)[::-1], str(ex.b).zfill(width)[::-1]
    best = run = 0
    for x, y in zip(a, b):
        run = run + 1 if int(x) + int(y) == 9 else 0
        best = max(best, run)
    return best


def test_propagate_makes_carry_chains_long_and_leaves_the_default_stream_alone():
    plain, chained = get_task("arithmetic"), get_task("arithmetic", propagate=0.8)
    examples = chained.generate(400, seed=5)
    assert all(len(str(e.a)) == 8 and len(str(e.b)) == 8 for e in examples)  # digit counts are kept
    assert all(e.answer == e.a + e.b for e in examples)
    runs = [_longest_propagate_run(e, 8) for e in examples]
    plain_runs = [_longest_propagate_run(e, 8) for e in plain.generate(400, seed=5)]
    assert sum(runs) / len(runs) > 4 > 1 > sum(plain_runs) / len(plain_runs)
    always = [_longest_propagate_run(e, 8) for e in get_task("arithmetic", propagate=1.0).generate(50)]
    assert min(always) >= 7 and 8 in always  # all pairs but a top one that would need a leading zero
    # propagate=None draws nothing extra: the shipped model's data and training stream are unchanged
    assert [str(e) for e in plain.generate(20, seed=5)] == [
        str(e) for e in get_task("arithmetic", propagate=None).generate(20, seed=5)
    ]
    targets, _ = chained.sample_targets(256, torch.Generator().manual_seed(0))
    for row in targets.tolist():
        a, rest = chained.detokenize(row).replace("_", "").split("+")
        b, answer = rest.split("=")
        assert int(a) + int(b) == int(answer) and len(a) == len(str(int(a)))  # no leading zero appears


@pytest.mark.parametrize(
    "options", [{"propagate": 1.5}, {"propagate": -0.1}, {"op": "mul", "propagate": 0.5}]
)  # a value that is no number: the typed options' error (tests/tasks/test_task_options.py)
def test_propagate_out_of_range_or_without_additions_is_refused(options):
    with pytest.raises(ValueError, match="propagate is a probability in \\[0, 1\\] for additions"):
        get_task("arithmetic", **options)


def test_shipped_carry_model_needs_the_least_significant_digits_first():
    """The built-in ``arithmetic-carry`` model (1 layer, 16-digit sums with propagate=0.8) cannot resolve long carry
    chains from the operands alone: the most-significant-first order fails where max-confidence succeeds."""
    task, model = get_task("arithmetic", propagate=0.8, max_digits=16), load_model("arithmetic-carry")
    examples = task.generate(64, seed=11)
    enc = task.encode(examples, model)
    solved = {}
    for name in ("confidence", "left_to_right"):
        out = generate(model, enc.input_ids, get_policy(name), gen_start=enc.gen_start)
        solved[name] = task.score(examples, task.decode(examples, out.sequences, model)).solved.mean()
    assert solved["confidence"] >= 0.9 and solved["left_to_right"] <= solved["confidence"] - 0.1
