"""Exact solving, checking and unique-puzzle generation for logic-grid (zebra) puzzles.

A puzzle has ``houses`` houses in a row (house 0 is the leftmost) and
``attributes`` attributes; each attribute gives its ``houses`` values to the
houses one-to-one. An *item* is an (attribute, value) pair. A solution is a
*placement*, the house of every item: ``solution[attribute][value] = house``,
each row a permutation of the houses. Clues (all indices 0-based):

==================  ===============================================================
``same_house``      item ``a`` is in the same house as item ``b``
``not_same_house``  item ``a`` is not in the same house as item ``b``
``left_of``         item ``a`` is somewhere left of item ``b`` (any distance)
``next_to``         items ``a`` and ``b`` are in adjacent houses (either order)
``at_house``        item ``a`` is in house ``house``
``not_at_house``    item ``a`` is not in house ``house``
==================  ===============================================================

The solver keeps, per item, the bitmask of houses it may occupy, propagates the
permutation constraints (naked and hidden singles) and every clue to a fixpoint,
and branches on the item with the fewest houses left; it counts solutions up to
a limit, which is how uniqueness is proved.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

PAIR_KINDS = ("same_house", "not_same_house", "left_of", "next_to")
HOUSE_KINDS = ("at_house", "not_at_house")
KINDS = PAIR_KINDS + HOUSE_KINDS
# how often the generator proposes each kind; position clues are rarer so that puzzles need reasoning
KIND_WEIGHTS = {"same_house": 4, "not_same_house": 2, "left_of": 2, "next_to": 3, "at_house": 1, "not_at_house": 1}

Item = tuple[int, int]
Placement = list[list[int]]


@dataclass(frozen=True)
class Clue:
    """One clue: a ``kind`` from :data:`KINDS` on item ``a`` and either item ``b`` or a ``house``."""

    kind: str
    a: Item
    b: Item | None = None
    house: int | None = None

    def holds(self, placement: Placement) -> bool:
        """Whether the clue is true when item ``(a, v)`` lies in house ``placement[a][v]``."""
        x = placement[self.a[0]][self.a[1]]
        if self.kind in HOUSE_KINDS:
            return (x == self.house) == (self.kind == "at_house")
        y = placement[self.b[0]][self.b[1]]
        return {
            "same_house": x == y,
            "not_same_house": x != y,
            "left_of": x < y,
            "next_to": abs(x - y) == 1,
        }[self.kind]


def clue_errors(clue: Clue, houses: int, attributes: int) -> list[str]:
    """What makes ``clue`` ill-formed for a ``houses`` x ``attributes`` puzzle (empty when it is fine)."""
    if clue.kind not in KINDS:
        return [f"unknown clue kind {clue.kind!r} (kinds: {', '.join(KINDS)})"]
    errors = []
    pair = clue.kind in PAIR_KINDS
    items = [("a", clue.a)] + ([("b", clue.b)] if pair else [])
    for name, item in items:
        if not (isinstance(item, tuple) and len(item) == 2 and all(type(i) is int for i in item)):
            errors.append(f"{clue.kind} clue: {name} must be [attribute, value], got {item!r}")
        elif not (0 <= item[0] < attributes and 0 <= item[1] < houses):
            errors.append(
                f"{clue.kind} clue: item {name}={list(item)} is outside {attributes} attributes x {houses} values"
            )
    if pair and clue.house is not None:
        errors.append(f"{clue.kind} clue relates two items and takes no house")
    if not pair:
        if clue.b is not None:
            errors.append(f"{clue.kind} clue takes a house, not a second item")
        if type(clue.house) is not int or not 0 <= clue.house < houses:
            errors.append(f"{clue.kind} clue: house must be an integer in [0, {houses}), got {clue.house!r}")
    return errors


def violations(clues: list[Clue], placement: Placement, houses: int, attributes: int) -> list[str]:
    """Why ``placement`` is not a solution of ``clues`` (empty when every rule and clue holds)."""
    if len(placement) != attributes or any(len(row) != houses for row in placement):
        return [f"a placement lists {attributes} attributes x {houses} values"]
    errors = [
        f"attribute {a} does not put its {houses} values in distinct houses: {row}"
        for a, row in enumerate(placement)
        if sorted(row) != list(range(houses))
    ]
    return errors or [f"clue {i} ({clue.kind}) is false" for i, clue in enumerate(clues) if not clue.holds(placement)]


def _propagate(dom: list[int], pairs: list[tuple[str, int, int]], houses: int) -> bool:
    """Narrow the house sets ``dom[a * houses + v]`` in place to a fixpoint; False on a contradiction.
    ``pairs`` are the two-item clues as (kind, index of a, index of b)."""
    full = (1 << houses) - 1
    changed = True
    while changed:
        changed = False
        for base in range(0, len(dom), houses):
            group = dom[base : base + houses]
            # naked singles: an item fixed to a house takes it from the attribute's other values
            fixed = 0
            for d in group:
                if d & (d - 1) == 0:
                    if d == 0 or fixed & d:
                        return False
                    fixed |= d
            # hidden singles: a house only one value can still take gets that value
            once = twice = 0
            for d in group:
                twice |= once & d
                once |= d
            if once != full:
                return False
            alone = once & ~twice & ~fixed
            for v, d in enumerate(group):
                if d & (d - 1):
                    new = d & alone or d & ~fixed
                    if new & alone and new & (new - 1):
                        return False  # one value would need two houses
                    if new != d:
                        if new == 0:
                            return False
                        group[v] = new
                        changed = True
            dom[base : base + houses] = group
        for kind, x, y in pairs:
            dx, dy = dom[x], dom[y]
            if kind == "same_house":
                nx = ny = dx & dy
            elif kind == "not_same_house":
                nx = dx & ~dy if dy & (dy - 1) == 0 else dx
                ny = dy & ~dx if dx & (dx - 1) == 0 else dy
            elif kind == "left_of":
                nx = dx & ((1 << (dy.bit_length() - 1)) - 1) if dy else 0
                ny = dy & ~(((dx & -dx) << 1) - 1) if dx else 0
            else:  # next_to
                nx = dx & ((dy << 1) | (dy >> 1)) & full
                ny = dy & ((dx << 1) | (dx >> 1)) & full
            if nx == 0 or ny == 0:
                return False
            if nx != dx or ny != dy:
                dom[x], dom[y] = nx, ny
                changed = True
    return True


def _initial_domains(clues: list[Clue], houses: int, attributes: int) -> list[int]:
    dom = [(1 << houses) - 1] * (houses * attributes)
    for c in clues:
        i = c.a[0] * houses + c.a[1]
        if c.kind == "at_house":
            dom[i] &= 1 << c.house
        elif c.kind == "not_at_house":
            dom[i] &= ~(1 << c.house)
    return dom


def solve(clues: list[Clue], houses: int, attributes: int, limit: int = 2) -> list[Placement]:
    """Up to ``limit`` solutions of the puzzle (none: unsatisfiable; two or more: ambiguous)."""
    out: list[Placement] = []
    pairs = [(c.kind, c.a[0] * houses + c.a[1], c.b[0] * houses + c.b[1]) for c in clues if c.kind in PAIR_KINDS]

    def search(dom: list[int]) -> bool:
        if not _propagate(dom, pairs, houses):
            return False
        best, best_count = -1, houses + 1
        for i, d in enumerate(dom):
            count = d.bit_count()
            if 1 < count < best_count:
                best, best_count = i, count
        if best < 0:
            out.append([[d.bit_length() - 1 for d in dom[a : a + houses]] for a in range(0, len(dom), houses)])
            return len(out) >= limit
        d = dom[best]
        while d:
            bit = d & -d
            d ^= bit
            trial = list(dom)
            trial[best] = bit
            if search(trial):
                return True
        return False

    search(_initial_domains(clues, houses, attributes))
    return out


def random_solution(houses: int, attributes: int, rng: random.Random) -> Placement:
    """Each attribute an independent uniformly random permutation of its values over the houses."""
    return [rng.sample(range(houses), houses) for _ in range(attributes)]


def random_clue(solution: Placement, rng: random.Random) -> Clue:
    """A clue that is true of ``solution``, its kind drawn with :data:`KIND_WEIGHTS`."""
    attributes, houses = len(solution), len(solution[0])
    value_in = [
        [row.index(h) for h in range(houses)] for row in solution
    ]  # value_in[a][h]: attribute a's value in house h
    kind = rng.choices(KINDS, weights=[KIND_WEIGHTS[k] for k in KINDS])[0]

    def item(h: int, a: int) -> Item:
        return a, value_in[a][h]

    if kind in HOUSE_KINDS:
        h, a = rng.randrange(houses), rng.randrange(attributes)
        house = h if kind == "at_house" else rng.choice([k for k in range(houses) if k != h])
        return Clue(kind, item(h, a), house=house)
    if kind == "same_house":
        h = rng.randrange(houses)
        a, b = rng.sample(range(attributes), 2)
        return Clue(kind, item(h, a), item(h, b))
    if kind == "next_to":
        h = rng.randrange(houses - 1)
        hx, hy = (h, h + 1) if rng.random() < 0.5 else (h + 1, h)
        return Clue(kind, item(hx, rng.randrange(attributes)), item(hy, rng.randrange(attributes)))
    hx, hy = sorted(rng.sample(range(houses), 2))
    if kind == "not_same_house":
        a, b = rng.sample(range(attributes), 2)  # same attribute would be implied by the permutation rule
        if rng.random() < 0.5:
            hx, hy = hy, hx
        return Clue(kind, item(hx, a), item(hy, b))
    return Clue(kind, item(hx, rng.randrange(attributes)), item(hy, rng.randrange(attributes)))


def is_unique(clues: list[Clue], houses: int, attributes: int) -> bool:
    return len(solve(clues, houses, attributes, limit=2)) == 1


def item_pair(clue: Clue) -> tuple[Item, Item] | None:
    """The two items a two-item clue relates, in sorted order (None for a one-item clue). Generated puzzles
    relate each pair of items by at most one clue, which lets the built-in model hold the clues as a table."""
    return None if clue.kind in HOUSE_KINDS else (min(clue.a, clue.b), max(clue.a, clue.b))


def pair_clashes(clues: list[Clue]) -> list[tuple[int, int]]:
    """Index pairs of clues that relate the same two items."""
    first: dict[tuple[Item, Item], int] = {}
    clashes = []
    for i, clue in enumerate(clues):
        if (pair := item_pair(clue)) is not None:
            if pair in first:
                clashes.append((first[pair], i))
            first.setdefault(pair, i)
    return clashes


def generate_puzzle(houses: int, attributes: int, rng: random.Random, extra: int = 0) -> tuple[list[Clue], Placement]:
    """Clues with a unique solution, and that solution.

    True clues of a random solution are added until the solver proves it
    unique, each one chosen to rule out a rival solution the solver found;
    clues are then dropped in random order while the solution stays unique
    (an irredundant set: every clue is needed), and ``extra`` redundant clues
    (dropped ones first, then fresh true ones) are added back as help. No two
    clues relate the same two items.
    """
    if houses < 2 or attributes < 2:
        raise ValueError(f"zebra puzzles need at least 2 houses and 2 attributes, got {houses} x {attributes}")
    if not 0 <= extra <= houses * attributes:
        raise ValueError(
            f"extra clues must be in [0, {houses * attributes}] for {houses} x {attributes} puzzles, got {extra}"
        )
    solution = random_solution(houses, attributes, rng)
    clues: list[Clue] = []
    seen: set[Clue] = set()
    related: set[tuple[Item, Item]] = set()

    def draw(rival: Placement | None = None) -> Clue:
        """A new true clue on unrelated items that rules ``rival`` out (one-item clues always can)."""
        while True:
            clue = random_clue(solution, rng)
            pair = item_pair(clue)
            if clue not in seen and pair not in related and not (rival and clue.holds(rival)):
                seen.add(clue)
                if pair is not None:
                    related.add(pair)
                return clue

    while len(found := solve(clues, houses, attributes, limit=2)) > 1:
        clues.append(draw(rival=found[0] if found[0] != solution else found[1]))
    needed = list(clues)
    for clue in rng.sample(clues, len(clues)):
        rest = [c for c in needed if c != clue]
        if is_unique(rest, houses, attributes):
            needed = rest
    spare = [c for c in clues if c not in needed]
    while len(spare) < extra:
        spare.append(draw())
    clues = needed + spare[:extra]
    rng.shuffle(clues)
    return clues, solution


def relabelled(clues: list[Clue], solution: Placement, rng: random.Random) -> tuple[list[Clue], Placement]:
    """A random equivalent puzzle and its solution.

    Values are renamed within each attribute, attributes reordered, and with
    probability 1/2 the row of houses is mirrored (house ``h`` becomes
    ``houses - 1 - h``, so ``left_of`` swaps its operands). Houses are never
    permuted otherwise: ``left_of`` and ``next_to`` depend on their order.
    """
    attributes, houses = len(solution), len(solution[0])
    attr = rng.sample(range(attributes), attributes)
    values = [rng.sample(range(houses), houses) for _ in range(attributes)]
    mirror = rng.random() < 0.5

    def item(i: Item) -> Item:
        return attr[i[0]], values[i[0]][i[1]]

    def house(h: int) -> int:
        return houses - 1 - h if mirror else h

    placement = [[0] * houses for _ in range(attributes)]
    for a, row in enumerate(solution):
        for v, h in enumerate(row):
            placement[attr[a]][values[a][v]] = house(h)
    out = []
    for c in clues:
        if c.kind in HOUSE_KINDS:
            out.append(Clue(c.kind, item(c.a), house=house(c.house)))
            continue
        a, b = item(c.a), item(c.b)
        out.append(Clue(c.kind, b, a) if mirror and c.kind == "left_of" else Clue(c.kind, a, b))
    return out, placement
