"""The task interface: data, token layout, verifier and reward.

A task turns its examples into MDM inputs (prompt/clue tokens fixed, answer
positions set to the model's ``mask_id``), decodes generated sequences back into
completions, and scores them. Reward functions follow TRL's convention,
``reward(completions, examples) -> list[float]``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from unmask.models.base import MaskedDiffusionModel


def read_lines(path: str | Path, task: str, noun: str, comments: bool = False) -> list[tuple[str, str]]:
    """``(where, line)`` for every non-blank line of a data file, ``where`` = ``path:line`` for error messages;
    with ``comments``, lines starting with ``#`` are skipped too. A missing file or one without ``noun`` is an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{task} data file {path} does not exist")
    with open(path) as f:
        lines = [
            (f"{path}:{i}", line)
            for i, line in enumerate(f, start=1)
            if line.strip() and not (comments and line.lstrip().startswith("#"))
        ]
    if not lines:
        raise ValueError(f"{path}: no {noun} found")
    return lines


def parse_json_line(line: str, where: str) -> Any:
    """One JSONL line, or an error naming ``where``."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e.msg}); expected one JSON object per line") from None


@dataclass
class EncodedBatch:
    """MDM inputs for a batch of examples.

    ``input_ids`` holds ``mask_id`` exactly at the positions to generate;
    ``gen_start`` is where the generation region (and so block 0) begins.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None = None
    gen_start: int = 0


@dataclass
class Scores:
    """Per-example verifier output."""

    reward: np.ndarray
    solved: np.ndarray
    cell_accuracy: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)


class Task:
    """Base class of tasks; subclasses implement the abstract methods below."""

    name: str = "task"
    default_model: str = ""
    difficulty_name: str = "difficulty"  # what ``generate``'s one difficulty knob counts (sudoku: "clues")
    example_type: type = object  # what ``generate`` / ``load`` return and ``encode`` / ``score`` take
    OPTIONS: ClassVar[dict[str, str]] = {}  # help text of the constructor's keyword options (unmask.tasks.options)

    def check_count(self, n: Any) -> None:
        """One clear error for a number of examples to generate that is not an integer >= 0."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"{self.name}: the number of examples to generate must be an integer >= 0, got {n!r}")

    def check_examples(self, examples: Sequence, completions: Sequence | None = None) -> None:
        """One clear error for examples that are not this task's (e.g. strings), or ``completions`` that do not
        pair one to one with them (``score``)."""
        wrong = (
            examples
            if isinstance(examples, (str, bytes))
            else next((e for e in examples if not isinstance(e, self.example_type)), None)
        )
        if wrong is not None:
            raise ValueError(
                f"{self.name}: examples must be {self.example_type.__name__} objects, as task.generate(n) "
                f"or task.load(PATH) return them; got {type(wrong).__name__} {repr(wrong)[:40]}"
            )
        if completions is not None and len(completions) != len(examples):
            raise ValueError(
                f"{self.name}: {len(completions)} completions for {len(examples)} examples; score takes one "
                "completion per example (task.decode(examples, out.sequences, model))"
            )

    def load(self, path: str) -> list:
        """Read examples from a file."""
        raise NotImplementedError

    def generate(self, n: int, seed: int = 0, difficulty: int | None = None) -> list:
        """Generate ``n`` fresh examples (seeded) at ``difficulty`` (see ``difficulty_name``; None: the default)."""
        raise NotImplementedError(f"task {self.name} has no generator; pass --data FILE")

    def encode(self, examples: Sequence, model: MaskedDiffusionModel) -> EncodedBatch:
        raise NotImplementedError

    def decode(self, examples: Sequence, sequences: torch.Tensor, model: MaskedDiffusionModel) -> list:
        raise NotImplementedError

    def score(self, examples: Sequence, completions: Sequence, **reward_inputs: Any) -> Scores:
        """Verify completions; ``reward_inputs`` (e.g. ``logprob``) feed reward variants that need them."""
        raise NotImplementedError

    def targets(self, examples: Sequence, model: MaskedDiffusionModel) -> torch.Tensor:
        """The true token of every generated position (B, Lg): the labels of supervised pre-training (a policy's
        coupling, imitation) and what oracles read."""
        raise NotImplementedError(
            f"task {self.name} gives no per-position target tokens, which the coupling's pre-training, imitation and "
            "the oracles need (sudoku, zebra and arithmetic give them); pass --coupling-prompts 0 to leave the "
            "coupling to GRPO, or drop --coupling-rounds / --imitation-rounds"
        )

    def reward(self, completions: Sequence, examples: Sequence, **kwargs: Any) -> list[float]:
        """TRL-style reward function: the task's paper reward per completion."""
        return self.score(examples, completions, **kwargs).reward.tolist()

    # --- built-in MDM training (tasks whose model we train ourselves) ---
    def coordinates(self) -> list[list[int]]:
        """Factorised position tables for the built-in transformer."""
        raise NotImplementedError(f"task {self.name} has no built-in model layout")

    def vocab(self) -> tuple[int, int]:
        """(vocab_size, mask_id) of the built-in model's token layout."""
        raise NotImplementedError(f"task {self.name} has no built-in model layout")

    def sample_targets(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean training sequences (B, L) and the mask of positions the MDM learns to fill."""
        raise NotImplementedError(f"task {self.name} has no built-in model training stream")

    def layout_name(self) -> str:
        """The inputs a built-in model must be trained for, as the mismatch error names them."""
        return f"{self.name} inputs"

    def check_model(self, model: MaskedDiffusionModel) -> None:
        """Refuse a model whose vocabulary, mask id or length differ from this task's built-in layout."""
        vocab_size, mask_id = self.vocab()
        length = len(self.coordinates()[0])
        seq_len = getattr(getattr(model, "config", None), "seq_len", length)
        if (model.vocab_size, model.mask_id, seq_len) != (vocab_size, mask_id, length):
            raise ValueError(
                f"model {model.name!r} (vocab {model.vocab_size}, mask id {model.mask_id}, length {seq_len}) does not "
                f"read {self.layout_name()} (vocab {vocab_size}, mask id {mask_id}, length {length}); use a model "
                "trained for this task and these options (pass the --task-option flags the model was trained with: "
                "its config.json, train.task_options)"
            )

    # --- display (``unmask show-order``) ---
    def answer_shape(self, length: int) -> tuple[int, int]:
        """(rows, columns) to draw a generation region of ``length`` positions in; default one row."""
        return 1, length

    def token_text(self, sequences: torch.Tensor, model: MaskedDiffusionModel) -> list[list[str]]:
        """Printable text of every token of ``sequences`` (B, L): the model's tokenizer's tokens when it
        has one (Hugging Face dLLMs), else the token ids."""
        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is not None:
            return [tokenizer.convert_ids_to_tokens(row) for row in sequences.tolist()]
        return [[str(t) for t in row] for row in sequences.tolist()]
