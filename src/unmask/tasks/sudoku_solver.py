"""Exact sudoku solving, uniqueness proofs and unique-puzzle generation.

Pure Python with bitmask candidates and minimum-remaining-values branching;
fast enough to generate thousands of 9x9 puzzles per minute.
"""

from __future__ import annotations

import random
from functools import cache


@cache
def units(box: int) -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[int, int, int], ...]]:
    """For an ``N = box**2`` grid: the peers of each cell and its (row, col, box) indices."""
    n = box * box
    rcb = tuple((i // n, i % n, (i // n) // box * box + (i % n) // box) for i in range(n * n))
    peers = tuple(
        tuple(
            j
            for j in range(n * n)
            if j != i and (rcb[i][0] == rcb[j][0] or rcb[i][1] == rcb[j][1] or rcb[i][2] == rcb[j][2])
        )
        for i in range(n * n)
    )
    return peers, rcb


def _search(grid: list[int], box: int, limit: int, rng: random.Random | None, out: list[list[int]]) -> None:
    n = box * box
    _, rcb = units(box)
    full = (1 << n) - 1
    rows, cols, boxes = [0] * n, [0] * n, [0] * n
    blanks = []
    for i, v in enumerate(grid):
        if v:
            r, c, b = rcb[i]
            bit = 1 << (v - 1)
            if rows[r] & bit or cols[c] & bit or boxes[b] & bit:
                return  # contradictory clues: no solution
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
        else:
            blanks.append(i)

    def rec() -> bool:
        best, best_cands, best_count = -1, 0, n + 1
        for i in blanks:
            if grid[i]:
                continue
            r, c, b = rcb[i]
            cands = full & ~(rows[r] | cols[c] | boxes[b])
            count = cands.bit_count()
            if count < best_count:
                best, best_cands, best_count = i, cands, count
                if count <= 1:
                    break
        if best < 0:
            out.append(list(grid))
            return len(out) >= limit
        if best_count == 0:
            return False
        digits = [d for d in range(1, n + 1) if best_cands >> (d - 1) & 1]
        if rng is not None:
            rng.shuffle(digits)
        r, c, b = rcb[best]
        for d in digits:
            bit = 1 << (d - 1)
            grid[best] = d
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
            if rec():
                return True
            rows[r] ^= bit
            cols[c] ^= bit
            boxes[b] ^= bit
        grid[best] = 0
        return False

    rec()


def solve(puzzle: list[int], box: int, limit: int = 2, rng: random.Random | None = None) -> list[list[int]]:
    """Return up to ``limit`` solutions of ``puzzle`` (0 = blank)."""
    out: list[list[int]] = []
    _search(list(puzzle), box, limit, rng, out)
    return out


def random_solution(box: int, rng: random.Random) -> list[int]:
    """A uniformly shuffled search over complete grids (distinct grids for distinct seeds)."""
    return solve([0] * box**4, box, limit=1, rng=rng)[0]


def is_unique_without(puzzle: list[int], cell: int, value: int, box: int) -> bool:
    """Whether blanking ``cell`` (whose solution value is ``value``) keeps the solution unique.

    The puzzle had a unique solution before, so it stays unique iff no solution
    puts another digit in ``cell``.
    """
    n = box * box
    peers, _ = units(box)
    used = {puzzle[j] for j in peers[cell]}
    for d in range(1, n + 1):
        if d != value and d not in used:
            trial = list(puzzle)
            trial[cell] = d
            if solve(trial, box, limit=1):
                return False
    return True


def generate_puzzle(box: int, clues: int, rng: random.Random, max_tries: int = 50) -> tuple[list[int], list[int]]:
    """A puzzle with exactly ``clues`` givens and a unique solution, and that solution."""
    n2 = box**4
    if not 0 < clues <= n2:
        raise ValueError(f"clues must be in [1, {n2}], got {clues}")
    for _ in range(max_tries):
        solution = random_solution(box, rng)
        puzzle = list(solution)
        order = list(range(n2))
        rng.shuffle(order)
        filled = n2
        for cell in order:
            if filled == clues:
                break
            v = puzzle[cell]
            puzzle[cell] = 0
            if is_unique_without(puzzle, cell, v, box):
                filled -= 1
            else:
                puzzle[cell] = v
        if filled == clues:
            return puzzle, solution
    raise ValueError(
        f"could not reach a unique {box * box}x{box * box} puzzle with {clues} clues in {max_tries} tries; use more clues"
    )
