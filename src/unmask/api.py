"""The Python API behind the CLI: each function mirrors one ``unmask`` subcommand."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from unmask.engine import SamplingConfig
from unmask.evaluate import EvalResult, evaluate, format_table, pass_at_n, plot_frontier, results_json
from unmask.models import MaskedDiffusionModel, load_model
from unmask.policies import Policy, get_policy
from unmask.tasks import Task, get_task

if TYPE_CHECKING:
    from unmask.rl.grpo import GRPOConfig


SHIPPED_POLICIES = Path(__file__).resolve().parent / "assets" / "policies"


def resolve_policy(spec: str, model: MaskedDiffusionModel) -> Policy:
    """A heuristic spec, ``upo`` (the policy shipped for ``model``) or a policy checkpoint path; learned
    policies take ``:sigma=S`` (Gaussian noise for multi-shot sampling, UPO App. D) and ``:mode=sample``."""
    from unmask.policies.learned import load_policy

    name, _, options = spec.strip().partition(":")
    if name not in LEARNED_NAMES and not Path(name).is_dir():
        return get_policy(spec)
    if name in LEARNED_NAMES:
        path = SHIPPED_POLICIES / f"{name}-{model.name}"
        if not path.is_dir():
            shipped = sorted(p.name for p in SHIPPED_POLICIES.glob("*")) if SHIPPED_POLICIES.is_dir() else []
            raise ValueError(
                f"no shipped {name} policy for model {model.name!r} (shipped: {', '.join(shipped) or 'none'}); "
                "train one with `unmask train-policy` and pass its directory"
            )
        policy = load_policy(path)
        policy.name = name
    else:
        policy = load_policy(name)
    policy.check_model(model)
    for option in filter(None, options.split(":")):
        key, _, value = option.partition("=")
        if key == "sigma":
            policy.sigma = float(value)
        elif key == "mode" and value in ("greedy", "sample"):
            policy.mode = value
        else:
            raise ValueError(f"policy {spec!r}: unknown option {option!r}; learned policies take sigma=FLOAT and mode=greedy|sample")
        policy.name += f":{option}"
    return policy


def resolve_policies(specs: str | Sequence[str], task: Task, model: MaskedDiffusionModel) -> list[Policy]:
    """Turn a comma-separated list (or a list) of policy specs into policy objects."""
    if isinstance(specs, str):
        specs = [s for s in specs.split(",") if s.strip()]
    if not specs:
        raise ValueError("no policies given; e.g. --policies confidence,threshold:0.9")
    return [resolve_policy(s, model) for s in specs]


@dataclass
class EvalReport:
    results: list[EvalResult]
    context: dict = field(default_factory=dict)

    @property
    def table(self) -> str:
        text = format_table(self.results)
        for name, curve in self.context.get("pass_at", {}).items():
            text += f"\npass@1..{len(curve)} {name}: " + " ".join(f"{v:.3f}" for v in curve)
        return text

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
    pass_at: int | None = None,
    model_options: dict | None = None,
    task_options: dict | None = None,
) -> EvalReport:
    """``unmask eval``: every policy on the same examples; see :func:`unmask.evaluate.evaluate`.
    ``model_options`` go to :func:`unmask.models.load_model` (``hf:`` models), ``task_options`` to
    :func:`unmask.tasks.get_task` (e.g. ``gen_length`` for math tasks)."""
    task_obj = get_task(task, **(task_options or {}))
    model_name = model or task_obj.default_model
    mdm = load_model(model_name, **(model_options or {}))
    examples = task_obj.load(data) if data else task_obj.generate(num, seed=seed, clues=clues)
    examples = examples[:limit] if limit else examples
    sampling = SamplingConfig(steps=steps, block_length=block_length, temperature=temperature)
    pols = resolve_policies(policies, task_obj, mdm)
    results = evaluate(task_obj, mdm, examples, pols, sampling, batch_size=batch_size, seed=seed, progress=progress)
    context = {"model": model_name, "task": task, "data": data or f"generated:num={num}:clues={clues}:seed={seed}"}
    if pass_at:
        context["pass_at"] = {p.name: pass_at_n(task_obj, mdm, examples, p, pass_at, sampling, batch_size, seed)
                              for p in pols if p.stochastic or temperature > 0}
    return EvalReport(results, context)


def train_policy(config: "GRPOConfig", resume: bool = False, progress: bool = True) -> Path:
    """``unmask train-policy``: GRPO training of a learned unmasking policy (UPO Algorithm 2)."""
    from unmask.rl.grpo import GRPOTrainer

    return GRPOTrainer(config, progress=progress).train(resume=resume)


def demo(output_dir: str = "outputs/demo", num: int = 200, clues: int = 28, train_steps: int = 15) -> EvalReport:
    """``unmask demo``: train a short UPO run on the default 9x9 model, then compare it with every
    heuristic on fresh puzzles (table, JSON and solved-vs-NFE plot)."""
    from unmask.checkpoint import save_json
    from unmask.rl.grpo import GRPOConfig

    out = Path(output_dir)
    if train_steps > 0:
        print(f"training a UPO policy for {train_steps} GRPO steps (confidence reference) ...")
        train_policy(GRPOConfig(task="sudoku9", output_dir=str(out / "upo"), steps=train_steps, clues=str(clues),
                                eval_every=5, eval_size=128, learning_rate=3e-3, beta=0.005, base_temperature=0.02,
                                num_generations=8, prompts_per_step=6))
    policies = list(_DEMO_POLICIES) + ([str(out / "upo" / "best")] if train_steps > 0 else [])
    report = evaluate_policies(task="sudoku9", policies=policies, num=num, clues=clues, seed=1)
    print(report.table)
    report.plot(out / "demo_frontier.png")
    save_json(out / "demo_results.json", report.to_json())
    print(f"wrote {out / 'demo_frontier.png'} and {out / 'demo_results.json'}")
    return report


LEARNED_NAMES = ("upo",)
_DEMO_POLICIES = ("random", "left_to_right", "entropy", "margin", "confidence", "threshold:0.9", "threshold:0.7")
