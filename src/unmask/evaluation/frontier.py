"""Accuracy-NFE frontiers: each method's speed knob swept on the same examples (Jazbec §4, Fig. 3).

Curves (one per method, each point a full batched :func:`unmask.evaluation.evaluate.run_policy` run
with the same seed):

* ``confidence`` over k tokens per step (LLaDA's count schedule through ``steps``; k = 1
  is one-per-step max-confidence, the reference point of the summary),
* ``threshold`` over Fast-dLLM confidence thresholds,
* each learned parallel policy over alpha (alpha-conditioned policies) or over its
  temperature tau_pi, sampled; a policy trained by imitation (its calibration, any kind) over the correctness
  bound epsilon of its ``bound`` option; other policies (UPO, heuristics) give a single point.

:func:`summarize` reports, per curve, the fewest mean NFE that keeps the solved rate
within ``tol`` of one-per-step confidence (and the speed-up), and each learned point's
solved rate against the threshold curve interpolated at the same mean NFE, and each curve's AUP
(:mod:`unmask.evaluation.metrics`: its points as (tokens per forward, solved %), y_max the best solved rate of the run).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from unmask.core.checkpoint import atomic_write
from unmask.core.tracking import progress_bar
from unmask.engine.config import SamplingConfig
from unmask.evaluation.evaluate import run_policy
from unmask.evaluation.metrics import aup
from unmask.models.base import MaskedDiffusionModel
from unmask.policies import Policy, get_policy
from unmask.tasks.base import Task

THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
TOKENS_PER_STEP = (1, 2, 3, 4, 6, 8)
POLICY_TEMPERATURES = (0.25, 0.5, 1.0, 2.0)
BOUNDS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)


@dataclass
class Sweep:
    """One curve: ``setup(value)`` gives the policy and sampling settings of a point."""

    method: str
    knob: str
    values: Sequence[float | None]
    setup: Callable[[float | None], tuple[Policy, SamplingConfig]]


def steps_for_k(
    task: Task, model: MaskedDiffusionModel, examples: Sequence, k: int, sampling: SamplingConfig, batch_size: int = 256
) -> int | None:
    """``SamplingConfig.steps`` for k tokens per step: blocks x ceil(most masks in any block / k); None for k = 1."""
    if k < 1:
        raise ValueError(f"tokens per step must be >= 1, got {k}")
    if k == 1:
        return None
    most, blocks = 0, 1
    for i in range(0, len(examples), batch_size):
        enc = task.encode(examples[i : i + batch_size], model)
        masked = enc.input_ids[:, enc.gen_start :] == model.mask_id
        length = sampling.block_length or masked.shape[1]
        blocks = math.ceil(masked.shape[1] / length)
        padded = masked.new_zeros(masked.shape[0], blocks * length)
        padded[:, : masked.shape[1]] = masked
        most = max(most, int(padded.view(len(padded), blocks, length).sum(2).max()))
    return blocks * max(1, math.ceil(most / k))


def learned_sweep(
    spec: str,
    policy: Policy,
    sampling: SamplingConfig,
    alphas: Sequence[float] | None,
    temperatures: Sequence[float],
    bounds: Sequence[float] = BOUNDS,
) -> Sweep:
    """alpha for alpha-conditioned policies (default: 5 values across the trained range), the correctness bound
    for greedy policies trained by imitation (``config.calibration``), tau_pi for the other sampled ones that
    take a temperature (greedy decoding ignores it), a single point otherwise."""
    calibrated = "bound" in policy.OPTIONS and bool(policy.config.calibration)  # a learned policy, imitated
    if calibrated and not policy.capabilities.conditioned and not policy.capabilities.stochastic:
        knob = "bound"
    elif policy.capabilities.conditioned:
        knob = "alpha"
    elif policy.capabilities.stochastic and "temperature" in policy.OPTIONS:
        knob = "temperature"
    else:
        return Sweep(spec, "", [None], lambda _: (policy, sampling))
    if knob == "alpha" and alphas is None:
        alphas = np.linspace(*policy.config.alpha_range, 5).round(4).tolist()
    values = list({"alpha": alphas, "temperature": temperatures, "bound": bounds}[knob])

    def setup(value: float | None) -> tuple[Policy, SamplingConfig]:
        return policy.with_options(**{knob: value}), sampling

    for value in values:  # refuse bad values before any point runs
        setup(value)
    return Sweep(spec, knob, values, setup)


def standard_sweeps(
    task: Task,
    model: MaskedDiffusionModel,
    examples: Sequence,
    sampling: SamplingConfig,
    learned: dict[str, Policy],
    thresholds: Sequence[float] = THRESHOLDS,
    ks: Sequence[int] = TOKENS_PER_STEP,
    alphas: Sequence[float] | None = None,
    temperatures: Sequence[float] = POLICY_TEMPERATURES,
    batch_size: int = 256,
    bounds: Sequence[float] = BOUNDS,
) -> list[Sweep]:
    """Confidence over k, threshold over its value, each learned policy over alpha, tau_pi or the bound."""
    confidence = get_policy("confidence")
    steps = {k: steps_for_k(task, model, examples, int(k), sampling, batch_size) for k in ks}
    threshold = {t: get_policy(f"threshold:{t}") for t in thresholds}
    sweeps = [
        Sweep("confidence", "k", list(ks), lambda k: (confidence, replace(sampling, steps=steps[k]))),
        Sweep("threshold", "threshold", list(thresholds), lambda t: (threshold[t], sampling)),
    ]
    return sweeps + [
        learned_sweep(spec, policy, sampling, alphas, temperatures, bounds) for spec, policy in learned.items()
    ]


def run_sweeps(
    task: Task,
    model: MaskedDiffusionModel,
    examples: Sequence,
    sweeps: Sequence[Sweep],
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, dict]:
    """Evaluate every point; ``{method: {"knob": name, "points": [{"value": v, solved_rate, nfe, ...}]}}``."""
    curves: dict[str, dict] = {}
    bar = progress_bar(total=sum(len(s.values) for s in sweeps), desc="frontier", disable=not progress)
    for sweep in sweeps:
        points = []
        for value in sweep.values:
            policy, sampling = sweep.setup(value)
            bar.set_postfix(method=sweep.method, **({sweep.knob: value} if sweep.knob else {}))
            result, _ = run_policy(task, model, examples, policy, sampling, batch_size, seed, progress)
            points.append({"value": value, **asdict(result)})
            bar.update(1)
        curves[sweep.method] = {"knob": sweep.knob, "points": points}
    bar.close()
    return curves


def curve_aups(curves: dict[str, dict]) -> dict[str, float]:
    """Each curve's AUP over its points' (tokens per forward, solved %), y_max the best solved rate of all curves."""
    best = 100 * max(p["solved_rate"] for c in curves.values() for p in c["points"])
    return {
        method: aup([p["tpf"] for p in c["points"]], [100 * p["solved_rate"] for p in c["points"]], best)
        for method, c in curves.items()
    }


def summarize(curves: dict[str, dict], tol: float = 0.01) -> dict:
    """Speed-ups at the one-per-step confidence solved rate, learned points vs threshold at equal NFE, and
    each curve's AUP."""
    ref = next((p for p in curves.get("confidence", {}).get("points", []) if p["value"] == 1), None)
    if ref is None:
        return {}
    summary: dict = {
        "reference": {"method": "confidence", "k": 1, "solved_rate": ref["solved_rate"], "nfe": ref["nfe"]}
    }
    aups = curve_aups(curves)
    thr = sorted(curves.get("threshold", {}).get("points", []), key=lambda p: p["nfe"])
    for method, curve in curves.items():
        ok = [p for p in curve["points"] if p["solved_rate"] >= ref["solved_rate"] - tol]
        row: dict = {"nfe_at_reference_accuracy": None, "speedup": None}
        if ok:
            best = min(ok, key=lambda p: p["nfe"])
            row = {
                "nfe_at_reference_accuracy": best["nfe"],
                "speedup": ref["nfe"] / best["nfe"],
                "value": best["value"],
            }
        row["aup"] = aups[method]
        if thr and method not in ("confidence", "threshold"):
            at = np.interp(
                [p["nfe"] for p in curve["points"]],
                [p["nfe"] for p in thr],
                [p["solved_rate"] for p in thr],
                left=np.nan,
                right=np.nan,
            )
            row["vs_threshold"] = [
                {
                    "value": p["value"],
                    "nfe": p["nfe"],
                    "solved_rate": p["solved_rate"],
                    "threshold_solved_rate": None if np.isnan(a) else float(a),
                    "gain": None if np.isnan(a) else p["solved_rate"] - float(a),
                }
                for p, a in zip(curve["points"], at)
            ]
        summary[method] = row
    return summary


def format_frontier(curves: dict[str, dict]) -> str:
    """A plain-text table: method, knob value, solved rate, cell accuracy, mean NFE, tokens per forward, seconds,
    and the curve's AUP on its method's first row."""
    header = f"{'method':<34} {'knob':>16} {'solved':>8} {'cell acc':>9} {'NFE':>8} {'TPF':>6} {'seconds':>8} {'curve AUP':>9}"
    lines = [header, "-" * len(header)]
    aups = curve_aups(curves)
    for method, curve in curves.items():
        for i, p in enumerate(curve["points"]):
            knob = f"{curve['knob']}={p['value']:g}" if curve["knob"] else "-"
            lines.append(
                f"{method:<34} {knob:>16} {p['solved_rate']:>8.3f} {p['cell_accuracy']:>9.3f} "
                f"{p['nfe']:>8.2f} {p['tpf']:>6.2f} {p['seconds']:>8.2f} {f'{aups[method]:.1f}' if i == 0 else '':>9}"
            )
    return "\n".join(lines)


def plot_curves(curves: dict[str, dict], path: str | Path, title: str = "") -> None:
    """Solved rate against mean NFE, one line per method, points labelled with their knob value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    aups = curve_aups(curves)
    for method, curve in curves.items():
        pts = sorted(curve["points"], key=lambda p: p["nfe"])
        x, y = [p["nfe"] for p in pts], [100 * p["solved_rate"] for p in pts]
        ax.plot(
            x,
            y,
            marker="o",
            ms=4,
            label=method + (f" ({curve['knob']})" if curve["knob"] else "") + f", AUP {aups[method]:.1f}",
        )
        for p, xi, yi in zip(pts, x, y):
            if curve["knob"]:
                ax.annotate(f"{p['value']:g}", (xi, yi), textcoords="offset points", xytext=(3, 3), fontsize=6)
    ax.set_xscale("log")
    for axis_format in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
        axis_format(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("mean NFE (MDM forward passes, log scale)")
    ax.set_ylabel("solved (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=130, format="png"))
    plt.close(fig)
