"""Sudoku tasks (``sudoku4``, ``sudoku9``): generator, CSV reader, verifier, reward.

Token layout of the built-in models: the grid read row by row, digit ``d`` as
token ``d - 1``, blanks as ``mask_id = N``. Clues are the prompt (fixed); the
blanks are generated. The reward is UPO's: the fraction of blanks filled
correctly (UPO §5.1); ``solved`` means the whole grid is a valid solution.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unmask.core.checkpoint import atomic_write
from unmask.models.base import MaskedDiffusionModel
from unmask.tasks.base import EncodedBatch, Scores, Task
from unmask.tasks.sudoku_solver import generate_puzzle, random_solution, solve, units


@dataclass
class SudokuExample:
    """A puzzle (0 = blank) and its solution, both flat row-major digit lists."""

    puzzle: list[int]
    solution: list[int]

    @property
    def clues(self) -> int:
        return sum(1 for v in self.puzzle if v)


def grid_errors(grid: Sequence[int], box: int) -> list[str]:
    """Sudoku rule violations in ``grid`` (0 = blank, ignored)."""
    n = box * box
    _, rcb = units(box)
    seen: dict[tuple[int, int, int], int] = {}
    errors = []
    for i, v in enumerate(grid):
        if not v:
            continue
        for kind, idx in zip(("row", "column", "box"), rcb[i]):
            key = (("row", "column", "box").index(kind), idx, v)
            if key in seen:
                errors.append(f"digit {v} repeated in {kind} {idx + 1}")
            seen[key] = i
    return sorted(set(errors))[: 3 * n]


class SudokuTask(Task):
    """N x N sudoku with ``N = box**2`` (box 2: 4x4, box 3: 9x9)."""

    example_type = SudokuExample
    difficulty_name = "clues"

    def __init__(self, box: int) -> None:
        self.box = box
        self.n = box * box
        self.cells = self.n * self.n
        self.name = f"sudoku{self.n}"
        self.default_model = {2: "sudoku4", 3: "sudoku9-small"}.get(box, "")
        self._pool: torch.Tensor | None = None

    # ---------------- data ----------------
    def generate(self, n: int, seed: int = 0, difficulty: int | None = None) -> list[SudokuExample]:
        """``n`` unique-solution puzzles with exactly ``difficulty`` clues (givens); default: a medium difficulty."""
        self.check_count(n)
        clues = difficulty if difficulty is not None else {2: 8, 3: 30}.get(self.box, self.cells // 2)
        rng = random.Random(f"{self.name}-{seed}-{clues}")
        out = []
        for _ in range(n):
            puzzle, solution = generate_puzzle(self.box, clues, rng)
            out.append(SudokuExample(puzzle, solution))
        return out

    def parse_grid(self, text: str, where: str, allow_blanks: bool) -> list[int]:
        text = text.strip()
        if len(text) != self.cells:
            raise ValueError(
                f"{where}: expected {self.cells} characters for {self.name}, got {len(text)} ({text[:20]!r})"
            )
        grid = []
        for ch in text:
            if ch in ".0" and allow_blanks:
                grid.append(0)
            elif ch.isdigit() and 1 <= int(ch) <= self.n:
                grid.append(int(ch))
            else:
                allowed = f"digits 1-{self.n}" + (" and 0 or . for blanks" if allow_blanks else "")
                raise ValueError(f"{where}: invalid character {ch!r}; {self.name} grids use {allowed}")
        return grid

    def load(self, path: str) -> list[SudokuExample]:
        """Read a CSV with columns ``Puzzle,Solution`` (Solution optional: then solved here)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"sudoku data file {path} does not exist")
        examples = []
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or header[0].strip().lower() != "puzzle":
                raise ValueError(f"{path}:1: expected a header 'Puzzle,Solution', got {header!r}")
            has_solution = len(header) > 1 and header[1].strip().lower() == "solution"
            for line, row in enumerate(reader, start=2):
                if not row or not "".join(row).strip():
                    continue
                where = f"{path}:{line}"
                puzzle = self.parse_grid(row[0], where, allow_blanks=True)
                if errors := grid_errors(puzzle, self.box):
                    raise ValueError(f"{where}: contradictory clues ({'; '.join(errors)})")
                if has_solution and len(row) > 1 and row[1].strip():
                    solution = self.parse_grid(row[1], where, allow_blanks=False)
                    if errors := grid_errors(solution, self.box):
                        raise ValueError(f"{where}: the solution breaks the rules ({'; '.join(errors)})")
                    if any(p and p != s for p, s in zip(puzzle, solution)):
                        raise ValueError(f"{where}: the solution disagrees with the puzzle's clues")
                else:
                    found = solve(puzzle, self.box, limit=1)
                    if not found:
                        raise ValueError(f"{where}: the puzzle has no solution")
                    solution = found[0]
                examples.append(SudokuExample(puzzle, solution))
        if not examples:
            raise ValueError(f"{path}: no puzzles found")
        return examples

    def save(self, examples: Sequence[SudokuExample], path: str) -> None:
        """Write examples as ``Puzzle,Solution`` CSV (the format :meth:`load` reads)."""

        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["Puzzle", "Solution"])
                for ex in examples:
                    w.writerow(["".join(map(str, ex.puzzle)), "".join(map(str, ex.solution))])

        atomic_write(Path(path), write)

    # ---------------- token layout ----------------
    def vocab(self) -> tuple[int, int]:
        return self.n + 1, self.n

    def coordinates(self) -> list[list[int]]:
        _, rcb = units(self.box)
        return [[r for r, _, _ in rcb], [c for _, c, _ in rcb], [b for _, _, b in rcb]]

    def layout_name(self) -> str:
        return f"{self.name} grids"

    def encode(self, examples: Sequence[SudokuExample], model: MaskedDiffusionModel) -> EncodedBatch:
        self.check_examples(examples)
        self.check_model(model)
        grid = torch.tensor([ex.puzzle for ex in examples], dtype=torch.long)
        return EncodedBatch(input_ids=torch.where(grid > 0, grid - 1, torch.full_like(grid, self.n)))

    def targets(self, examples: Sequence[SudokuExample], model: MaskedDiffusionModel) -> torch.Tensor:
        return torch.tensor([ex.solution for ex in examples], dtype=torch.long) - 1

    def decode(self, examples: Sequence, sequences: torch.Tensor, model: MaskedDiffusionModel) -> list[list[int]]:
        seq = sequences.cpu()
        return torch.where(seq == self.n, torch.zeros_like(seq), seq + 1).tolist()

    def score(self, examples: Sequence[SudokuExample], completions: Sequence[Sequence[int]], **_: Any) -> Scores:
        self.check_examples(examples, completions)
        correct, solved = [], []
        for ex, grid in zip(examples, completions):
            blanks = [i for i, v in enumerate(ex.puzzle) if not v]
            hits = sum(grid[i] == ex.solution[i] for i in blanks)
            correct.append(hits / max(len(blanks), 1))
            keeps_clues = all(grid[i] == v for i, v in enumerate(ex.puzzle) if v)
            solved.append(keeps_clues and all(grid) and not grid_errors(grid, self.box))
        acc = np.asarray(correct, dtype=np.float64)
        return Scores(reward=acc, solved=np.asarray(solved, dtype=bool), cell_accuracy=acc)

    def answer_shape(self, length: int) -> tuple[int, int]:
        return self.n, self.n

    def token_text(self, sequences: torch.Tensor, model: MaskedDiffusionModel) -> list[list[str]]:
        return [[str(v) if v else "?" for v in row] for row in self.decode([], sequences, model)]

    # ---------------- built-in MDM training stream ----------------
    def _symmetry(self, rng: random.Random) -> list[int]:
        """A random validity-preserving cell permutation: bands, rows in bands, stacks, columns, transpose."""
        b = self.box

        def axis() -> list[int]:
            bands = rng.sample(range(b), b)
            return [band * b + r for band in bands for r in rng.sample(range(b), b)]

        rows, cols = axis(), axis()
        perm = [rows[i // self.n] * self.n + cols[i % self.n] for i in range(self.cells)]
        if rng.random() < 0.5:
            perm = [perm[(i % self.n) * self.n + i // self.n] for i in range(self.cells)]
        return perm

    def sample_targets(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Solved grids from a fixed pool, each under a random symmetry and digit relabelling."""
        if self._pool is None:
            pool_rng = random.Random(f"{self.name}-pool")
            self._pool = torch.tensor([random_solution(self.box, pool_rng) for _ in range(2048)], dtype=torch.long) - 1
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        rng = random.Random(seed)
        idx = torch.randint(0, len(self._pool), (batch_size,), generator=generator)
        perms = torch.tensor([self._symmetry(rng) for _ in range(batch_size)], dtype=torch.long)
        digits = torch.stack([torch.randperm(self.n, generator=generator) for _ in range(batch_size)])
        grids = torch.gather(self._pool[idx], 1, perms)
        return torch.gather(digits, 1, grids), torch.ones(batch_size, self.cells, dtype=torch.bool)
