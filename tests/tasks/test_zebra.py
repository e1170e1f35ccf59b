import itertools
import json
import random

import pytest
import torch

from unmask.tasks import get_task, zebra
from unmask.tasks.zebra_solver import (
    Clue,
    generate_puzzle,
    random_clue,
    random_solution,
    relabelled,
    solve,
    violations,
)

# 3 houses; attribute 0 = colour (red 0, green 1, blue 2), attribute 1 = pet (dog 0, cat 1, fish 2)
RED, GREEN, BLUE, DOG, CAT, FISH = (0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)
HAND_SOLUTION = [[0, 2, 1], [1, 0, 2]]  # houses: red cat | blue dog | green fish
SWAPPED = [[0, 2, 1], [1, 2, 0]]  # red fish | blue dog | green cat
HAND_CLUES = [
    Clue("at_house", RED, house=0),
    Clue("same_house", BLUE, DOG),
    Clue("left_of", BLUE, GREEN),
    Clue("next_to", CAT, DOG),
    Clue("not_same_house", FISH, RED),
]


def test_clue_semantics_on_a_hand_grid():
    holds = {
        Clue("same_house", RED, CAT): True,
        Clue("same_house", RED, DOG): False,
        Clue("not_same_house", RED, DOG): True,
        Clue("not_same_house", GREEN, FISH): False,
        Clue("left_of", RED, FISH): True,  # left_of means anywhere to the left, not only adjacent
        Clue("left_of", DOG, CAT): False,
        Clue("left_of", DOG, BLUE): False,
        Clue("next_to", FISH, DOG): True,
        Clue("next_to", DOG, FISH): True,
        Clue("next_to", RED, GREEN): False,
        Clue("at_house", GREEN, house=2): True,
        Clue("at_house", GREEN, house=1): False,
        Clue("not_at_house", CAT, house=1): True,
        Clue("not_at_house", CAT, house=0): False,
    }
    assert {c: c.holds(HAND_SOLUTION) for c in holds} == holds


def test_solver_proves_uniqueness_ambiguity_and_contradiction():
    assert solve(HAND_CLUES, 3, 2, limit=5) == [HAND_SOLUTION]
    # without "the fish is not in the red house" the cat and the fish can swap
    assert sorted(solve(HAND_CLUES[:-1], 3, 2, limit=5)) == sorted([HAND_SOLUTION, SWAPPED])
    assert solve(HAND_CLUES + [Clue("at_house", CAT, house=2)], 3, 2) == []
    assert len(solve([], 3, 2, limit=100)) == 36  # 3! x 3!


def test_solver_counts_match_brute_force():
    rng = random.Random(0)
    placements = [
        [list(a), list(b), list(c)]
        for a in itertools.permutations(range(3))
        for b in itertools.permutations(range(3))
        for c in itertools.permutations(range(3))
    ]
    for _ in range(60):
        truth = random_solution(3, 3, rng)
        clues = [random_clue(truth, rng) for _ in range(rng.randint(1, 5))]
        clues += [Clue("not_same_house", (0, 0), (1, 0))] * (rng.random() < 0.3)  # sometimes unsatisfiable
        expected = sorted(p for p in placements if all(c.holds(p) for c in clues))
        assert sorted(solve(clues, 3, 3, limit=1000)) == expected


@pytest.mark.parametrize("houses,attributes,n", [(3, 3, 10), (4, 4, 10), (5, 3, 3), (6, 6, 1)])
def test_generated_puzzles_have_one_solution_and_need_every_clue(houses, attributes, n):
    rng = random.Random(0)
    for _ in range(n):
        clues, solution = generate_puzzle(houses, attributes, rng)
        assert solve(clues, houses, attributes, limit=3) == [solution]
        assert not violations(clues, solution, houses, attributes)
        for i in range(len(clues)):
            assert len(solve(clues[:i] + clues[i + 1 :], houses, attributes, limit=2)) == 2


def test_difficulty_is_extra_redundant_clues_and_generation_is_seeded():
    task = get_task("zebra", houses=3, attributes=3)
    assert task.difficulty_name == "extra_clues"
    a, b = task.generate(5, seed=1, difficulty=3), task.generate(5, seed=1, difficulty=3)
    assert [(e.clues, e.solution) for e in a] == [(e.clues, e.solution) for e in b]
    assert [e.clues for e in a] != [e.clues for e in task.generate(5, seed=2, difficulty=3)]
    for ex in a:
        assert solve(ex.clues, 3, 3, limit=2) == [ex.solution]
        redundant = sum(len(solve(ex.clues[:i] + ex.clues[i + 1 :], 3, 3, limit=2)) == 1 for i in range(len(ex.clues)))
        assert redundant >= 3


def test_relabelled_puzzles_keep_their_unique_solution():
    rng = random.Random(3)
    clues, solution = generate_puzzle(4, 4, rng)
    for _ in range(10):
        new_clues, new_solution = relabelled(clues, solution, rng)
        assert solve(new_clues, 4, 4, limit=2) == [new_solution]


def test_score_verifies_against_the_clues():
    task = get_task("zebra", houses=3, attributes=2)
    unique = zebra.ZebraExample(HAND_CLUES, HAND_SOLUTION)
    ambiguous = zebra.ZebraExample(HAND_CLUES[:-1], HAND_SOLUTION)
    not_a_permutation = [[0, 2, 1], [1, 0, 0]]
    scores = task.score([unique, ambiguous, unique, unique], [HAND_SOLUTION, SWAPPED, SWAPPED, not_a_permutation])
    assert scores.solved.tolist() == [True, True, False, False]
    assert scores.reward.tolist() == [1.0, 3 / 5, 3 / 5, 4 / 5]  # over the 5 blanks: red's house is given
    assert violations(HAND_CLUES, SWAPPED, 3, 2) == ["clue 4 (not_same_house) is false"]
    assert "distinct houses" in violations(HAND_CLUES, [[0, 2, 1], [1, -1, 2]], 3, 2)[0]


def test_jsonl_roundtrip_and_solution_optional(tmp_path):
    task = get_task("zebra", houses=3, attributes=3)
    examples = task.generate(4, seed=0)
    path = tmp_path / "z.jsonl"
    task.save(examples, str(path))
    assert [(e.clues, e.solution) for e in task.load(str(path))] == [(e.clues, e.solution) for e in examples]
    row = json.loads(path.read_text().splitlines()[0])
    del row["solution"]
    path.write_text(json.dumps(row) + "\n")
    assert task.load(str(path))[0].solution == examples[0].solution


HAND_ROW = {
    "houses": 3,
    "attributes": 2,
    "solution": HAND_SOLUTION,
    "clues": [
        {"kind": c.kind, "a": list(c.a), **({"house": c.house} if c.b is None else {"b": list(c.b)})}
        for c in HAND_CLUES
    ],
}


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda r: "{not json", "not valid JSON"),
        (lambda r: {k: v for k, v in r.items() if k != "clues"}, "missing field"),
        (lambda r: {**r, "houses": 4}, "a 4 x 2 puzzle, but this task reads 3 x 2"),
        (lambda r: {**r, "clues": [{"kind": "behind", "a": [0, 0], "b": [1, 1]}]}, "unknown clue kind 'behind'"),
        (lambda r: {**r, "clues": [{"kind": "same_house", "a": [0, 3], "b": [1, 1]}]}, "clue 0: .*outside"),
        (lambda r: {**r, "clues": [{"kind": "at_house", "a": [0, 0], "house": 5}]}, "house must be"),
        (lambda r: {**r, "solution": SWAPPED}, "solution is wrong.*clue 4"),
        (
            lambda r: {**r, "clues": r["clues"] + [{"kind": "next_to", "a": [1, 0], "b": [0, 2]}]},
            "clues 1 and 5 relate",
        ),
        (lambda r: {**{k: v for k, v in r.items() if k != "solution"}, "clues": r["clues"][:-1]}, "several solution"),
    ],
)
def test_malformed_rows_name_file_line_and_problem(tmp_path, change, message):
    task = get_task("zebra", houses=3, attributes=2)
    path = tmp_path / "bad.jsonl"
    bad = change(dict(HAND_ROW))
    path.write_text(json.dumps(HAND_ROW) + "\n" + (bad if isinstance(bad, str) else json.dumps(bad)) + "\n")
    with pytest.raises(ValueError, match=message) as e:
        task.load(str(path))
    assert f"{path}:2" in str(e.value)


def read_prompt(task, tokens):
    """The house set of every item and the relation entries {(item x, item y): relation of x to y}."""
    sets = [t - task.mask_id for t in tokens[: task.cells]]
    entries = zip(task.pairs, tokens[task.cells : task.prompt_length])
    return sets, {pair: zebra.RELATIONS[t - task.no_relation - 1] for pair, t in entries if t != task.no_relation}


def test_clue_regions_put_each_clue_at_its_items():
    task = get_task("zebra", houses=3, attributes=2)
    sets, relations = read_prompt(task, task.prompt_tokens(HAND_CLUES))
    assert sets == [0b001] + [0b111] * 5  # red is in house 0
    red, green, blue, dog, cat, fish = range(6)  # item ids: attribute * houses + value
    assert relations == {
        (blue, dog): "same_house",
        (green, blue): "right_of",
        (dog, cat): "next_to",
        (red, fish): "not_same_house",
    }


def test_encode_decode_with_a_tiny_model():
    from unmask.models import MaskedTransformer, TransformerConfig

    task = get_task("zebra", houses=3, attributes=3)
    vocab, mask = task.vocab()
    torch.manual_seed(0)
    model = MaskedTransformer(TransformerConfig(vocab, mask, task.coordinates(), n_layer=1, n_head=2, n_embd=16)).eval()
    examples = task.generate(2, seed=0)
    batch = task.encode(examples, model)
    P, pairs = task.prompt_length, len(task.pairs)
    assert batch.input_ids.shape == (2, task.length) == (2, P + pairs + 9) and batch.gen_start == P
    assert (batch.input_ids[:, :P] != mask).all()
    for ex, row in zip(examples, batch.input_ids.tolist()):
        links, answer = row[P : P + pairs], row[P + pairs :]
        assert sum(t == mask for t in links) == sum(c.kind not in ("at_house", "not_at_house") for c in ex.clues)
        assert all(t in (mask, h) for t, h in zip(answer, sum(ex.solution, [])))  # at_house clues are given
        assert sum(t != mask for t in answer) == sum(c.kind == "at_house" for c in ex.clues)
    assert model(batch.input_ids).logits.shape == (2, task.length, vocab)
    filled = batch.input_ids.clone()
    filled[:, P:] = torch.tensor([task.generation_tokens(e.clues, e.solution) for e in examples])
    assert task.decode(examples, filled, model) == [e.solution for e in examples]
    assert task.score(examples, task.decode(examples, filled, model)).solved.all()
    with pytest.raises(ValueError, match="does not read 4x4"):
        get_task("zebra", houses=4, attributes=4).encode(task.generate(1), model)


def test_training_stream_fills_links_and_answer(monkeypatch):
    monkeypatch.setattr(zebra, "POOL_SIZE", 8)
    task = get_task("zebra", houses=3, attributes=3)
    targets, learnable = task.sample_targets(16, torch.Generator().manual_seed(0))
    P, pairs = task.prompt_length, len(task.pairs)
    assert targets.shape == learnable.shape == (16, task.length)
    assert not learnable[:, :P].any() and learnable.any(1).all()
    check = {
        "same_house": lambda x, y: x == y,
        "not_same_house": lambda x, y: x != y,
        "left_of": lambda x, y: x < y,
        "right_of": lambda x, y: x > y,
        "next_to": lambda x, y: abs(x - y) == 1,
    }
    for row, learn in zip(targets.tolist(), learnable.tolist()):
        links, house = row[P : P + pairs], row[P + pairs :]
        assert all(sorted(house[3 * a : 3 * a + 3]) == [0, 1, 2] for a in range(3))
        sets, relations = read_prompt(task, row)
        assert all(s >> h & 1 for s, h in zip(sets, house))
        assert all(s == 1 << h for s, h, l in zip(sets, house, learn[P + pairs :]) if not l)  # given: at_house
        assert all(check[rel](house[x], house[y]) for (x, y), rel in relations.items())
        for (x, y), link, l in zip(task.pairs, links, learn[P : P + pairs]):  # a related pair's link: both houses
            assert (link, l) == (
                (task.link0 + 3 * house[x] + house[y], True) if (x, y) in relations else (task.no_relation, False)
            )
    assert len({tuple(t) for t in targets.tolist()}) == 16


@pytest.mark.slow
def test_shipped_model_decodes_fresh_puzzles():
    from unmask.api import evaluate

    report = evaluate(task="zebra", policies="confidence,random", num=32, seed=5, progress=False)
    confidence, rand = report.results
    assert confidence.cell_accuracy > 0.5 and confidence.solved_rate > rand.solved_rate + 0.15
