"""Write the model card (README.md) of each shipped MDM from its config and the heuristics benchmark.

Command:
    .venv/bin/python benchmarks/model_cards.py --results benchmarks/results/heuristics_small.json \
        benchmarks/results/heuristics_base.json benchmarks/results/heuristics_zebra.json \
        benchmarks/results/heuristics_arithmetic.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from unmask.models import BUILTIN_DIR, builtin_models


def card(name: str, meta: dict, rows: list[dict], commands: list[str], source: str) -> str:
    m, t = meta["model"], meta["train"]
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in t.items() if k != "output_dir")
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
        f"unmask train-mdm {flags} --output-dir runs/{name}",
        "```",
        "",
        "## Accuracy by policy",
        "",
        f"From `{source}`, written by " + "; ".join(f"`{c}`" for c in commands) + ". Generated examples are "
        "fresh and seeded; `data` names the difficulty (or the file). Count policies reveal one token per step "
        "(NFE = positions to generate); `threshold` reveals a variable number.",
        "",
        "| data | policy | solved | cell accuracy | mean NFE | n |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['data']} | {r['policy']} | {100 * r['solved_rate']:.1f}% | {100 * r['cell_accuracy']:.1f}% "
                     f"| {r['nfe']:.1f} | {r['n']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", nargs="+", default=["benchmarks/results/heuristics_small.json",
                                                    "benchmarks/results/heuristics_base.json"])
    args = p.parse_args()
    for path in args.results:
        report = json.loads(Path(path).read_text())
        for name in sorted({r["model"] for r in report["results"]}):
            if name not in builtin_models():
                continue
            meta = json.loads((BUILTIN_DIR / name / "config.json").read_text())
            rows = [r for r in report["results"] if r["model"] == name]
            (BUILTIN_DIR / name / "README.md").write_text(card(name, meta, rows, report.get("commands", [report.get("command")]), path))
            print(f"wrote {BUILTIN_DIR / name / 'README.md'} ({len(rows)} result rows)")


if __name__ == "__main__":
    main()
