"""Multi-digit arithmetic: ``a+b`` and ``a*b`` written most-significant digit first.

Addition of up to 8-digit operands by default; ``op="mul"`` with
``multiplier_digits=1`` is short multiplication (a number times one digit).
``propagate=p`` makes carry chains long: each digit pair of an addition is made to
sum to 9 with probability ``p`` (uniform digits do so 1 time in 10), so a carry runs
on through it and a high answer digit depends on digits far below it; the
least-significant-first order then turns each digit into a local sum of three digits
and the carry out below it.

Token layout of the built-in models (one character per token, vocabulary
``0123456789+*=_`` with ``_`` the padding character, ``mask_id`` = 14): with
``D = max_digits``, ``M = multiplier_digits`` (default ``D``) and an answer width
``W`` (``max(D, M) + 1`` for addition, ``D + M`` as soon as multiplication is
allowed), every problem is the fixed-length string

    a (D chars, right-aligned) | op | b (M chars, right-aligned) | = | a op b (W chars, right-aligned)

left-padded with ``_``: ``max_digits=4``, ``op="add"`` writes ``123+989`` as
``_123+_989=_1112``. Place values sit at fixed positions, so one model serves every
size up to ``D`` digits. The prompt ``a op b =`` is fixed; the ``W`` answer
positions are masked and generated (``gen_start`` = the prompt length). The shipped
model ``arithmetic`` reads the default layout (``op="add"``, ``max_digits=8``: 27 tokens);
``arithmetic-carry`` reads ``max_digits=16`` (51 tokens) and was trained with ``propagate=0.8``.

Scores: a completion is the answer region as text (``_1112``). It parses only as
padding followed by a number written without leading zeros; ``solved`` means it
parses to exactly ``a op b`` (so it equals the target region character for
character). The reward, like sudoku's fraction of blanks, is the fraction of the
``W`` answer positions holding the target character (leading pads included).

Files: one problem per line, ``123+989`` or ``123+989=1112`` (a given answer is
checked); blank lines and lines starting with ``#`` are skipped.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unmask.core.checkpoint import atomic_write
from unmask.models.base import MaskedDiffusionModel
from unmask.tasks.base import EncodedBatch, Scores, Task, read_lines

CHARS = "0123456789+*=_"
PAD = "_"
OPS = {"add": "+", "mul": "*"}
OP_CHOICES = ("add", "mul", "mixed")
LINE = re.compile(r"(\d+)([+*])(\d+)(?:=(\d+))?")


@dataclass
class ArithmeticExample:
    """``a op b`` with ``op`` the character ``+`` or ``*``."""

    a: int
    op: str
    b: int

    @property
    def answer(self) -> int:
        return self.a + self.b if self.op == "+" else self.a * self.b

    def __str__(self) -> str:
        return f"{self.a}{self.op}{self.b}={self.answer}"


def parse_answer(text: str) -> int | None:
    """The number an answer region holds: padding, then digits without leading zeros; None if malformed."""
    digits = text.lstrip(PAD)
    if not digits.isdigit() or not digits.isascii() or (len(digits) > 1 and digits[0] == "0"):
        return None
    return int(digits)


class ArithmeticTask(Task):
    """Addition, multiplication or both (``op``) of a number of up to ``max_digits`` digits and one of up to
    ``multiplier_digits`` (default ``max_digits``)."""

    example_type = ArithmeticExample
    name = "arithmetic"
    default_model = "arithmetic"
    difficulty_name = "digits"
    OPTIONS = {  # the constructor's options (unmask.tasks.options)
        "op": "add, mul (multiplication) or mixed (both, one per problem)",
        "max_digits": "digits of the longest operand the layout holds (>= 1); one model serves every size up to it",
        "multiplier_digits": "digits of the second factor of a multiplication (1 .. max_digits); none: max_digits",
        "propagate": "probability in [0, 1] that a digit pair of an addition sums to 9, so carries run on (long "
        "carry chains: the arithmetic-carry model); none: uniform digits",
    }

    def __init__(
        self, op: str = "add", max_digits: int = 8, multiplier_digits: int | None = None, propagate: float | None = None
    ) -> None:
        if op not in OP_CHOICES:
            raise ValueError(f"arithmetic: op must be one of {', '.join(OP_CHOICES)}, got {op!r}")
        if max_digits < 1:
            raise ValueError(f"arithmetic: max_digits must be a positive integer, got {max_digits}")
        M = max_digits if multiplier_digits is None else multiplier_digits
        if not 1 <= M <= max_digits:
            raise ValueError(f"arithmetic: multiplier_digits must be in [1, max_digits={max_digits}], got {M}")
        if propagate is not None and (
            op == "mul" or not isinstance(propagate, (int, float)) or not 0 <= propagate <= 1
        ):
            raise ValueError(
                f"arithmetic: propagate is a probability in [0, 1] for additions (op='add' or 'mixed'), "
                f"got propagate={propagate!r} with op={op!r}"
            )
        self.op, self.max_digits, self.multiplier_digits, self.propagate = op, max_digits, M, propagate
        self.ops = list(OPS.values()) if op == "mixed" else [OPS[op]]
        self.answer_width = max_digits + 1 if op == "add" else max_digits + M
        self.gen_start = max_digits + M + 2
        self.length = self.gen_start + self.answer_width

    # ---------------- data ----------------
    def _operand(self, digits: int, rng: random.Random) -> int:
        return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)

    def _carry(self, ex: ArithmeticExample, rng: random.Random) -> ArithmeticExample:
        """With ``propagate``, the addition ``ex`` with each digit of ``a`` at a place value where ``b`` has a digit
        replaced, with that probability, by the one that sums to 9 with it (``a``'s top digit stays non-zero)."""
        if ex.op != "+" or self.propagate is None:
            return ex
        a, b = str(ex.a)[::-1], str(ex.b)[::-1]
        digits = [int(c) for c in a]
        for i in range(min(len(a), len(b))):
            if rng.random() < self.propagate and not (i == len(a) - 1 > 0 and b[i] == "9"):
                digits[i] = 9 - int(b[i])
        return ArithmeticExample(int("".join(map(str, digits[::-1]))), ex.op, ex.b)

    def generate(self, n: int, seed: int = 0, difficulty: int | None = None) -> list[ArithmeticExample]:
        """``n`` problems whose first operand has exactly ``difficulty`` digits (default ``max_digits``) and the
        second ``min(difficulty, multiplier_digits)``; with ``op="mixed"`` each problem's operation is drawn at random."""
        self.check_count(n)
        digits = self.max_digits if difficulty is None else difficulty
        if not 1 <= digits <= self.max_digits:
            raise ValueError(f"{self.name}: digits must be in [1, {self.max_digits}] (max_digits), got {digits}")
        rng = random.Random(f"{self.name}-{self.op}-{seed}-{digits}")
        b_digits = min(digits, self.multiplier_digits)
        return [
            self._carry(
                ArithmeticExample(self._operand(digits, rng), rng.choice(self.ops), self._operand(b_digits, rng)), rng
            )
            for _ in range(n)
        ]

    def parse_line(self, text: str, where: str) -> ArithmeticExample:
        match = LINE.fullmatch("".join(text.split()))
        if not match:
            raise ValueError(f"{where}: expected a problem like 123+989 or 123*45=5535, got {text.strip()!r}")
        a, op, b, given = match.groups()
        if op not in self.ops:
            raise ValueError(
                f"{where}: {op!r} problems need op='{'mul' if op == '*' else 'add'}' or 'mixed' (this task: op={self.op!r})"
            )
        ex = ArithmeticExample(int(a), op, int(b))
        for value, most, knob in (
            (ex.a, self.max_digits, "max_digits"),
            (ex.b, self.multiplier_digits, "multiplier_digits"),
        ):
            if len(str(value)) > most:
                raise ValueError(
                    f"{where}: operand {value} has {len(str(value))} digits; this task holds at most {most} ({knob})"
                )
        if given is not None and int(given) != ex.answer:
            raise ValueError(f"{where}: {ex.a}{op}{ex.b} is {ex.answer}, not {int(given)}")
        return ex

    def load(self, path: str) -> list[ArithmeticExample]:
        """Read one problem per line (``123+989`` or ``123+989=1112``)."""
        return [self.parse_line(line, where) for where, line in read_lines(path, self.name, "problems", comments=True)]

    def save(self, examples: Sequence[ArithmeticExample], path: str) -> None:
        """Write ``a op b = answer`` lines (the format :meth:`load` reads)."""

        def write(tmp: str) -> None:
            with open(tmp, "w") as f:
                f.writelines(f"{ex}\n" for ex in examples)

        atomic_write(Path(path), write)

    # ---------------- token layout ----------------
    def layout(self, ex: ArithmeticExample) -> str:
        """The full fixed-length text of a solved example, e.g. ``_123+_989=_1112``."""
        D, M, W = self.max_digits, self.multiplier_digits, self.answer_width
        return f"{ex.a:{PAD}>{D}}{ex.op}{ex.b:{PAD}>{M}}={ex.answer:{PAD}>{W}}"

    def tokenize(self, text: str) -> list[int]:
        return [CHARS.index(c) for c in text]

    def detokenize(self, ids: Sequence[int]) -> str:
        """Text of token ids; a mask shows as ``?``."""
        return "".join(CHARS[i] if 0 <= i < len(CHARS) else "?" for i in ids)

    def vocab(self) -> tuple[int, int]:
        return len(CHARS) + 1, len(CHARS)

    def coordinates(self) -> list[list[int]]:
        return [list(range(self.length))]

    def layout_name(self) -> str:
        return (
            f"this {self.name} layout (op={self.op!r}, max_digits={self.max_digits}, "
            f"multiplier_digits={self.multiplier_digits})"
        )

    def encode(self, examples: Sequence[ArithmeticExample], model: MaskedDiffusionModel) -> EncodedBatch:
        self.check_examples(examples)
        self.check_model(model)
        _, mask_id = self.vocab()
        prompts = [self.tokenize(self.layout(ex)[: self.gen_start]) + [mask_id] * self.answer_width for ex in examples]
        return EncodedBatch(
            input_ids=torch.tensor(prompts, dtype=torch.long, device=model.device), gen_start=self.gen_start
        )

    def targets(self, examples: Sequence[ArithmeticExample], model: MaskedDiffusionModel) -> torch.Tensor:
        """The answer region's tokens of each solved example (its padded layout)."""
        return torch.tensor([self.tokenize(self.layout(ex)[self.gen_start :]) for ex in examples], dtype=torch.long)

    def decode(self, examples: Sequence, sequences: torch.Tensor, model: MaskedDiffusionModel) -> list[str]:
        """The answer region of each sequence as text (``_1112``)."""
        return [self.detokenize(row) for row in sequences[:, self.gen_start :].tolist()]

    def score(self, examples: Sequence[ArithmeticExample], completions: Sequence[str], **_: Any) -> Scores:
        self.check_examples(examples, completions)
        correct, solved = [], []
        W = self.answer_width
        for ex, text in zip(examples, completions):
            target = self.layout(ex)[self.gen_start :]
            text = text.rjust(W, PAD)
            fits = len(text) == W
            correct.append(sum(c == t for c, t in zip(text, target)) / W if fits else 0.0)
            solved.append(fits and parse_answer(text) == ex.answer)
        acc = np.asarray(correct, dtype=np.float64)
        return Scores(reward=acc, solved=np.asarray(solved, dtype=bool), cell_accuracy=acc)

    def token_text(self, sequences: torch.Tensor, model: MaskedDiffusionModel) -> list[list[str]]:
        return [list(self.detokenize(row)) for row in sequences.tolist()]

    # ---------------- built-in MDM training stream ----------------
    def sample_targets(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Solved problems with each operand's digit count uniform in 1..its maximum; the answer region is learnable."""
        rng = random.Random(int(torch.randint(0, 2**62, (1,), generator=generator)))
        examples = [
            self._carry(
                ArithmeticExample(
                    self._operand(rng.randint(1, self.max_digits), rng),
                    rng.choice(self.ops),
                    self._operand(rng.randint(1, self.multiplier_digits), rng),
                ),
                rng,
            )
            for _ in range(batch_size)
        ]
        targets = torch.tensor([self.tokenize(self.layout(ex)) for ex in examples], dtype=torch.long)
        learnable = torch.zeros_like(targets, dtype=torch.bool)
        learnable[:, self.gen_start :] = True
        return targets, learnable
