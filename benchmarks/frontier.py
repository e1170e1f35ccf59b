"""Accuracy vs mean NFE of learned parallel policies, threshold (Fast-dLLM), k tokens per step and one-per-step
confidence, in full diffusion and semi-AR blocks, with policies moved across MDMs and lengths (Jazbec §4).

Commands (the figures in benchmarks/results/frontier_*.json and the plots beside them), after training the
policies as in the README ("Parallel unmasking"):
    # sudoku9: both built-in MDMs (sudoku9-small is the default), full diffusion vs blocks of 3 rows; each shipped
    # policy (alpha-conditioned, with a learned coupling) on its own MDM (native) and on the other (transfer)
    .venv/bin/python benchmarks/frontier.py --name sudoku9-coupling --models sudoku9-small,sudoku9-base \
        --block-lengths none,27 --clues 28 --num 500 --alphas 0,1,2,4,6,8 --policies \
        src/unmask/assets/policies/bernoulli-sudoku9-small,src/unmask/assets/policies/bernoulli-sudoku9-base
    # the same for the confidence-only policy of the paper (no coupling; frontier_sudoku9.json)
    .venv/bin/python benchmarks/frontier.py --name sudoku9 --models sudoku9-small,sudoku9-base --block-lengths none \
        --clues 28 --num 500 --policies benchmarks/results/checkpoints/bernoulli-sudoku9-small-step150
    # a text task on the built-in models: 8-digit sums, full diffusion vs blocks of 3 answer digits, the
    # confidence-only 9x9 policy transferred across tasks and lengths (runs/arithmetic-600: unmask train-mdm --task
    #  arithmetic --n-embd 64 --n-layer 4 --steps 600 --batch-size 128 --lr 2e-3 --output-dir runs/arithmetic-600)
    .venv/bin/python benchmarks/frontier.py --name arithmetic-blocks --task arithmetic --models arithmetic,runs/arithmetic-600 \
        --policies benchmarks/results/checkpoints/bernoulli-sudoku9-small-step150 --block-lengths none,3 --difficulty 8 \
        --num 500 --ks 1,2,3,9
    # a text task on a Hugging Face dLLM (GPU): full diffusion vs LLaDA's 32-token blocks
    .venv/bin/python benchmarks/frontier.py --name gsm8k --task gsm8k --data ../shared/data/gsm8k_test.jsonl --limit 256 \
        --models hf:GSAI-ML/LLaDA-8B-Instruct --trust-remote-code --gen-length 256 --block-lengths none,32 \
        --batch-size 16 --policies runs/bernoulli-llada/best

Each (model, block length) is one `unmask frontier` run on the same examples. The summary row of a policy says
whether it runs on the MDM it was trained with ("native") or another ("transfer"), its fewest mean NFE within 1
point of one-per-step confidence (and the speed-up) and its mean solved-rate gain over threshold decoding at equal
mean NFE (where the threshold curve covers that NFE).
"""

from __future__ import annotations

import argparse

import numpy as np
from common import run_info

from unmask.api import frontier
from unmask.core.checkpoint import save_json
from unmask.evaluation.frontier import BOUNDS, POLICY_TEMPERATURES, THRESHOLDS, TOKENS_PER_STEP


def numbers(cast, text: str) -> list:
    return [cast(v) for v in text.split(",") if v.strip()]


def summary_rows(report, model: str, block_length: int | None) -> list[dict]:
    """One row per curve: speed-up at the confidence accuracy and mean gain over threshold at equal NFE."""
    rows = []
    for method, row in report.summary.items():
        if method == "reference":
            continue
        gains = [g["gain"] for g in row.get("vs_threshold", []) if g["gain"] is not None]
        trained_with = report.context["trained_with"].get(method)
        rows.append(
            {
                "model": model,
                "block_length": block_length,
                "method": method,
                "origin": ""
                if trained_with is None
                else ("native" if trained_with == model else f"transfer from {trained_with}"),
                "nfe_at_reference_accuracy": row["nfe_at_reference_accuracy"],
                "speedup": row["speedup"],
                "mean_gain_vs_threshold": float(np.mean(gains)) if gains else None,
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="sudoku9", help="results go to benchmarks/results/frontier_NAME.json (+ plots)")
    p.add_argument("--task", default="sudoku9")
    p.add_argument("--models", default="sudoku9-small,sudoku9-base")
    p.add_argument("--policies", default="", help="learned policies (paths or shipped names), comma-separated")
    p.add_argument("--block-lengths", default="none,27", help="'none' = full diffusion")
    p.add_argument("--difficulty", "--clues", type=int, default=28, help="the task's generation knob (sudoku: clues)")
    p.add_argument("--num", type=int, default=500)
    p.add_argument("--data", default=None)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--gen-length", type=int, default=None)
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--thresholds", default=",".join(map(str, THRESHOLDS)))
    p.add_argument("--ks", default=",".join(map(str, TOKENS_PER_STEP)))
    p.add_argument("--alphas", default=None, help="default: 5 across each alpha-conditioned policy's range")
    p.add_argument("--policy-temperatures", default=",".join(map(str, POLICY_TEMPERATURES)))
    p.add_argument("--bounds", default=",".join(map(str, BOUNDS)), help="for policies trained by imitation")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    model_options = {"trust_remote_code": True} if args.trust_remote_code else {}
    task_options = {"gen_length": args.gen_length} if args.gen_length else {}
    runs, rows = [], []
    for model in args.models.split(","):
        for block in args.block_lengths.split(","):
            block_length = None if block == "none" else int(block)
            report = frontier(
                task=args.task,
                model=model,
                policies=args.policies,
                data=args.data or "",
                num=args.num,
                difficulty=[args.difficulty],
                limit=args.limit,
                seed=args.seed,
                block_length=block_length,
                batch_size=args.batch_size,
                thresholds=numbers(float, args.thresholds),
                ks=numbers(int, args.ks),
                alphas=numbers(float, args.alphas) if args.alphas else None,
                policy_temperatures=numbers(float, args.policy_temperatures),
                bounds=numbers(float, args.bounds),
                model_options=model_options,
                task_options=task_options,
            )
            print(f"\n== {args.task} · {model} · block length {block} ==\n{report.table}")
            plot = f"benchmarks/results/frontier_{args.name}_{model.replace('/', '_').replace(':', '_')}_{block}.png"
            report.plot(plot)
            runs.append({**report.to_json(), "plot": plot})
            rows += summary_rows(report, model, block_length)
    print(f"\n{'model':<16} {'block':>5} {'method':<58} {'NFE@conf':>9} {'speed-up':>8} {'gain vs thr':>11}")
    for r in rows:
        nfe = f"{r['nfe_at_reference_accuracy']:.2f}" if r["speedup"] else "-"
        speed = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
        gain = f"{100 * r['mean_gain_vs_threshold']:+.1f} pt" if r["mean_gain_vs_threshold"] is not None else "-"
        label = f"{r['method']} {r['origin']}".strip()[-58:]
        print(f"{r['model']:<16} {str(r['block_length']):>5} {label:<58} {nfe:>9} {speed:>8} {gain:>11}")
    out = f"benchmarks/results/frontier_{args.name}.json"
    save_json(
        out,
        {
            "provenance": [
                run_info(
                    "benchmarks/frontier.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())
                )
            ],
            "summary": rows,
            "runs": runs,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
