"""Training curves of GRPO runs: held-out solved rate, group reward (mean, std) and held-out NFE per step
(cf. UPO Fig. 4), one curve per metrics.csv in benchmarks/results/<grid>/, with a summary table and JSON.

`--grid upo` (default) holds the UPO runs: the three below and the reference/beta ablation of
`benchmarks/ablations.py --grid upo`; `--grid parallel` the Bernoulli / Plackett-Luce ablation; `--grid zebra`
the zebra runs of `benchmarks/gpu_grid.sh` (each folder's README.md gives the commands and machine). The first three
curves come from `unmask train-policy` runs (metrics.csv copied to benchmarks/results/upo/):
    unmask train-policy --task sudoku9 --model sudoku9-small --clues 28 --reference confidence --beta 0.05 \\
        --base-temperature 0.05 --d-model 32 --learning-rate 1e-3 --max-steps 150 --eval-steps 10 --eval-size 256 \\
        --output-dir runs/upo-c28-ce0.05                       # -> sudoku9-small_c28_ce0.05_lr1e-3.csv (stopped at 33)
    unmask train-policy --task sudoku9 --model sudoku9-small --clues 28 --reference confidence --beta 0.005 \\
        --base-temperature 0.02 --d-model 32 --learning-rate 3e-3 --num-generations 8 --prompts-per-step 6 \\
        --max-steps 150 --eval-steps 10 --eval-size 256 --output-dir runs/upo-c28-ce0.005  # -> ..._ce0.005_lr3e-3.csv (stopped at 106)
    unmask train-policy --task sudoku9 --model sudoku9-small --difficulty 28 --reference confidence --beta 0.005 \\
        --base-temperature 0.05 --learning-rate 2e-3 --num-generations 8 --prompts-per-step 12 --num-iterations 1 \\
        --max-steps 200 --eval-steps 10 --eval-size 256 --output-dir runs/upo-c28-t05  # -> ..._t0.05_lr2e-3_P12.csv (stopped
        # at 29; its best, step 10, is benchmarks/results/checkpoints/upo-sudoku9-small-c28-step10)
    GRPO after the coupling's pre-training (--coupling-rounds, the shipped upo-sudoku9-* recipe's settings but):
    unmask train-policy --task sudoku9 --model sudoku9-small --coupling-rounds 3 --coupling-prompts 1000 \
        --difficulty 28 --reference none --learning-rate 3e-4 --num-generations 8 --prompts-per-step 16 --max-steps 30 \
        --eval-steps 5 --eval-size 256 --output-dir runs/cp1   # -> sudoku9-small_c28_coupling_lr3e-4.csv
    unmask train-policy --task sudoku9 --model sudoku9-small --coupling-rounds 3 --difficulty 24,28,32,36 \
        --reference none --learning-rate 2e-3 --num-generations 8 --prompts-per-step 16 --max-steps 40 --eval-steps 5 \
        --eval-size 256 --output-dir runs/cp2   # -> sudoku9-small_mix_coupling_lr2e-3_stopped.csv (stopped at 17)
Summary commands (table + JSON + PNG: benchmarks/results/<grid>_curves.{json,png}):
    .venv/bin/python benchmarks/curves.py --grid upo
    .venv/bin/python benchmarks/curves.py --grid parallel
    .venv/bin/python benchmarks/curves.py --grid zebra
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from common import run_info

from unmask.core.checkpoint import save_json

RESULTS = Path(__file__).resolve().parent / "results"


def read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def smooth(values: list[float], points: int = 60) -> list[float]:
    """Trailing mean over a window that leaves about ``points`` independent points per curve."""
    w = max(1, len(values) // points)
    return [sum(values[max(0, i - w + 1) : i + 1]) / len(values[max(0, i - w + 1) : i + 1]) for i in range(len(values))]


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", default="upo", help="the folder of benchmarks/results/ holding the metrics CSVs")
    args = p.parse_args()
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.5))
    summary = []
    print(f"{'run':<48} {'steps':>6} {'eval@0':>7} {'best eval':>10} {'last eval':>10} {'last NFE':>9}")
    for path in sorted((RESULTS / args.grid).glob("*.csv")):
        rows = read(path)
        evals = [(r["step"], r["eval_solved"]) for r in rows if "eval_solved" in r]
        nfes = [(r["step"], r["eval_nfe"]) for r in rows if "eval_nfe" in r]
        train = [r for r in rows if "reward_mean" in r]
        run = {
            "run": path.stem,
            "steps": int(rows[-1]["step"]),
            "eval_at_0": evals[0][1],
            "best_eval": max(v for _, v in evals),
            "last_eval": evals[-1][1],
            "eval_curve": evals,
            "last_eval_nfe": nfes[-1][1] if nfes else None,
        }
        summary.append(run)
        nfe = f"{run['last_eval_nfe']:.1f}" if nfes else "-"
        print(
            f"{run['run']:<48} {run['steps']:>6} {run['eval_at_0']:>7.3f} {run['best_eval']:>10.3f} "
            f"{run['last_eval']:>10.3f} {nfe:>9}"
        )
        line = ax1.plot(*zip(*evals), marker="o", label=path.stem)[0]
        steps = [r["step"] for r in train]
        mean = smooth([r["reward_mean"] for r in train])
        std = smooth([r["reward_std"] for r in train])
        ax2.plot(steps, mean, color=line.get_color(), label=path.stem)
        ax2.fill_between(
            steps,
            [m - s for m, s in zip(mean, std)],
            [m + s for m, s in zip(mean, std)],
            color=line.get_color(),
            alpha=0.15,
        )
        if nfes:
            ax3.plot(*zip(*nfes), marker="o", color=line.get_color(), label=path.stem)
    ax1.set(xlabel="GRPO step", ylabel="held-out solved rate (256 puzzles)")
    ax2.set(xlabel="GRPO step", ylabel="group reward (mean ± within-group std, smoothed)")
    ax3.set(xlabel="GRPO step", ylabel="held-out mean NFE")
    for ax in (ax1, ax2, ax3):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    png, out = RESULTS / f"{args.grid}_curves.png", RESULTS / f"{args.grid}_curves.json"
    fig.savefig(png, dpi=120)
    save_json(out, {"provenance": [run_info(f"benchmarks/curves.py --grid {args.grid}")], "runs": summary})
    print(f"wrote {out} and {png}")


if __name__ == "__main__":
    main()
