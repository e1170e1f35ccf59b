"""Math word problems for text MDMs: ``gsm8k`` and ``math500`` (data, prompt, verified reward).

Data: JSONL with ``question`` and ``answer``. GSM8K's ``answer`` is a worked
solution ending in ``#### N``; MATH500's ends in ``\\boxed{...}`` and "The answer
is: ...". Hugging Face dataset names (``OWNER/NAME[:CONFIG][@SPLIT]``, split
``test`` by default) are read with ``datasets`` where a hub is reachable; records
with ``problem``/``solution``/``answer`` (e.g. MATH-500 on the hub) take
``answer`` as the final answer.

Layout: the prompt (UPO App. E.2's template, inside the tokenizer's chat template
when it has one) is left-padded to the batch's longest prompt, followed by
``gen_length`` mask tokens; ``gen_start`` is the padded prompt length, so blocks
start right after the prompt as in LLaDA's ``generate()``.

Scores: ``solved`` = the extracted final answer is verified equal to the gold
one (:mod:`unmask.tasks.math_reward`); ``cell_accuracy`` is the same as a float
(math has no per-cell credit); ``reward`` is binary correctness, or with
``reward="upo"`` correctness plus UPO's relative log-probability bonus.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unmask.models.base import MaskedDiffusionModel
from unmask.tasks.base import EncodedBatch, Scores, Task, parse_json_line, read_lines
from unmask.tasks.math_reward import (
    VERIFY_TIMEOUT,
    clean_answer,
    extract_answer,
    gsm8k_gold,
    is_equivalent,
    math_gold,
    relative_logprob_bonus,
)

UPO_PROMPT = (
    "You are a math expert. You will be given a question to solve. Solve it step by step. "
    "Wrap the final answer in a \\boxed{}.\nRespond in the following format:\n"
    "<reasoning>\nYour reasoning here\n</reasoning>\n<answer>\n\\boxed{...}\n</answer>\n\n{question}"
)
RESPONSE_PREFIX = "<reasoning>\n"
HUB_NAME = re.compile(r"[\w.-]+/[\w.-]+(?::[\w.-]+)?(?:@[\w.:%\[\]-]+)?")
REWARDS = ("binary", "upo")


@dataclass
class MathExample:
    """A problem, its gold final answer, and the reference worked solution when the data has one."""

    question: str
    answer: str
    solution: str = ""


def read_records(spec: str) -> list[tuple[str, dict]]:
    """``(where, record)`` pairs from a JSONL file or a Hugging Face dataset name."""
    path = Path(spec)
    if path.is_file():
        records = [(where, parse_json_line(line, where)) for where, line in read_lines(path, "math", "records")]
        for where, record in records:
            if not isinstance(record, dict):
                raise ValueError(f"{where}: expected a JSON object with 'question' and 'answer'")
        return records
    if path.exists() or not HUB_NAME.fullmatch(spec) or spec.endswith((".jsonl", ".json")):
        raise FileNotFoundError(
            f"data file {spec} does not exist (Hugging Face datasets are named OWNER/NAME[:CONFIG][@SPLIT])"
        )
    try:
        import datasets
    except ImportError as e:
        raise ValueError(
            f"reading the Hugging Face dataset {spec!r} needs `pip install datasets`; or pass a JSONL file"
        ) from e
    name, _, split = spec.partition("@")
    name, _, config = name.partition(":")
    rows = datasets.load_dataset(name, config or None, split=split or "test")
    return [(f"{spec}[{i}]", dict(row)) for i, row in enumerate(rows)]


def _text_model(model: MaskedDiffusionModel, task: str) -> MaskedDiffusionModel:
    if getattr(model, "tokenizer", None) is None:
        raise ValueError(
            f"task {task} needs a text MDM with a tokenizer, e.g. --model hf:GSAI-ML/LLaDA-8B-Instruct; got {model.name!r}"
        )
    return model


def encode_prompts(
    prompts: Sequence[Sequence[int]], model: MaskedDiffusionModel, gen_length: int, name: str = "text"
) -> EncodedBatch:
    """Token-id prompts left-padded to the longest (``model.pad_id``, attention 0), each followed by
    ``gen_length`` mask tokens; ``gen_start`` is the padded prompt length (LLaDA's ``generate()`` layout)."""
    lengths = [len(p) for p in prompts]
    P, G = max(lengths), gen_length
    limit = getattr(model, "max_length", None)
    if limit is not None and P + G > limit:
        i = int(np.argmax(lengths))
        raise ValueError(
            f"{name}: example {i} has a {P}-token prompt; with gen_length {G} that is {P + G} tokens, more than "
            f"{model.name}'s context of {limit}; lower --gen-length or use a shorter prompt template"
        )
    ids = torch.full((len(prompts), P + G), model.pad_id, dtype=torch.long)
    ids[:, P:] = model.mask_id
    attention = torch.zeros_like(ids)
    attention[:, P:] = 1
    for row, prompt in enumerate(prompts):
        ids[row, P - len(prompt) : P] = torch.tensor(list(prompt), dtype=torch.long)
        attention[row, P - len(prompt) :] = 1
    return EncodedBatch(input_ids=ids.to(model.device), attention_mask=attention.to(model.device), gen_start=P)


def decode_completions(sequences: torch.Tensor, model: MaskedDiffusionModel, gen_length: int) -> list[str]:
    """The text of the last ``gen_length`` positions of each row, up to the first of ``model.stop_ids`` (EOS),
    mask and special tokens dropped."""
    stops = set(model.stop_ids)
    completions = []
    for row in sequences[:, -gen_length:].tolist():
        end = next((i for i, t in enumerate(row) if t in stops), len(row))
        kept = [t for t in row[:end] if t != model.mask_id]
        completions.append(model.tokenizer.decode(kept, skip_special_tokens=True).strip())
    return completions


class MathTask(Task):
    """A math word-problem task; ``gold`` reads the final answer from a reference solution."""

    example_type = MathExample
    OPTIONS = {  # the constructor's options (unmask.tasks.options)
        "gen_length": "tokens to generate after the prompt (>= 1; --gen-length)",
        "chat": "wrap prompts in the tokenizer's chat template when it has one (--no-chat: false)",
        "template": "the prompt, holding {question} (UPO App. E.2's by default)",
        "response_prefix": "text after the prompt that the answer continues (UPO's '<reasoning>' line by default)",
        "reward": "binary (the final answer verifies) or upo (plus UPO's relative log-probability bonus)",
        "bonus": "the upo reward's bonus for the most likely trajectory of a prompt's group",
        "verify_timeout": "seconds per math-verify check, each in a worker thread",
    }

    def __init__(
        self,
        name: str,
        gold: Callable[[str], str | None],
        gold_format: str,
        gen_length: int = 256,
        chat: bool = True,
        template: str = UPO_PROMPT,
        response_prefix: str = RESPONSE_PREFIX,
        reward: str = "binary",
        bonus: float = 0.25,
        verify_timeout: float = VERIFY_TIMEOUT,
    ) -> None:
        if gen_length < 1:
            raise ValueError(f"{name}: gen_length must be a positive number of tokens, got {gen_length}")
        if "{question}" not in template:
            raise ValueError(f"{name}: the prompt template must contain '{{question}}', got {template[:60]!r}")
        if reward not in REWARDS:
            raise ValueError(f"{name}: unknown reward {reward!r}; valid rewards: {', '.join(REWARDS)}")
        self.name, self.gold, self.gold_format = name, gold, gold_format
        self.gen_length, self.chat, self.template, self.response_prefix = gen_length, chat, template, response_prefix
        self.reward_kind, self.bonus, self.verify_timeout = reward, bonus, verify_timeout

    # ---------------- data ----------------
    def example(self, record: dict, where: str) -> MathExample:
        question = record.get("question", record.get("problem"))
        if not isinstance(question, str) or not question.strip():
            raise ValueError(
                f"{where}: no 'question' (or 'problem') text; {self.name} records hold 'question' and 'answer'"
            )
        if "solution" in record and "answer" in record:
            solution, gold = str(record["solution"]), clean_answer(str(record["answer"]))
        elif "answer" in record:
            solution = str(record["answer"])
            gold = self.gold(solution)
        else:
            raise ValueError(f"{where}: no 'answer' field; {self.name} records hold 'question' and 'answer'")
        if not gold:
            raise ValueError(
                f"{where}: cannot find the final answer in the solution; {self.name} expects {self.gold_format}"
            )
        return MathExample(question=question, answer=gold, solution=solution)

    def load(self, path: str) -> list[MathExample]:
        """Read a JSONL file (any path) or a Hugging Face dataset ``OWNER/NAME[:CONFIG][@SPLIT]``."""
        return [self.example(record, where) for where, record in read_records(path)]

    # ---------------- token layout ----------------
    def prompt_ids(self, example: MathExample, tokenizer: Any) -> list[int]:
        """Token ids of one prompt: the template, in the chat template when there is one, then the response prefix."""
        text = self.template.replace("{question}", example.question)
        if self.chat and getattr(tokenizer, "chat_template", None):
            chat = tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
            )
            return tokenizer(chat + self.response_prefix, add_special_tokens=False)["input_ids"]
        return tokenizer(text + "\n" + self.response_prefix)["input_ids"]

    def encode(self, examples: Sequence[MathExample], model: MaskedDiffusionModel) -> EncodedBatch:
        self.check_examples(examples)
        model = _text_model(model, self.name)
        return encode_prompts(
            [self.prompt_ids(ex, model.tokenizer) for ex in examples], model, self.gen_length, self.name
        )

    def decode(self, examples: Sequence, sequences: torch.Tensor, model: MaskedDiffusionModel) -> list[str]:
        """Completion text: the generated region up to the first end-of-sequence token, special tokens dropped."""
        return decode_completions(sequences, _text_model(model, self.name), self.gen_length)

    # ---------------- verifier and reward ----------------
    def score(
        self,
        examples: Sequence[MathExample],
        completions: Sequence[str],
        logprob: Sequence[float] | torch.Tensor | None = None,
        group: Sequence[Any] | None = None,
    ) -> Scores:
        """Verify each completion's final answer. With ``reward="upo"`` and ``logprob`` (per completion,
        :func:`unmask.training.rewards.trajectory_logprob`) and ``group`` (rollouts of one prompt share a key;
        default: completions of the same example object form a group), the reward adds UPO's bonus."""
        self.check_examples(examples, completions)
        answers = [extract_answer(c) for c in completions]
        solved = np.array(
            [is_equivalent(ex.answer, a, self.verify_timeout) for ex, a in zip(examples, answers)], dtype=bool
        )
        reward = solved.astype(np.float64)
        extra: dict[str, Any] = {"answers": answers}
        if self.reward_kind == "upo" and logprob is not None:
            lp = logprob.detach().cpu().numpy() if isinstance(logprob, torch.Tensor) else logprob
            extra["logprob_bonus"] = relative_logprob_bonus(
                lp, group if group is not None else [id(ex) for ex in examples], self.bonus
            )
            reward = reward + extra["logprob_bonus"]
        return Scores(reward=reward, solved=solved, cell_accuracy=solved.astype(np.float64), extra=extra)

    def reward(self, completions: Sequence, examples: Sequence, **kwargs: Any) -> list[float]:
        """TRL-style reward; the upo variant needs ``logprob`` (and optionally ``group``)."""
        if self.reward_kind == "upo" and kwargs.get("logprob") is None:
            raise ValueError(
                f"{self.name}: the upo reward needs each completion's trajectory log-probability (logprob=...)"
            )
        return super().reward(completions, examples, **kwargs)


def gsm8k(**options: Any) -> MathTask:
    """GSM8K (Cobbe et al., 2021): gold answer after ``#### ``."""
    return MathTask("gsm8k", gsm8k_gold, "the reference solution to end in a line '#### N'", **options)


def math500(**options: Any) -> MathTask:
    """MATH500 (Lightman et al., 2023): gold answer after "The answer is:" or in the last ``\\boxed{}``."""
    return MathTask(
        "math500", math_gold, "the reference solution to hold \\boxed{...} or 'The answer is: ...'", **options
    )
