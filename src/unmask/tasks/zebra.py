"""Logic-grid (Einstein / zebra) puzzles: generator, JSONL reader, verifier, reward.

``houses`` houses in a row, ``attributes`` attributes, each a one-to-one
assignment of its ``houses`` values to the houses; the clues (see
:mod:`unmask.tasks.zebra_solver` for the six kinds) have exactly one solution.

Token layout of the built-in model. Positions are indexed by items
((attribute, value) pairs, numbered ``attribute * houses + value``) through two
coordinate tables, so that every clue sits at a position that shares a
coordinate with each cell it constrains (as sudoku cells share a row):

1. *house clues*, one token per item X at coordinates (X, X): the set of houses
   its ``at_house`` / ``not_at_house`` clues leave it (all when it has none);
2. *relations*, one token per pair of items X < Y at coordinates (X, Y): the
   clue relating them (``same_house``, ``not_same_house``, ``left_of`` or
   ``right_of`` as seen from X, ``next_to``) or none; so a layout holds one
   clue per pair of items (:func:`~unmask.tasks.zebra_solver.item_pair`);
3. *links*, one cell per pair at coordinates (X, Y): for a related pair, the
   houses of both items as one token (generated); ``none`` otherwise (fixed);
4. *answer*, one cell per item X at coordinates (X, X) holding its house
   (tokens ``0 .. houses-1``); an item with an ``at_house`` clue is given there,
   as sudoku clues are.

Links are working cells, like written-down deductions. Without them, using a
two-item clue takes two attention hops in one forward pass (the relation fetches
the partner's house, the item reads the relation), which the small built-in
model did not learn in 7,000 steps; with them each step needs one hop: a link
fills in from its two items and its relation, an item reads its links. Links
and blank answer cells are generated (and count in NFE); the reward is UPO's on
the answer alone: the fraction of blank answer cells correct (UPO §5.1);
``solved`` means the placement keeps the permutation rule and every clue,
checked by the solver's verifier.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unmask.core.checkpoint import atomic_write
from unmask.models.base import MaskedDiffusionModel
from unmask.tasks.base import EncodedBatch, Scores, Task, parse_json_line, read_lines
from unmask.tasks.zebra_solver import (
    HOUSE_KINDS,
    Clue,
    Placement,
    clue_errors,
    generate_puzzle,
    pair_clashes,
    relabelled,
    solve,
    violations,
)

DEFAULT_SIZE = (4, 3)
DEFAULT_EXTRA = 2
POOL_SIZE = 1024
RELATIONS = ("same_house", "not_same_house", "left_of", "right_of", "next_to")  # of the first item to the second


@dataclass
class ZebraExample:
    """The clues of one puzzle and its solution, the house of every item: ``solution[attribute][value]``."""

    clues: list[Clue]
    solution: Placement


def clue_to_json(clue: Clue) -> dict:
    if clue.kind in HOUSE_KINDS:
        return {"kind": clue.kind, "a": list(clue.a), "house": clue.house}
    return {"kind": clue.kind, "a": list(clue.a), "b": list(clue.b)}


class ZebraTask(Task):
    """``houses`` x ``attributes`` zebra puzzles; the shipped model ``zebra`` reads the default 4 x 3."""

    example_type = ZebraExample
    name = "zebra"
    difficulty_name = "extra_clues"
    OPTIONS = {  # the constructor's options (unmask.tasks.options)
        "houses": "houses in the row (>= 2; the generator handles 3 to 6)",
        "attributes": "attributes per house (>= 2; the generator handles 3 to 6)",
    }

    def __init__(self, houses: int = DEFAULT_SIZE[0], attributes: int = DEFAULT_SIZE[1]) -> None:
        if houses < 2 or attributes < 2:
            raise ValueError(
                f"zebra needs at least 2 houses and 2 attributes, got houses={houses}, attributes={attributes}"
            )
        self.houses, self.attributes = houses, attributes
        self.cells = houses * attributes
        self.pairs = [(x, y) for x in range(self.cells) for y in range(x + 1, self.cells)]
        self.prompt_length = self.cells + len(self.pairs)
        self.length = self.prompt_length + len(self.pairs) + self.cells
        self.default_model = "zebra" if (houses, attributes) == DEFAULT_SIZE else ""
        # token ids: houses, mask, house sets (bitmasks 1 .. 2^houses - 1), none, RELATIONS, links (house pairs)
        self.mask_id = houses
        self.no_relation = houses + 2**houses
        self.link0 = self.no_relation + 1 + len(RELATIONS)
        self._pool: list[ZebraExample] | None = None

    @property
    def size(self) -> str:
        return f"{self.houses}x{self.attributes}"

    # ---------------- data ----------------
    def generate(self, n: int, seed: int = 0, difficulty: int | None = None) -> list[ZebraExample]:
        """``n`` unique-solution puzzles. ``difficulty`` (``extra_clues``) is the number of redundant clues
        added to an irredundant set (one where every clue is needed): 0 is hardest; default 2."""
        self.check_count(n)
        extra = DEFAULT_EXTRA if difficulty is None else difficulty
        rng = random.Random(f"zebra{self.size}-{seed}-{extra}")
        return [ZebraExample(*generate_puzzle(self.houses, self.attributes, rng, extra)) for _ in range(n)]

    def _parse_clue(self, data: Any, where: str) -> Clue:
        if not isinstance(data, dict) or "kind" not in data or "a" not in data:
            raise ValueError(f"{where}: a clue must be an object with 'kind', 'a' and 'b' or 'house', got {data!r}")
        unknown = set(data) - {"kind", "a", "b", "house"}
        if unknown:
            raise ValueError(f"{where}: unknown clue fields {sorted(unknown)}")
        items = {k: tuple(data[k]) if isinstance(data.get(k), list) else data.get(k) for k in ("a", "b")}
        clue = Clue(data["kind"], items["a"], items["b"], data.get("house"))
        if errors := clue_errors(clue, self.houses, self.attributes):
            raise ValueError(f"{where}: {'; '.join(errors)}")
        return clue

    def _parse_row(self, row: Any, where: str) -> ZebraExample:
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
        missing = [k for k in ("houses", "attributes", "clues") if k not in row]
        if missing:
            raise ValueError(f"{where}: missing field(s) {', '.join(missing)}")
        if (row["houses"], row["attributes"]) != (self.houses, self.attributes):
            raise ValueError(
                f"{where}: a {row['houses']} x {row['attributes']} puzzle, but this task reads {self.houses} x "
                f"{self.attributes}; use get_task('zebra', houses={row['houses']}, attributes={row['attributes']})"
            )
        if not isinstance(row["clues"], list):
            raise ValueError(f"{where}: 'clues' must be a list")
        clues = [self._parse_clue(c, f"{where}: clue {i}") for i, c in enumerate(row["clues"])]
        try:
            self.relations(clues)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        solution = row.get("solution")
        if solution is None:
            found = solve(clues, self.houses, self.attributes, limit=2)
            if len(found) != 1:
                raise ValueError(
                    f"{where}: the clues have {'no' if not found else 'several'} solution(s) and no 'solution' is given"
                )
            return ZebraExample(clues, found[0])
        if not (
            isinstance(solution, list) and all(isinstance(r, list) and all(type(h) is int for h in r) for r in solution)
        ):
            raise ValueError(f"{where}: 'solution' must list, per attribute, the house of each value")
        if errors := violations(clues, solution, self.houses, self.attributes):
            raise ValueError(f"{where}: the solution is wrong ({'; '.join(errors)})")
        return ZebraExample(clues, solution)

    def load(self, path: str) -> list[ZebraExample]:
        """Read JSONL, one puzzle a line: ``{"houses", "attributes", "clues": [{"kind", "a": [attribute, value],
        "b": [attribute, value] | "house": h}], "solution": [[house of each value] per attribute]}`` (solution
        optional: then solved here, and it must be unique)."""
        return [
            self._parse_row(parse_json_line(line, where), where) for where, line in read_lines(path, "zebra", "puzzles")
        ]

    def save(self, examples: Sequence[ZebraExample], path: str) -> None:
        """Write examples as JSONL (the format :meth:`load` reads)."""

        def write(tmp: str) -> None:
            with open(tmp, "w") as f:
                for ex in examples:
                    row = {
                        "houses": self.houses,
                        "attributes": self.attributes,
                        "clues": [clue_to_json(c) for c in ex.clues],
                        "solution": ex.solution,
                    }
                    f.write(json.dumps(row) + "\n")

        atomic_write(Path(path), write)

    # ---------------- token layout ----------------
    def vocab(self) -> tuple[int, int]:
        return self.link0 + self.houses**2, self.mask_id

    def coordinates(self) -> list[list[int]]:
        """Three tables: region (house clues, relations, links, answer) and the two items of the position."""
        items = [(x, x) for x in range(self.cells)]
        rows = [(0, *p) for p in items] + [(1, *p) for p in self.pairs] + [(2, *p) for p in self.pairs]
        rows += [(3, *p) for p in items]
        return [list(t) for t in zip(*rows)]

    def relations(self, clues: Sequence[Clue]) -> dict[tuple[int, int], str]:
        """Pair of item numbers (x < y) -> the relation of x to y, from the two-item clues."""
        if clashes := pair_clashes(list(clues)):
            raise ValueError(
                f"clues {clashes[0][0]} and {clashes[0][1]} relate the same two items; the zebra token "
                "layout holds one clue per pair of items"
            )
        H, out = self.houses, {}
        for c in clues:
            if c.kind not in HOUSE_KINDS:
                x, y = c.a[0] * H + c.a[1], c.b[0] * H + c.b[1]
                out[(x, y) if x < y else (y, x)] = c.kind if x < y or c.kind != "left_of" else "right_of"
        return out

    def prompt_tokens(self, clues: Sequence[Clue]) -> list[int]:
        """The house-clue and relation regions of the sequence."""
        allowed = [2**self.houses - 1] * self.cells
        for c in clues:
            if c.kind in HOUSE_KINDS:
                allowed[c.a[0] * self.houses + c.a[1]] &= 1 << c.house if c.kind == "at_house" else ~(1 << c.house)
        relations = self.relations(clues)
        kinds = [
            self.no_relation + 1 + RELATIONS.index(relations[p]) if p in relations else self.no_relation
            for p in self.pairs
        ]
        return [self.mask_id + s for s in allowed] + kinds

    def generation_tokens(self, clues: Sequence[Clue], solution: Placement | None = None) -> list[int]:
        """The link and answer regions: before generation (``solution`` None: links of related pairs and
        blank answer cells hold ``mask_id``) or filled in from ``solution``."""
        relations, givens = self.relations(clues), self.givens(clues)
        house = sum(solution, []) if solution is not None else None

        def link(x: int, y: int) -> int:
            if (x, y) not in relations:
                return self.no_relation
            return self.mask_id if house is None else self.link0 + house[x] * self.houses + house[y]

        answer = [givens.get(x, self.mask_id) for x in range(self.cells)] if house is None else house
        return [link(x, y) for x, y in self.pairs] + answer

    def layout_name(self) -> str:
        return f"{self.size} zebra puzzles"

    def givens(self, clues: Sequence[Clue]) -> dict[int, int]:
        """Item number -> house of the items placed by an ``at_house`` clue (given answer cells)."""
        return {c.a[0] * self.houses + c.a[1]: c.house for c in clues if c.kind == "at_house"}

    def encode(self, examples: Sequence[ZebraExample], model: MaskedDiffusionModel) -> EncodedBatch:
        self.check_examples(examples)
        self.check_model(model)
        rows = [self.prompt_tokens(ex.clues) + self.generation_tokens(ex.clues) for ex in examples]
        return EncodedBatch(input_ids=torch.tensor(rows, dtype=torch.long), gen_start=self.prompt_length)

    def targets(self, examples: Sequence[ZebraExample], model: MaskedDiffusionModel) -> torch.Tensor:
        """The link and answer regions filled in from each solution."""
        return torch.tensor([self.generation_tokens(ex.clues, ex.solution) for ex in examples], dtype=torch.long)

    def decode(self, examples: Sequence, sequences: torch.Tensor, model: MaskedDiffusionModel) -> list[Placement]:
        """Placements ``[attribute][value] = house``; a cell holding a non-house token decodes to -1."""
        cells = sequences[:, self.length - self.cells :].cpu()
        cells = torch.where(cells < self.houses, cells, torch.full_like(cells, -1))
        return cells.view(-1, self.attributes, self.houses).tolist()

    def score(self, examples: Sequence[ZebraExample], completions: Sequence[Placement], **_: Any) -> Scores:
        self.check_examples(examples, completions)
        correct, solved = [], []
        for ex, placement in zip(examples, completions):
            blanks = [divmod(x, self.houses) for x in range(self.cells) if x not in self.givens(ex.clues)]
            hits = sum(placement[a][v] == ex.solution[a][v] for a, v in blanks)
            correct.append(hits / max(len(blanks), 1))
            solved.append(not violations(ex.clues, placement, self.houses, self.attributes))
        acc = np.asarray(correct, dtype=np.float64)
        return Scores(reward=acc, solved=np.asarray(solved, dtype=bool), cell_accuracy=acc)

    # ---------------- built-in MDM training stream ----------------
    def pool(self) -> list[ZebraExample]:
        """The fixed seeded pool behind :meth:`sample_targets` (built on first use): puzzles with 0 to
        ``cells // 2`` extra clues, a mixture of difficulties, and at least one blank each."""
        if self._pool is None:
            rng = random.Random(f"zebra{self.size}-pool")
            self._pool = []
            while len(self._pool) < POOL_SIZE:
                ex = ZebraExample(*generate_puzzle(self.houses, self.attributes, rng, rng.randint(0, self.cells // 2)))
                if len(self.givens(ex.clues)) < self.cells:
                    self._pool.append(ex)
        return self._pool

    def sample_targets(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool puzzles under a random relabelling (values, attribute order, mirror), filled in; the cells
        generated at inference (links of related pairs, blank answer cells) are learnable."""
        pool = self.pool()
        rng = random.Random(int(torch.randint(0, 2**62, (1,), generator=generator)))
        rows, learnable = [], torch.zeros(batch_size, self.length, dtype=torch.bool)
        for r, i in enumerate(torch.randint(0, len(pool), (batch_size,), generator=generator).tolist()):
            clues, solution = relabelled(pool[i].clues, pool[i].solution, rng)
            rows.append(self.prompt_tokens(clues) + self.generation_tokens(clues, solution))
            learnable[r, self.prompt_length :] = torch.tensor(self.generation_tokens(clues)) == self.mask_id
        return torch.tensor(rows, dtype=torch.long), learnable
