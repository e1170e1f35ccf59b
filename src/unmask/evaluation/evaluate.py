"""Side-by-side evaluation of policies: solved rate, cell accuracy, mean NFE, tokens per forward and AUP, wall time."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from unmask.core.checkpoint import atomic_write
from unmask.core.distributed import current
from unmask.core.tracking import progress_bar
from unmask.engine.config import SamplingConfig
from unmask.engine.decode import GenerationOutput
from unmask.engine.loop import generate
from unmask.engine.policy import Policy
from unmask.engine.streams import ExampleStreams
from unmask.evaluation.metrics import aup
from unmask.models.base import MaskedDiffusionModel
from unmask.tasks.base import EncodedBatch, Task


@dataclass
class EvalResult:
    policy: str
    solved_rate: float
    cell_accuracy: float
    nfe: float
    positions: float  # positions run through the MDM per example, over its forwards (below NFE x length under a cache)
    seconds: float
    n: int
    tpf: float  # parallelism: positions generated over forwards, all examples together (tokens per forward)
    aup: float  # d3LLM's AUP of this one point: tpf x solved % (unmask.evaluation.metrics)


def gold_tokens(task: Task, examples: Sequence, model: MaskedDiffusionModel) -> torch.Tensor:
    """The gold token of every generated position (B, Lg) for policies that read it (oracles, imitation
    labels), with one clear error on tasks that give none."""
    try:
        return task.targets(examples, model).to(model.device)
    except NotImplementedError:
        raise ValueError(
            f"oracles and imitation read the gold token of every generated position; task {task.name} "
            "gives none (sudoku, zebra and arithmetic do): drop oracle / gt_margin from --policies, "
            "--imitation-rounds from training"
        ) from None


def run_policy(
    task: Task,
    model: MaskedDiffusionModel,
    examples: Sequence,
    policy: Policy,
    sampling: SamplingConfig | None = None,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = False,
    on_batch: Callable[[Sequence, EncodedBatch, GenerationOutput], None] | None = None,
) -> tuple[EvalResult, dict]:
    """Decode every example with ``policy``; returns the summary and per-example arrays.
    ``on_batch(examples, encoded, output)`` sees each decoded batch (e.g. to keep the reveal order).
    Example ``j`` (its index in ``examples``) draws from its own stream ``(seed, j)``
    (:class:`unmask.engine.streams.ExampleStreams`), so results do not depend on ``batch_size``. Under several
    processes (:mod:`unmask.core.distributed`) each decodes its contiguous share and the per-example arrays are
    gathered in order: the results are the one-process ones."""
    dist = current()
    if on_batch is not None and dist.world_size > 1:
        raise ValueError("on_batch sees one process's batches only; run this (e.g. show-order) as one process")
    every, (lo, _) = examples, dist.bounds(len(examples))
    examples = dist.shard(examples)
    solved, acc, nfe, positions, generated = [], [], [], [], []
    start = time.perf_counter()
    batches = range(0, len(examples), batch_size)
    for i in progress_bar(batches, desc=policy.name, disable=not progress, leave=False):
        chunk = examples[i : i + batch_size]
        enc = task.encode(chunk, model)
        streams = ExampleStreams(seed, range(lo + i, lo + i + len(chunk)), device=model.device)
        inputs = {"target": gold_tokens(task, chunk, model)} if policy.capabilities.needs_target else None
        out = generate(
            model, enc.input_ids, policy, sampling, enc.attention_mask, enc.gen_start, streams, inputs=inputs
        )
        scores = task.score(chunk, task.decode(chunk, out.sequences, model))
        if on_batch is not None:
            on_batch(chunk, enc, out)
        solved.append(scores.solved)
        acc.append(scores.cell_accuracy)
        nfe.append(out.nfe.cpu().numpy())
        positions.append(out.positions_run.cpu().numpy())
        generated.append((enc.input_ids[:, enc.gen_start :] == model.mask_id).sum(1).cpu().numpy())
    seconds = time.perf_counter() - start
    per = dist.gather(
        {
            "solved": np.concatenate(solved),
            "cell_accuracy": np.concatenate(acc),
            "nfe": np.concatenate(nfe),
            "positions": np.concatenate(positions),
            "generated": np.concatenate(generated),
        }
    )
    tpf = float(per["generated"].sum() / max(per["nfe"].sum(), 1))
    result = EvalResult(
        policy=policy.name,
        solved_rate=float(per["solved"].mean()),
        cell_accuracy=float(per["cell_accuracy"].mean()),
        nfe=float(per["nfe"].mean()),
        positions=float(per["positions"].mean()),
        seconds=seconds,
        n=len(every),
        tpf=tpf,
        aup=aup([tpf], [100 * float(per["solved"].mean())]),
    )
    return result, per


def evaluate(
    task: Task,
    model: MaskedDiffusionModel,
    examples: Sequence,
    policies: Sequence[Policy],
    sampling: SamplingConfig | None = None,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = True,
) -> list[EvalResult]:
    """Evaluate each policy on the same examples with the same seed."""
    results = []
    for policy in progress_bar(policies, desc="policies", disable=not progress):
        results.append(run_policy(task, model, examples, policy, sampling, batch_size, seed, progress)[0])
    return results


def pass_at_n(
    task: Task,
    model: MaskedDiffusionModel,
    examples: Sequence,
    policy: Policy,
    n: int,
    sampling: SamplingConfig | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> list[float]:
    """Pass@k for k = 1..n (UPO §3.1, App. D): the share of examples solved by at least one of k
    independent runs of a stochastic policy (or of stochastic token sampling)."""
    if n < 1:
        raise ValueError(f"pass@N needs N >= 1, got {n}")
    stochastic = policy.capabilities.stochastic or (sampling is not None and sampling.temperature > 0)
    if n > 1 and not stochastic:
        raise ValueError(
            f"policy {policy.name!r} is deterministic: pass@{n} equals pass@1; use a stochastic policy "
            "(random, topk_softmax, a learned policy with sigma>0) or --temperature > 0"
        )
    solved = np.stack(
        [run_policy(task, model, examples, policy, sampling, batch_size, seed + i)[1]["solved"] for i in range(n)]
    )
    return np.maximum.accumulate(solved, axis=0).mean(axis=1).tolist()


def format_table(results: Sequence[EvalResult]) -> str:
    """A plain-text table (policy, solved rate, cell accuracy, mean NFE, tokens per forward, AUP, mean positions run,
    seconds)."""
    header = (
        f"{'policy':<34} {'solved':>8} {'cell acc':>9} {'NFE':>8} {'TPF':>6} {'AUP':>7} {'positions':>9} "
        f"{'seconds':>8} {'n':>6}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r.policy:<34} {r.solved_rate:>8.3f} {r.cell_accuracy:>9.3f} {r.nfe:>8.2f} {r.tpf:>6.2f} {r.aup:>7.1f} "
            f"{r.positions:>9.1f} {r.seconds:>8.2f} {r.n:>6}"
        )
    return "\n".join(lines)


def results_json(results: Sequence[EvalResult], **context) -> dict:
    return {"results": [asdict(r) for r in results], **context}


def plot_frontier(results: Sequence[EvalResult], path: str | Path, title: str = "") -> None:
    """Solved rate against mean NFE, one point per policy, told apart by colour and marker in a legend that
    also gives each point's values (points of count policies share one NFE and often overlap)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.4, 4.4))
    markers = "osD^vP*X<>h"
    for i, r in enumerate(results):
        ax.scatter(
            r.nfe,
            100 * r.solved_rate,
            s=50,
            marker=markers[i % len(markers)],
            alpha=0.8,
            label=f"{r.policy}: {100 * r.solved_rate:.1f}%, {r.nfe:.1f} NFE, AUP {r.aup:.1f}",
        )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_xlabel("mean NFE (MDM forward passes)")
    ax.set_ylabel("solved (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=130, format="png"))
    plt.close(fig)
