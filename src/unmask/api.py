"""The Python API behind the CLI: each function mirrors one ``unmask`` subcommand."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from unmask.engine import SamplingConfig
from unmask.evaluate import EvalResult, evaluate, format_table, plot_frontier, results_json
from unmask.models import MaskedDiffusionModel, load_model
from unmask.policies import Policy, get_policy
from unmask.tasks import Task, get_task


def resolve_policies(specs: str | Sequence[str], task: Task, model: MaskedDiffusionModel) -> list[Policy]:
    """Turn a comma-separated list (or a list) of policy specs into policy objects."""
    if isinstance(specs, str):
        specs = [s for s in specs.split(",") if s.strip()]
    if not specs:
        raise ValueError("no policies given; e.g. --policies confidence,threshold:0.9")
    return [get_policy(s) for s in specs]


@dataclass
class EvalReport:
    results: list[EvalResult]
    context: dict = field(default_factory=dict)

    @property
    def table(self) -> str:
        return format_table(self.results)

    def to_json(self) -> dict:
        return results_json(self.results, **self.context)

    def plot(self, path: str | Path) -> None:
        plot_frontier(self.results, path, title=f"{self.context.get('task', '')} · {self.context.get('model', '')}")


def evaluate_policies(
    task: str = "sudoku9",
    model: str | None = None,
    policies: str | Sequence[str] = "confidence",
    data: str | None = None,
    num: int = 200,
    clues: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    steps: int | None = None,
    block_length: int | None = None,
    temperature: float = 0.0,
    batch_size: int = 256,
    progress: bool = True,
) -> EvalReport:
    """``unmask eval``: every policy on the same examples; see :func:`unmask.evaluate.evaluate`."""
    task_obj = get_task(task)
    model_name = model or task_obj.default_model
    mdm = load_model(model_name)
    examples = task_obj.load(data) if data else task_obj.generate(num, seed=seed, clues=clues)
    examples = examples[:limit] if limit else examples
    sampling = SamplingConfig(steps=steps, block_length=block_length, temperature=temperature)
    pols = resolve_policies(policies, task_obj, mdm)
    results = evaluate(task_obj, mdm, examples, pols, sampling, batch_size=batch_size, seed=seed, progress=progress)
    context = {"model": model_name, "task": task, "data": data or f"generated:num={num}:clues={clues}:seed={seed}"}
    return EvalReport(results, context)


def demo(output_dir: str = "outputs/demo", num: int = 200) -> EvalReport:
    """``unmask demo``: heuristics side by side on fresh 9x9 puzzles, with a plot."""
    out = Path(output_dir)
    report = evaluate_policies(task="sudoku9", policies=list(_DEMO_POLICIES), num=num, clues=30)
    print(report.table)
    report.plot(out / "demo_frontier.png")
    from unmask.checkpoint import save_json

    save_json(out / "demo_results.json", report.to_json())
    print(f"wrote {out / 'demo_frontier.png'} and {out / 'demo_results.json'}")
    return report


_DEMO_POLICIES = ("random", "left_to_right", "entropy", "margin", "confidence", "threshold:0.9", "threshold:0.7")
