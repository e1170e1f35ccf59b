"""Prompt and verifier of tiny_math.yaml: unmask's gsm8k task, so lm_eval scores exactly as `unmask eval`."""

from pathlib import Path

from unmask.tasks import get_task

TASK = get_task("gsm8k", chat=False)


def tiny_math(**kwargs) -> dict:
    """The task's documents: tiny_math.jsonl beside this file, so the YAMLs work from any working directory."""
    import datasets

    return datasets.DatasetDict({"test": datasets.Dataset.from_json(str(Path(__file__).with_name("tiny_math.jsonl")))})


def doc_to_text(doc: dict) -> str:
    """The text `unmask eval` tokenizes for one gsm8k record (``MathTask.prompt_ids`` without a chat template)."""
    return TASK.template.replace("{question}", doc["question"]) + "\n" + TASK.response_prefix


def process_results(doc: dict, results: list[str]) -> dict:
    """``solved``: unmask's gsm8k verifier on the completion."""
    example = TASK.example(doc, "lm-eval doc")
    return {"solved": float(TASK.score([example], results[:1]).solved[0])}


CHOICES = ["3", "5", "6"]


def choice_target(doc: dict) -> int:
    """tiny_choice.yaml's gold choice: the index of the answer among CHOICES (0 when it is none of them)."""
    answer = TASK.example(doc, "lm-eval doc").answer
    return CHOICES.index(answer) if answer in CHOICES else 0
