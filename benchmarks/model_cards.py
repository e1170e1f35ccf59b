"""Write the card (README.md) of each shipped MDM and each shipped policy from its config and the heuristics
benchmark (a policy's card shows its rows beside random, left-to-right, confidence, margin and threshold:0.9 on the same examples).

Command:
    .venv/bin/python benchmarks/model_cards.py --results benchmarks/results/heuristics_small.json \
        benchmarks/results/heuristics_base.json benchmarks/results/heuristics_zebra.json \
        benchmarks/results/heuristics_arithmetic.json benchmarks/results/heuristics_arithmetic-carry.json \
        benchmarks/results/heuristics_sudoku4.json
(a model's card comes from the last file that has rows for it)
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from unmask.api import SHIPPED_POLICIES
from unmask.models import BUILTIN_DIR, builtin_models
from unmask.rl.grpo import GRPOConfig

BASELINES = ("random", "left_to_right", "confidence", "margin", "threshold:0.9")


def flags(train: dict, defaults: dict | None = None) -> str:
    """The command-line flags of a training config (``task_options`` as repeated ``--task-option``), leaving
    out the settings equal to ``defaults``."""
    defaults = defaults or {}
    keep = lambda k, v: v != "" and (k in ("task", "model", "policy") or k not in defaults or defaults[k] != v)  # noqa: E731
    out = " ".join(f"--{k.replace('_', '-')} {'none' if v is None else v}" for k, v in train.items()
                   if k not in ("output_dir", "task_options", "model_options") and keep(k, v))
    return out + "".join(f" --task-option {k}={v}" for k, v in train.get("task_options", {}).items())


def results_table(rows: list[dict], commands: list[str], source: str) -> list[str]:
    lines = [
        f"From `{source}`, written by " + "; ".join(f"`{c}`" for c in commands) + ". Generated examples are "
        "fresh and seeded; `data` names the difficulty (or the file). Count policies reveal one token per step "
        "(NFE = positions to generate); `threshold` and parallel policies reveal a variable number.",
        "",
        "| data | policy | solved | cell accuracy | mean NFE | n |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['data']} | {r['policy']} | {100 * r['solved_rate']:.1f}% | {100 * r['cell_accuracy']:.1f}% "
                     f"| {r['nfe']:.1f} | {r['n']} |")
    return lines


def policy_card(name: str, meta: dict, rows: list[dict], commands: list[str], source: str) -> str:
    pol, t = meta["policy"], meta["train"]
    held = ", ".join(f"{k} {v:.3g}" for k, v in meta.items() if k.startswith("eval_"))
    lines = [
        f"# {name}",
        "",
        f"`{pol['kind']}` unmasking policy trained with GRPO (`unmask train-policy`) against the frozen built-in MDM "
        f"`{meta['mdm']}` on `{meta['task']}`; `--policies {pol['kind']}` with `--model {meta['mdm']}` loads it.",
        "",
        "| | |", "|---|---|",
        f"| checkpoint | step {meta['step']} of the run: the best held-out {'reward' if 'eval_reward' in meta else 'solved rate'} ({held}) |",
        f"| settings | {', '.join(f'{k}={v}' for k, v in pol.items() if not k.startswith('mdm_'))} |",
        "",
        "Training command (its other settings are the defaults; the checkpoint is the run directory's `best/`;"
        " `--max-minutes` and `--resume` do not change the result):",
        "",
        "```bash",
        f"unmask train-policy {flags(t, asdict(GRPOConfig()))} --output-dir {t['output_dir']}",
        "```",
        "",
        "## Accuracy beside the heuristics",
        "",
        *results_table(rows, commands, source),
    ]
    return "\n".join(lines) + "\n"


def card(name: str, meta: dict, rows: list[dict], commands: list[str], source: str) -> str:
    m, t = meta["model"], meta["train"]
    lines = [
        f"# {name}",
        "",
        f"Built-in masked diffusion model for `{m['task']}`: a bidirectional transformer with factorised "
        f"position embeddings ({len(m['coordinates'])} coordinate tables over {len(m['coordinates'][0])} positions), trained with the masked-diffusion objective by `unmask train-mdm`.",
        "",
        "| | |", "|---|---|",
        f"| parameters | {meta['parameters']:,} |",
        f"| layers × width × heads | {m['n_layer']} × {m['n_embd']} × {m['n_head']} |",
        f"| vocabulary | {m['vocab_size']} tokens, mask id {m['mask_id']} (the `{m['task']}` task's layout) |",
        f"| training | {t['steps']} steps × batch {t['batch_size']}, AdamW lr {t['lr']} cosine to {t['min_lr']}, seed {t['seed']} |",
        "",
        "Training command:",
        "",
        "```bash",
        f"unmask train-mdm {flags(t)} --output-dir runs/{name}",
        "```",
        "",
        "## Accuracy by policy",
        "",
        *results_table(rows, commands, source),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", nargs="+", default=["benchmarks/results/heuristics_small.json",
                                                    "benchmarks/results/heuristics_base.json"])
    args = p.parse_args()
    policies = {p.name: json.loads((p / "config.json").read_text()) for p in sorted(SHIPPED_POLICIES.glob("*/"))}
    for path in args.results:
        report = json.loads(Path(path).read_text())
        commands = report.get("commands", [report.get("command")])
        for name in sorted({r["model"] for r in report["results"]}):
            if name not in builtin_models():
                continue
            meta = json.loads((BUILTIN_DIR / name / "config.json").read_text())
            rows = [r for r in report["results"] if r["model"] == name]
            (BUILTIN_DIR / name / "README.md").write_text(card(name, meta, rows, commands, path))
            print(f"wrote {BUILTIN_DIR / name / 'README.md'} ({len(rows)} result rows)")
            for pname, pmeta in policies.items():
                kind = pmeta["policy"]["kind"]
                mine = [r for r in rows if r["policy"] == kind and pmeta["mdm"] == name]
                if not mine:
                    continue
                datasets = {r["data"] for r in mine}
                order = {d: i for i, d in enumerate(dict.fromkeys(r["data"] for r in rows))}
                rows_p = sorted((r for r in rows if r["data"] in datasets and (r in mine or r["policy"] in BASELINES)),
                                key=lambda r: order[r["data"]])
                (SHIPPED_POLICIES / pname / "README.md").write_text(policy_card(pname, pmeta, rows_p, commands, path))
                print(f"wrote {SHIPPED_POLICIES / pname / 'README.md'} ({len(mine)} rows of its own)")


if __name__ == "__main__":
    main()
