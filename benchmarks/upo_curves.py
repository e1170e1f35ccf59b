"""UPO training curves on sudoku9: held-out greedy solved rate and group reward (mean, std) per step (cf. UPO Fig. 4).

The curves come from `unmask train-policy` runs (metrics.csv copied to benchmarks/results/upo/):
    unmask train-policy --task sudoku9 --model sudoku9-small --clues 28 --reference confidence --beta 0.05 \\
        --base-temperature 0.05 --d-model 32 --learning-rate 1e-3 --steps 150 --eval-every 10 --eval-size 256 \\
        --output-dir runs/upo-c28-ce0.05                       # -> sudoku9-small_c28_ce0.05_lr1e-3.csv (stopped at 33)
    unmask train-policy --task sudoku9 --model sudoku9-small --clues 28 --reference confidence --beta 0.005 \\
        --base-temperature 0.02 --d-model 32 --learning-rate 3e-3 --num-generations 8 --prompts-per-step 6 \\
        --steps 150 --eval-every 10 --eval-size 256 --output-dir runs/upo-c28-ce0.005  # -> ..._ce0.005_lr3e-3.csv (stopped at 106)
Summary command (table + JSON + PNG):
    .venv/bin/python benchmarks/upo_curves.py
"""

from __future__ import annotations

import csv
from pathlib import Path

from unmask.checkpoint import save_json

RESULTS = Path(__file__).resolve().parent / "results"


def read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    summary = []
    print(f"{'run':<40} {'steps':>6} {'eval@0':>7} {'best eval':>10} {'last eval':>10}")
    for path in sorted((RESULTS / "upo").glob("*.csv")):
        rows = read(path)
        evals = [(r["step"], r["eval_solved"]) for r in rows if "eval_solved" in r]
        train = [r for r in rows if "reward_mean" in r]
        run = {"run": path.stem, "steps": int(rows[-1]["step"]), "eval_at_0": evals[0][1],
               "best_eval": max(v for _, v in evals), "last_eval": evals[-1][1], "eval_curve": evals}
        summary.append(run)
        print(f"{run['run']:<40} {run['steps']:>6} {run['eval_at_0']:>7.3f} {run['best_eval']:>10.3f} {run['last_eval']:>10.3f}")
        ax1.plot(*zip(*evals), marker="o", label=path.stem)
        steps = [r["step"] for r in train]
        mean = [r["reward_mean"] for r in train]
        std = [r["reward_std"] for r in train]
        line = ax2.plot(steps, mean, label=path.stem)[0]
        ax2.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                         color=line.get_color(), alpha=0.15)
    ax1.set(xlabel="GRPO step", ylabel="held-out greedy solved rate (256 puzzles, 28 clues)")
    ax2.set(xlabel="GRPO step", ylabel="group reward (mean ± within-group std)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "upo_curves.png", dpi=120)
    save_json(RESULTS / "upo_curves.json", {"command": "benchmarks/upo_curves.py", "runs": summary})
    print(f"wrote {RESULTS / 'upo_curves.json'} and {RESULTS / 'upo_curves.png'}")


if __name__ == "__main__":
    main()
