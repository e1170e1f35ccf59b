"""Math answers: extraction from text, verification with ``math-verify``, UPO's dense reward.

Extraction (:func:`extract_answer`) takes the last ``\\boxed{...}``, else the text
after the last ``####`` (GSM8K's format), else after the last "The answer is",
else the last number. Verification (:func:`is_equivalent`) parses both sides
with ``math-verify`` and compares them symbolically and numerically.

``math-verify`` enforces its own time limits with ``SIGALRM``, which works on the
main thread only; we call it with those limits off and run each check in a
daemon thread with a deadline instead, so rewards can be computed from any
thread (data loaders, trainer callbacks). A check that overruns counts as wrong;
its thread is abandoned and finishes in the background.

UPO's dense reward for GSM8K/MATH500 (UPO §4.1, App. E.2) adds to the binary
correctness a *relative* bonus from the trajectory log-probability
``sum_n log pi_theta(x_{n-1} | x_n, a_n)``: within a group of rollouts of one
prompt, ``bonus`` for the most likely trajectory, 0 for the least likely,
linear in between (:func:`relative_logprob_bonus`).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?")
ANSWER_IS = re.compile(r"the (?:final )?answer is:?", re.IGNORECASE)
VERIFY_TIMEOUT = 5.0  # seconds per parse-and-compare, as math-verify's own default


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced; None if absent."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    open_at = text.find("{", start)
    if open_at < 0:
        return None
    depth = 0
    for i in range(open_at, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[open_at + 1 : i]
    return None


def _rest_of_line(text: str, end: int) -> str:
    return text[end:].strip().split("\n", 1)[0].strip()


def clean_answer(answer: str) -> str:
    """Strip surrounding ``$``, spaces and a final period; drop thousands separators from plain numbers."""
    a = re.sub(r"^[\s$]+|[\s$.]+$", "", answer)
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", a):
        a = a.replace(",", "")
    return a


def extract_answer(text: str) -> str | None:
    """The final answer stated in ``text`` (see the module docstring for the order); None if none."""
    boxed = last_boxed(text)
    if boxed is not None:
        return clean_answer(boxed)
    if "####" in text:
        return clean_answer(_rest_of_line(text, text.rfind("####") + 4))
    marks = list(ANSWER_IS.finditer(text))
    if marks and (rest := _rest_of_line(text, marks[-1].end())):
        return clean_answer(rest)
    numbers = NUMBER.findall(text)
    return clean_answer(numbers[-1]) if numbers else None


def gsm8k_gold(solution: str) -> str | None:
    """GSM8K's gold answer: the number after ``#### `` at the end of the reference solution."""
    return clean_answer(_rest_of_line(solution, solution.rfind("####") + 4)) if "####" in solution else None


def math_gold(solution: str) -> str | None:
    """MATH's gold answer: after the last "The answer is:" if present, else the last ``\\boxed{}``."""
    marks = list(ANSWER_IS.finditer(solution))
    if marks and (rest := solution[marks[-1].end() :].strip()):
        return clean_answer(rest)
    boxed = last_boxed(solution)
    return None if boxed is None else clean_answer(boxed)


class _DropTimeoutNotice(logging.Filter):
    """math-verify warns once that its SIGALRM timeout is off; we enforce our own deadline."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutNotice())


@lru_cache(maxsize=4096)
def _parse(answer: str) -> tuple:
    from math_verify import parse

    return tuple(parse("\\boxed{" + answer + "}", parsing_timeout=None))


def symbolic_equal(gold: str, answer: str) -> bool:
    """math-verify's comparison of the two answers, no time limit (see :func:`is_equivalent`)."""
    from math_verify import verify

    g, a = _parse(gold), _parse(answer)
    return bool(g and a and verify(list(g), list(a), timeout_seconds=None))


def is_equivalent(gold: str, answer: str | None, timeout: float = VERIFY_TIMEOUT) -> bool:
    """Whether ``answer`` equals ``gold`` mathematically (math-verify), within ``timeout`` seconds."""
    if answer is None or not answer.strip():
        return False
    if gold.strip() == answer.strip():
        return True
    result: list[bool] = []

    def run() -> None:
        try:
            result.append(symbolic_equal(gold, answer))
        except Exception:  # a malformed expression is a wrong answer, never a crash
            result.append(False)

    worker = threading.Thread(target=run, daemon=True, name="unmask-math-verify")
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        logging.getLogger(__name__).warning(
            "math-verify took over %.0f s on %r vs %r; counted as wrong", timeout, gold, answer
        )
        return False
    return result[0]


def relative_logprob_bonus(logprob: Sequence[float], group: Sequence[Any], bonus: float = 0.25) -> np.ndarray:
    """UPO App. E.2: per group of rollouts, ``bonus * (lp - min) / (max - min)``; 0 where a group's log-probs are equal."""
    lp = np.asarray(logprob, dtype=np.float64)
    if lp.shape != (len(group),):
        raise ValueError(
            f"need one log-probability per completion: got {lp.shape[0] if lp.ndim else 0} for {len(group)}"
        )
    out = np.zeros_like(lp)
    members: dict[Any, list[int]] = {}
    for i, g in enumerate(group):
        members.setdefault(g, []).append(i)
    for rows in members.values():
        lo, hi = lp[rows].min(), lp[rows].max()
        if np.isfinite(lo) and hi > lo:
            out[rows] = bonus * (lp[rows] - lo) / (hi - lo)
    return out
