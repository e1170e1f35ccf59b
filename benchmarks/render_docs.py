"""Write every number table of the README, the docs pages and the model cards from the committed results JSON in
``benchmarks/results/`` (one script, so no figure is copied by hand).

Command (``--check``: write nothing, list the files that differ and exit 1; ``tests/test_docs.py`` runs the check):
    .venv/bin/python benchmarks/render_docs.py [--check]

Markdown files hold generated regions ``<!-- generated:NAME -->`` ... ``<!-- /generated -->``; NAME is a key of
``blocks()``. The cards (``README.md`` of each shipped MDM and policy, ``src/unmask/assets/*/*/``) are generated whole
from their config, their recipe (``recipes/NAME.yaml``) and the heuristics results: a policy's card shows its rows beside the heuristics on the same
examples, a model's card every policy on it (from the last results file that has rows for it).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from unmask.api import SHIPPED_POLICIES
from unmask.core.config import describe, field_spec, reference_markdown
from unmask.engine.config import SamplingConfig
from unmask.evaluation.frontier import curve_aups
from unmask.evaluation.metrics import aup
from unmask.evaluation.run_config import EvalConfig, ExamplesConfig, FrontierConfig, OrderConfig, RunConfig
from unmask.integrations.sglang.hook import ServedPolicyConfig
from unmask.models import BUILTIN_DIR, builtin_models
from unmask.policies.configs import ParallelConfig, PlackettLuceConfig, UPOConfig
from unmask.tasks import TASKS
from unmask.training.grpo import GRPOConfig
from unmask.training.mdm import MDMTrainConfig

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
HEURISTICS_FILES = (
    "heuristics_small.json",
    "heuristics_base.json",
    "heuristics_sudoku4.json",
    "heuristics_zebra.json",
    "heuristics_arithmetic.json",
    "heuristics_arithmetic-carry.json",
)
CARD_BASELINES = ("random", "left_to_right", "confidence", "margin", "threshold:0.9")
ONE_PER_STEP = ("random", "left_to_right", "confidence", "margin", "entropy", "topk_softmax:k=5:temperature=0.1")
# the data each shipped policy is shown on in the README's headline table (the task's default or hardest setting)
HEADLINE = (
    ("upo-sudoku9-small", "heuristics_small.json", "generated:clues=28"),
    ("upo-dagger-sudoku9-small", "heuristics_small.json", "generated:clues=28"),
    ("upo-dagger-sudoku9-small:bound=0.01", "heuristics_small.json", "generated:clues=28"),
    ("upo-sudoku9-base", "heuristics_base.json", "generated:clues=28"),
    ("bernoulli-sudoku9-small", "heuristics_small.json", "generated:clues=28"),
    ("bernoulli-sudoku9-base", "heuristics_base.json", "generated:clues=28"),
    ("upo-arithmetic-carry", "heuristics_arithmetic-carry.json", "generated:digits=16"),
    ("bernoulli-arithmetic-carry", "heuristics_arithmetic-carry.json", "generated:digits=16"),
    ("upo-dagger-arithmetic-carry", "heuristics_arithmetic-carry.json", "generated:digits=16"),
    ("upo-dagger-arithmetic-carry:bound=0.01", "heuristics_arithmetic-carry.json", "generated:digits=16"),
    ("upo-sudoku4", "heuristics_sudoku4.json", "generated:clues=4"),
    ("upo-zebra", "heuristics_zebra.json", "generated:extra_clues=None"),
)
CONFIG_CLASSES = (
    GRPOConfig,
    EvalConfig,
    FrontierConfig,
    OrderConfig,
    RunConfig,
    SamplingConfig,
    ExamplesConfig,
    UPOConfig,
    ParallelConfig,
    PlackettLuceConfig,
    MDMTrainConfig,
    ServedPolicyConfig,
)  # the reference tables of docs/configuration.md
MARKER = re.compile(r"(<!-- generated:([\w.-]+) -->\n)(.*?)(<!-- /generated -->)", re.S)


def load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / name).read_text())


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def signed(x: float) -> str:
    """A difference in points, with its sign (``+0.0`` rather than ``-0.0``)."""
    return f"{round(100 * x, 1) + 0.0:+.1f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def source(name: str) -> str:
    """The provenance line under a table: the results file and the commands that wrote it."""
    cmds = list(dict.fromkeys(p["command"] for p in load(name).get("provenance", []) if p.get("command")))
    return (
        f"From `benchmarks/results/{name}`"
        + (", written by " + "; ".join(f"`{c}`" for c in cmds) if cmds else "")
        + "."
    )


def with_aup(rows: list[dict]) -> list[dict]:
    """The rows with their tokens per forward ``tpf`` and one-point AUP (:mod:`unmask.evaluation.metrics`: tpf x solved %).
    Rows written before evaluations reported them lack both; their tpf is the one-per-step NFE of their (model,
    data), the positions each example generates (every file has a one-per-step policy), over their mean NFE."""
    full: dict = {}
    for r in rows:
        full[(r["model"], r["data"])] = max(full.get((r["model"], r["data"]), 0.0), r["nfe"])
    out = []
    for r in rows:
        tpf = r.get("tpf", full[(r["model"], r["data"])] / r["nfe"])
        out.append({**r, "tpf": tpf, "aup": r.get("aup", aup([tpf], [100 * r["solved_rate"]]))})
    return out


def cell(row: dict, full_nfe: float) -> str:
    """Solved rate, with the mean NFE when the policy reveals a variable number of tokens per step, and AUP."""
    nfe = "" if abs(row["nfe"] - full_nfe) < 1e-9 else f" ({row['nfe']:.1f})"
    return f"{pct(row['solved_rate'])}{nfe}, AUP {row['aup']:.1f}"


def heuristics_pivot(name: str) -> str:
    """One row per (model, data), one column per policy: solved rate (mean NFE for variable-count policies), AUP."""
    rows = with_aup(load(name)["results"])
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    keys = list(dict.fromkeys((r["model"], r["data"]) for r in rows))
    out = []
    for m, d in keys:
        mine = {r["policy"]: r for r in rows if (r["model"], r["data"]) == (m, d)}
        full = max(r["nfe"] for r in mine.values())
        out.append(
            [m, d.split(":", 1)[-1], f"{full:.0f}"] + [cell(mine[p], full) if p in mine else "" for p in policies]
        )
    return table(["model", "data", "NFE (one per step)"] + [f"`{p}`" for p in policies], out) + "\n\n" + source(name)


def baselines() -> str:
    """The training-free baselines (KLASS, PC-Sampler, DUS) beside confidence / margin / threshold on each built-in
    task: solved rate, mean NFE, tokens per forward and AUP."""
    rows = with_aup(load("baselines.json")["results"])
    order = {key: i for i, key in enumerate(dict.fromkeys((r["model"], r["data"]) for r in rows))}
    rows = sorted(rows, key=lambda r: order[(r["model"], r["data"])])  # appended settings beside their task's rows
    return (
        table(
            ["MDM", "data", "policy", "solved", "mean NFE", "tokens per forward", "AUP"],
            [
                [
                    f"`{r['model']}`",
                    r["data"].split(":", 1)[-1].replace("=None", "=default"),
                    f"`{r['policy']}`",
                    pct(r["solved_rate"]),
                    f"{r['nfe']:.1f}",
                    f"{r['tpf']:.2f}",
                    f"{r['aup']:.1f}",
                ]
                for r in rows
            ],
        )
        + "\n\n"
        + source("baselines.json")
    )


def best_heuristic(rows: list[dict]) -> dict:
    return max((r for r in rows if r["policy"] in ONE_PER_STEP), key=lambda r: r["solved_rate"])


def rows_named(spec: str, meta: dict) -> str:
    """The policy name in the results rows of the shipped policy ``spec`` (config ``meta``): its kind for
    KIND-MODEL (``--policies upo`` loads it for its MDM), else the spec itself."""
    kind = meta["policy"]["kind"]
    return kind if spec == f"{kind}-{meta['mdm']}" else spec


def headline() -> str:
    """The README's table: each shipped learned policy beside the best heuristic on the same examples."""
    out = []
    for spec, name, data in HEADLINE:
        pname = spec.partition(":")[0]
        meta = json.loads((SHIPPED_POLICIES / pname / "config.json").read_text())
        rows = [r for r in with_aup(load(name)["results"]) if r["model"] == meta["mdm"] and r["data"] == data]
        mine = next(r for r in rows if r["policy"] == rows_named(spec, meta))
        best, thr = best_heuristic(rows), next(r for r in rows if r["policy"] == "threshold:0.9")
        out.append(
            [
                f"`{spec}`",
                f"`{meta['mdm']}`",
                data.split(":", 1)[-1].replace("=None", "=default"),
                f"{pct(mine['solved_rate'])} ({mine['nfe']:.1f}, {mine['aup']:.1f})",
                f"`{best['policy']}` {pct(best['solved_rate'])} ({best['nfe']:.0f}, {best['aup']:.1f})",
                f"{pct(thr['solved_rate'])} ({thr['nfe']:.1f}, {thr['aup']:.1f})",
                signed(mine["solved_rate"] - best["solved_rate"]),
            ]
        )
    return table(
        [
            "shipped policy",
            "MDM",
            "data",
            "solved (NFE, AUP)",
            "best one-per-step heuristic",
            "threshold:0.9",
            "points over best",
        ],
        out,
    ) + (
        "\n\nSolved rate (mean NFE, AUP) on 500 fresh seeded examples, the same "
        "for every policy; AUP: tokens per forward x solved % (d3LLM's Accuracy "
        "Under Parallelism of one point, `unmask.evaluation.metrics`); source: "
        "`benchmarks/results/heuristics_*.json`."
    )


def frontier_runs(name: str) -> list[dict]:
    report = load(name)
    return report["runs"] if "runs" in report else [report]


def frontier(name: str) -> str:
    """Each learned curve of a frontier file: knob value, solved rate, NFE and the threshold curve at that NFE."""
    parts = []
    for run in frontier_runs(name):
        rows = []
        for method, s in run["summary"].items():
            for p in s.get("vs_threshold", []):
                rows.append(
                    [
                        f"`{Path(method).name}`",
                        f"{run['curves'][method]['knob']} = {p['value']:g}",
                        f"{pct(p['solved_rate'])} ({p['nfe']:.1f})",
                        pct(p["threshold_solved_rate"]),
                        signed(p["gain"]),
                    ]
                )
        ref = run["summary"]["reference"]
        # files written before frontiers recorded tokens per forward: one-per-step confidence's NFE is the positions
        curves = {
            m: {"points": [{**p, "tpf": p.get("tpf", ref["nfe"] / p["nfe"])} for p in c["points"]]}
            for m, c in run["curves"].items()
        }
        aups = ", ".join(f"`{Path(m).name}` {v:.1f}" for m, v in curve_aups(curves).items())
        speed = ", ".join(
            f"`{Path(m).name}` {s['speedup']:.1f}×"
            for m, s in run["summary"].items()
            if m != "reference" and s.get("speedup")
        )
        parts.append(
            f"`{run['model']}`, block length {run['block_length'] or 'none (full diffusion)'}, "
            f"`{run['data']}`; one-per-step confidence: {pct(ref['solved_rate'])} at {ref['nfe']:.0f} NFE; "
            f"fewer NFE at its accuracy (within one point): {speed or 'none'}; AUP of each curve: {aups}.\n\n"
            + table(["policy", "knob", "solved (NFE)", "threshold at that NFE", "points over threshold"], rows)
        )
    return "\n\n".join(parts) + "\n\n" + source(name)


def upo_grid() -> str:
    runs = load("upo_curves.json")["runs"]
    return (
        table(
            ["run", "steps", "held-out at step 0", "best held-out", "last held-out"],
            [
                [f"`{r['run']}`", str(r["steps"]), pct(r["eval_at_0"]), pct(r["best_eval"]), pct(r["last_eval"])]
                for r in runs
            ],
        )
        + "\n\n"
        + source("upo_curves.json")
        + (" Held-out greedy solved rate on 256 examples; each run's command is in `benchmarks/results/upo/README.md`.")
    )


def heuristics_pivot_by(name: str, key: str) -> str:
    """Rows (model, policy), one column per ``key`` value: solved rate."""
    rows = load(name)["results"]
    cols = list(dict.fromkeys(r[key] for r in rows))
    out = []
    for m, p in dict.fromkeys((r["model"], r["policy"]) for r in rows):
        mine = {r[key]: r for r in rows if (r["model"], r["policy"]) == (m, p)}
        out.append([m, f"`{p}`"] + [pct(mine[c]["solved_rate"]) if c in mine else "" for c in cols])
    return table(["model", "policy"] + [f"{key} {c}" for c in cols], out) + "\n\n" + source(name)


def simple(name: str, columns: dict[str, Callable[[dict], str]]) -> str:
    """One row per result of a file, one column per ``columns`` entry (header: formatter)."""
    rows = load(name)["results"]
    return table(list(columns), [[f(r) for f in columns.values()] for r in rows]) + "\n\n" + source(name)


def pass_at_n() -> str:
    report = load("pass_at_n_sudoku9-small_c28.json")
    ns = (1, 2, 4, 8, 16)
    return table(
        ["policy"] + [f"pass@{n}" for n in ns],
        [[f"`{p}`"] + [pct(v[n - 1]) for n in ns] for p, v in report["pass_at"].items()],
    ) + (
        f"\n\n`{report['model']}`, `{report['data']}`; single-shot: "
        + ", ".join(f"`{r['policy']}` {pct(r['solved_rate'])}" for r in report["results"])
        + ". "
        + source("pass_at_n_sudoku9-small_c28.json")
    )


def models_table() -> str:
    """The built-in MDMs: task, parameters and shape, from their configs."""
    rows = []
    for name in builtin_models():
        meta = json.loads((BUILTIN_DIR / name / "config.json").read_text())
        m = meta["model"]
        rows.append(
            [
                f"`{name}`",
                f"`{m['task']}`",
                f"{meta['parameters']:,}",
                f"{m['n_layer']} × {m['n_embd']} × {m['n_head']}",
                f"`src/unmask/assets/models/{name}/README.md`",
            ]
        )
    return table(["name", "task", "parameters", "layers × width × heads", "card"], rows)


def kv_cache_speed() -> str:
    """Wall-time speed-up of each cache mode over no cache, side by side in one run per (model, prompt, policy)."""
    rows, runs = [], {}
    for r in load("kv_cache.json")["speed"]:
        runs.setdefault((r["model"], r.get("prompt_length"), r["policy"], r.get("cache_refresh")), {})[r["cache"]] = r
    for (model, prompt, policy, refresh), by_mode in runs.items():
        none, prefix, dual = (by_mode.get(m) for m in ("none", "prefix", "dual"))
        exact = [m for m in (prefix, dual) if m is not None and "fast_dllm_tokens_equal" in m]
        rows.append(
            [
                f"`{model}`",
                "–" if prompt is None else str(prompt),
                f"`{policy}`",
                "–" if refresh is None else f"{refresh:g}",
                f"{none['seconds']:.1f} s",
                f"{prefix['speedup']:.2f}×",
                f"{dual['speedup']:.2f}×",
                " / ".join(f"{none['positions'] / m['positions']:.2f}×" for m in (prefix, dual)),
                " / ".join(f"{m['nfe']:.1f}".removesuffix(".0") for m in (none, prefix, dual)),
                ("yes" if all(m["fast_dllm_tokens_equal"] for m in exact) else "no") if exact else "–",
            ]
        )
    return (
        table(
            [
                "model",
                "prompt",
                "policy",
                "refresh",
                "no cache",
                "prefix",
                "dual",
                "fewer positions (prefix / dual)",
                "NFE (none / prefix / dual)",
                "Fast-dLLM's tokens",
            ],
            rows,
        )
        + "\n\n"
        + source("kv_cache.json")
    )


def kv_cache_accuracy() -> str:
    """Paired solved-rate difference of each cache mode against no cache (rows measured on 1000 examples)."""
    rows = [r for r in load("kv_cache.json")["accuracy"] if r["n"] >= 1000]
    none = {(r["task"], r["policy"], r.get("cache_refresh")): r for r in rows if r["cache"] == "none"}
    out = []
    for r in rows:
        if r["cache"] != "none":
            base, refresh = none[(r["task"], r["policy"], r.get("cache_refresh"))], r.get("cache_refresh")
            out.append(
                [
                    f"`{r['task']}`",
                    f"`{r['policy']}`",
                    r["cache"],
                    "–" if refresh is None else f"{refresh:g}",
                    pct(base["solved_rate"]),
                    pct(r["solved_rate"]),
                    f"{signed(r['solved_delta'])} ± {100 * r['solved_delta_se']:.1f}",
                    f"{r['solved_only_none']} / {r['solved_only_cache']}",
                    pct(r["positions"] / base["positions"]),
                ]
            )
    return (
        table(
            [
                "task",
                "policy",
                "cache",
                "refresh",
                "solved, none",
                "solved, cache",
                "paired difference (points)",
                "lost / gained",
                "positions run, of none's",
            ],
            out,
        )
        + "\n\n"
        + source("kv_cache.json")
    )


def kv_cache_accuracy_all() -> str:
    """Solved rate of every policy (heuristics and the shipped learned ones) with and without each cache, on the
    smaller runs (fewer than 1000 examples, Fast-dLLM's rule)."""
    runs: dict = {}
    for r in load("kv_cache.json")["accuracy"]:
        if r["n"] < 1000 and r.get("cache_refresh") is None:
            runs.setdefault((r["task"], r["policy"], r["n"]), {})[r["cache"]] = r
    rows = [
        [f"`{task}`", f"`{policy}`", str(n)]
        + [pct(m[c]["solved_rate"]) if c in m else "" for c in ("none", "prefix", "dual")]
        + [" / ".join(pct(m[c]["positions"] / m["none"]["positions"]) for c in ("prefix", "dual") if c in m)]
        for (task, policy, n), m in runs.items()
    ]
    return (
        table(
            [
                "task",
                "policy",
                "examples",
                "solved, none",
                "prefix",
                "dual",
                "positions run, of none's (prefix / dual)",
            ],
            rows,
        )
        + "\n\n"
        + source("kv_cache.json")
    )


def kv_cache_profile() -> str:
    """Where a decode's time goes in each cache mode (benchmarks/kv_cache.py --profile)."""
    rows = load("kv_cache.json")["profile"]
    return (
        table(
            [
                "model",
                "prompt",
                "policy",
                "mode",
                "total",
                "model forward",
                "cache bookkeeping",
                "sampler `prepare`",
                "rest",
                "NFE",
                "positions run",
            ],
            [
                [
                    f"`{r['model']}`",
                    str(r["prompt_length"]),
                    f"`{r['policy']}`",
                    r["cache"],
                    f"{r['seconds']:.2f} s",
                    f"{r['model_s']:.2f} s",
                    f"{r['cache_bookkeeping_s']:.2f} s",
                    f"{r['sampler_prepare_s']:.2f} s",
                    f"{r['rest_s']:.2f} s",
                    f"{r['nfe']:g}",
                    f"{r['positions']:,.0f}",
                ]
                for r in rows
            ],
        )
        + "\n\n"
        + source("kv_cache.json")
    )


def distributed() -> str:
    """Throughput of one training step with one and two processes (benchmarks/distributed.py)."""
    return simple(
        "distributed.json",
        {
            "run": lambda r: r["run"],
            "rollout": lambda r: f"{r['rollout_s']:.2f} s",
            "update": lambda r: f"{r['update_s']:.2f} s",
            "speed-up": lambda r: f"{r['speedup']:.2f}×",
            "parallel efficiency": lambda r: f"{r['parallel_efficiency']:.2f}",
            "communication share": lambda r: pct(r["communication_share"]),
            "transfer share": lambda r: pct(r["transfer_share"]),
        },
    )


def rerun() -> str:
    """Per committed results file, how many of its rows a re-run reproduced (benchmarks/rerun_compare.py)."""
    rows = load("rerun/compare.json")["results"]
    out = []
    for name in dict.fromkeys(r["file"] for r in rows):
        mine = [r for r in rows if r["file"] == name]
        det = [r for r in mine if not r["stochastic"]]
        sto = [r for r in mine if r["stochastic"]]
        moved = ", ".join(
            f"`{r['policy']}` ({r['data'].removeprefix('generated:')}) {pct(r['solved_before'])} → "
            f"{pct(r['solved_after'])}"
            for r in sto
            if not r["equal"]
        )
        out.append(
            [
                f"`{name}`",
                f"{sum(r['equal'] for r in det)} / {len(det)}",
                f"{sum(r['equal'] for r in sto)} / {len(sto)}",
                moved or "none",
            ]
        )
    return (
        table(
            [
                "results file (before)",
                "deterministic rows equal",
                "stochastic rows equal",
                "stochastic rows that moved",
            ],
            out,
        )
        + "\n\n"
        + source("rerun/compare.json")
    )


GROUPS = ("heuristic", "parallel heuristic", "shipped", "ablation", "oracle")  # the oracle-gap table's order


def oracle_gap() -> str:
    """Per task and data: every policy's solved rate and NFE beside the oracles, and the share of the gap between
    the best one-per-step heuristic and the one-per-step oracle each learned policy closes (benchmarks/oracle_gap.py)."""
    name = "oracle_gap.json"
    rows = load(name)["results"]
    out = []
    for key in dict.fromkeys((r["task"], r["model"], r["data"]) for r in rows):
        mine = sorted(
            (r for r in rows if (r["task"], r["model"], r["data"]) == key), key=lambda r: GROUPS.index(r["group"])
        )
        best = max((r for r in mine if r["group"] == "heuristic"), key=lambda r: r["solved_rate"])
        top = next(r for r in mine if r["label"] == "oracle")
        gap = top["solved_rate"] - best["solved_rate"]
        for r in mine:
            closed = (
                ""
                if r["group"] not in ("shipped", "ablation") or gap <= 0
                else pct((r["solved_rate"] - best["solved_rate"]) / gap)
            )
            out.append(
                [
                    f"{key[0]} · `{key[1]}`",
                    key[2].split(":", 1)[-1],
                    r["group"],
                    f"`{r['label']}`",
                    pct(r["solved_rate"]),
                    f"{r['nfe']:.1f}",
                    f"{r['aup']:.1f}",
                    closed,
                ]
            )
    return (
        table(["task · MDM", "data", "group", "policy", "solved", "NFE", "AUP", "gap closed"], out)
        + "\n\n"
        + source(name)
    )


def imitation_dagger() -> str:
    """Per pairwise input and DAgger round: the imitated planner's held-out solved rate beside the shipped ``upo``
    on the same puzzles, per clue count (benchmarks/imitation_dagger.py)."""
    name = "imitation_dagger.json"
    rows = load(name)["results"]
    clues = list(dict.fromkeys(r["clues"] for r in rows))
    label = {
        "coupling": "the coupling's A (learned)",
        "cliques": "the coupling's cliques (learned)",
        "units": "rows, columns, boxes (task rules: diagnostic)",
    }
    out = []
    for key in dict.fromkeys((r["pair"], r["round"]) for r in rows):
        mine = {r["clues"]: r for r in rows if (r["pair"], r["round"]) == key}
        first = next(iter(mine.values()))
        out.append(
            [label.get(key[0], key[0]), str(key[1]), f"{first['states']:,}"]
            + [
                f"{pct(mine[c]['solved_rate'])} ({signed(mine[c]['solved_rate'] - mine[c]['shipped_upo'])})"
                for c in clues
            ]
        )
    shipped = {c: next(r["shipped_upo"] for r in rows if r["clues"] == c) for c in clues}
    header = ["pairwise channels", "DAgger round", "states"] + [
        f"{c} clues (shipped `upo` {pct(shipped[c])})" for c in clues
    ]
    return table(header, out) + "\n\n" + source(name)


RECIPE_POLICIES = {  # the --extra labels of upo_dagger_recipe.json
    "upo": "shipped `upo`",
    "upo+cliques-dagger": "the recipe's `imitation/best`",
    "upo+cliques-dagger+grpo20": "… after its 20 GRPO steps (`last/`)",
}


def upo_dagger_recipe() -> str:
    """The held-out solved rate per clue count of recipes/upo-dagger-sudoku9-small.yaml's policies beside
    the shipped ``upo`` (benchmarks/oracle_gap.py --extra ... --only-extra)."""
    name = "upo_dagger_recipe.json"
    rows = load(name)["results"]
    data = list(dict.fromkeys(r["data"] for r in rows))
    out = [
        [RECIPE_POLICIES.get(key, f"`{key}`")]
        + [pct(next(r["solved_rate"] for r in rows if (r["label"], r["data"]) == (key, d))) for d in data]
        for key in dict.fromkeys(r["label"] for r in rows)
    ]
    header = ["policy"] + [d.split("=", 1)[-1] + " clues" for d in data]
    return table(header, out) + "\n\n" + source(name)


def planner_cost() -> str:
    """The policy step against one MDM forward, the shipped ``upo`` with and without the planner (policy_cost.py)."""
    out = []
    for label, name in (
        ("shipped `upo`", "upo/policy_cost_shipped.json"),
        ("`upo` + MLP planner, learned pairs", "upo/policy_cost_planner.json"),
        ("`upo-dagger-sudoku9-small`", "upo/policy_cost_dagger.json"),
    ):
        for r in load(name)["results"]:
            out.append(
                [
                    label,
                    f"`{r['model']}`",
                    str(r["batch_size"]),
                    f"{r['policy_parameters']:,}",
                    pct(r["step_cost_ratio"]),
                ]
            )
    return (
        table(["policy", "MDM", "batch", "policy parameters", "policy step / MDM forward"], out)
        + "\n\nFrom `benchmarks/results/upo/policy_cost_shipped.json`, `policy_cost_planner.json` and "
        "`policy_cost_dagger.json` (commands in `benchmarks/policy_cost.py`), one thread; each ratio is measured "
        "within one run."
    )


def block_diffusion() -> str:
    """LLaDA2 generate() vs unmask's engine (benchmarks/block_diffusion.py)."""
    header = ["size", "steps / block", "threshold", "loop", "forwards / token", "tokens = upstream", "wall", "ratio"]
    rows = [
        [
            r["size"],
            str(r["steps"]),
            f"{r['threshold']:g}",
            r["loop"],
            f"{r['forwards_per_token']:.3f}",
            "yes" if r["tokens_equal"] else "no",
            f"{r['wall_s']:.3f} s",
            f"{r['ratio']:.2f}",
        ]
        for r in load("block_diffusion.json")["results"]
    ]
    return table(header, rows) + "\n\n" + source("block_diffusion.json")


def blocks() -> dict[str, str]:
    """Every generated region, by NAME."""
    out = {
        "headline": headline(),
        "oracle-gap": oracle_gap(),
        "models": models_table(),
        "baselines": baselines(),
        "upo-grid": upo_grid(),
        "joint-marginals": heuristics_pivot_by("upo/joint_marginals.json", "clues"),
        "pass-at-n": pass_at_n(),
        "kv-cache-speed": kv_cache_speed(),
        "rerun": rerun(),
        "kv-cache-accuracy": kv_cache_accuracy(),
        "kv-cache-profile": kv_cache_profile(),
        "kv-cache-accuracy-all": kv_cache_accuracy_all(),
        "distributed": distributed(),
        "engine-overhead": simple(
            "engine_overhead.json",
            {
                "policy": lambda r: f"`{r['policy']}`",
                "puzzles/s": lambda r: f"{r['puzzles_per_s']:.1f}",
                "engine overhead (share of forward time)": lambda r: pct(r["overhead"]),
            },
        ),
        "policy-cost": simple(
            "parallel/policy_cost_coupling.json",
            {
                "MDM": lambda r: f"`{r['model']}`",
                "batch": lambda r: str(r["batch_size"]),
                "policy parameters": lambda r: f"{r['policy_parameters']:,}",
                "policy step / MDM forward": lambda r: pct(r["step_cost_ratio"]),
            },
        ),
        "planner-cost": planner_cost(),
        "block-diffusion": block_diffusion(),
        "diffusion-gemma-speed": simple(
            "diffusion_gemma.json",
            {
                "size": lambda r: f"`{r['size']}` ({r['parameters']:,} parameters, canvas {r['canvas_length']})",
                "tokens": lambda r: str(r["generated_tokens"]),
                "same tokens": lambda r: "yes" if r["identical_tokens"] else "**no**",
                "NFE / token (transformers, unmask)": lambda r: (
                    f"{r['nfe_per_token_transformers']:.3f}, {r['nfe_per_token_unmask']:.3f}"
                ),
                "seconds (transformers, unmask)": lambda r: (
                    f"{r['seconds_transformers']:.3f}, {r['seconds_unmask']:.3f}"
                ),
                "unmask / transformers": lambda r: f"{r['time_ratio']:.2f}",
            },
        ),
        "imitation-dagger": imitation_dagger(),
        "upo-dagger-recipe": upo_dagger_recipe(),
        "algorithm2-memory": simple(
            "algorithm2_memory.json",
            {
                "update": lambda r: r["variant"],
                "peak memory over the model": lambda r: f"{r['peak_mb_over_model']:,.0f} MB",
                "rollout": lambda r: f"{r['rollout_s']:.1f} s",
                "update pass": lambda r: f"{r['update_s']:.1f} s",
            },
        ),
    }
    for name in HEURISTICS_FILES + ("heuristics_arithmetic-600steps.json",):
        out[name.removesuffix(".json").replace("_", "-")] = heuristics_pivot(name)
    for name in (
        "frontier_sudoku9-coupling.json",
        "frontier_sudoku9-dagger.json",
        "frontier_arithmetic-carry.json",
        "frontier_sudoku9.json",
        "frontier_arithmetic-blocks.json",
        "frontier_arithmetic-transfer.json",
    ):
        out[name.removesuffix(".json").replace("_", "-")] = frontier(name)
    out.update({f"config-{cls.__name__}": reference_markdown(cls) for cls in CONFIG_CLASSES})  # docs/configuration.md
    out["task-options"] = task_options()
    return out


def task_options() -> str:
    """Every task's options (``--task-option KEY=VALUE``), from their typed classes (unmask.tasks.options)."""
    rows = []
    for name, task in TASKS.items():
        for f in fields(task.options):
            default = repr(f.default) if isinstance(f.default, str) else str(f.default).lower()
            shown = default if len(default) <= 24 else default[:20] + "…'"
            rows.append(
                [f"`{name}`", f"`{f.name}`", describe(f, field_spec(task.options, f)), f"`{shown}`", f.metadata["help"]]
            )
    takes_none = [f"`{name}`" for name, task in TASKS.items() if not fields(task.options)]
    return (
        table(["task", "option", "valid values", "default", "what it sets"], rows)
        + f"\n\n{', '.join(takes_none)} take no options."
    )


def recipe_command(command: str, name: str) -> str:
    """``unmask COMMAND --config recipes/NAME.yaml``: every shipped MDM and policy has its recipe."""
    recipe = next(iter(sorted((REPO / "recipes").glob(f"**/{name}.yaml"))), None)
    if recipe is None:
        raise ValueError(f"no recipe for the shipped {name!r}: add recipes/{name}.yaml (its training settings)")
    return f"unmask {command} --config {recipe.relative_to(REPO)}"


def results_table(rows: list[dict], name: str) -> list[str]:
    return [
        source(name) + " Generated examples are fresh and seeded; `data` names the difficulty (or the file). Count "
        "policies reveal one token per step (NFE = positions to generate); `threshold` and parallel policies reveal "
        "a variable number.",
        "",
        "| data | policy | solved | cell accuracy | mean NFE | AUP | n |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {r['data']} | {r['policy']} | {pct(r['solved_rate'])} | {pct(r['cell_accuracy'])} | {r['nfe']:.1f} | {r['aup']:.1f} "
            f"| {r['n']} |"
            for r in with_aup(rows)
        ),
    ]


def policy_card(name: str, meta: dict, rows: list[dict], source_name: str) -> str:
    pol = meta["policy"]
    held = ", ".join(f"{k} {v:.3g}" for k, v in meta.items() if k.startswith("eval_"))
    imitated, grpo_steps = any(k.startswith("imitation_") for k in meta), meta["train"].get("max_steps", 0)
    how = "trained with GRPO"
    checkpoint = f"step {meta['step']} of the run"
    if imitated:
        how = "trained by imitation of the ground-truth oracle" + (", then GRPO" if grpo_steps else " alone, no GRPO")
        if meta["step"] == 0:
            checkpoint = "the imitation phase's best round" + (" (no GRPO step beat it)" if grpo_steps else "")
    spec = rows_named(name, meta)  # KIND-MODEL loads by its kind
    lines = [
        f"# {name}",
        "",
        f"`{pol['kind']}` unmasking policy {how} (`unmask train-policy`) against the frozen built-in MDM "
        f"`{meta['mdm']}` on `{meta['task']}`; `--policies {spec}` with `--model {meta['mdm']}` loads it.",
        "",
        "| | |",
        "|---|---|",
        f"| checkpoint | {checkpoint}: the best held-out {'reward' if 'eval_reward' in meta else 'solved rate'} ({held}) |",
        f"| settings | {', '.join(f'{k}={v}' for k, v in pol.items() if not k.startswith('mdm_'))} |",
        "",
        "Training command (the recipe holds the settings that differ from the defaults; the checkpoint is the run"
        " directory's `best/`; `--max-minutes` and `--resume` do not change the result):",
        "",
        "```bash",
        recipe_command("train-policy", name),
        "```",
        "",
        "## Accuracy beside the heuristics",
        "",
        *results_table(rows, source_name),
    ]
    return "\n".join(lines) + "\n"


def model_card(name: str, meta: dict, rows: list[dict], source_name: str) -> str:
    m, t = meta["model"], meta["train"]
    lines = [
        f"# {name}",
        "",
        f"Built-in masked diffusion model for `{m['task']}`: a bidirectional transformer with factorised "
        f"position embeddings ({len(m['coordinates'])} coordinate tables over {len(m['coordinates'][0])} positions), trained with the masked-diffusion objective by `unmask train-mdm`.",
        "",
        "| | |",
        "|---|---|",
        f"| parameters | {meta['parameters']:,} |",
        f"| layers × width × heads | {m['n_layer']} × {m['n_embd']} × {m['n_head']} |",
        f"| vocabulary | {m['vocab_size']} tokens, mask id {m['mask_id']} (the `{m['task']}` task's layout) |",
        f"| training | {t['max_steps']} steps × batch {t['batch_size']}, AdamW lr {t['learning_rate']} cosine to {t['min_lr']}, seed {t['seed']} |",
        "",
        "Training command:",
        "",
        "```bash",
        recipe_command("train-mdm", name),
        "```",
        "",
        "## Accuracy by policy",
        "",
        *results_table(rows, source_name),
    ]
    return "\n".join(lines) + "\n"


def cards() -> dict[Path, str]:
    """The card of each shipped MDM and policy that a heuristics results file has rows for."""
    out: dict[Path, str] = {}
    policies = {p.name: json.loads((p / "config.json").read_text()) for p in sorted(SHIPPED_POLICIES.glob("*/"))}
    for name in HEURISTICS_FILES:
        results = load(name)["results"]
        for model in sorted({r["model"] for r in results} & set(builtin_models())):
            meta = json.loads((BUILTIN_DIR / model / "config.json").read_text())
            rows = [r for r in results if r["model"] == model]
            out[BUILTIN_DIR / model / "README.md"] = model_card(model, meta, rows, name)
            order = {d: i for i, d in enumerate(dict.fromkeys(r["data"] for r in rows))}
            for pname, pmeta in policies.items():
                mine = [
                    r
                    for r in rows
                    if pmeta["mdm"] == model
                    and (r["policy"].partition(":")[0] == pname or r["policy"] == rows_named(pname, pmeta))
                ]
                if mine:
                    datasets = {r["data"] for r in mine}
                    shown = sorted(
                        (r for r in rows if r["data"] in datasets and (r in mine or r["policy"] in CARD_BASELINES)),
                        key=lambda r: order[r["data"]],
                    )
                    out[SHIPPED_POLICIES / pname / "README.md"] = policy_card(pname, pmeta, shown, name)
    return out


def fill(path: Path, text: str, generated: dict[str, str]) -> str:
    """``text`` with every generated region replaced by its block; an unknown NAME is a ValueError."""

    def sub(m: re.Match) -> str:
        if m.group(2) not in generated:
            raise ValueError(f"{path}: unknown generated region {m.group(2)!r}; valid: {', '.join(sorted(generated))}")
        return m.group(1) + generated[m.group(2)] + "\n" + m.group(4)

    return MARKER.sub(sub, text)


def markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("**/*.md"))]


def outputs() -> dict[Path, str]:
    """Every generated file's text: the Markdown files with generated regions, and the cards."""
    generated = blocks()
    out = {}
    for path in markdown_files():
        text = path.read_text()
        if MARKER.search(text):
            out[path] = fill(path, text, generated)
    return {**out, **cards()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="write nothing; list the files that differ and exit 1")
    args = p.parse_args()
    stale = {path: text for path, text in outputs().items() if not path.is_file() or path.read_text() != text}
    for path, text in stale.items():
        print(f"{'stale' if args.check else 'wrote'}: {path.relative_to(REPO)}")
        if not args.check:
            path.write_text(text)
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
