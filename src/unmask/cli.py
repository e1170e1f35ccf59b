"""The ``unmask`` command line: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from unmask.checkpoint import save_json


def _add_sampling(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling (LLaDA generate() names)")
    g.add_argument("--steps", type=int, default=None, help="total decoding steps; default: one token per step")
    g.add_argument("--block-length", type=int, default=None, help="semi-autoregressive block length; default: full diffusion")
    g.add_argument("--temperature", type=float, default=0.0, help="token sampling temperature (0 = argmax)")


def _add_data(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--task", default="sudoku9", help="task name (sudoku4, sudoku9)")
    g.add_argument("--data", default=None, help="data file; default: freshly generated examples")
    g.add_argument("--num", type=int, default=200, help="number of generated examples (without --data)")
    g.add_argument("--clues", type=int, default=None, help="clues per generated sudoku")
    g.add_argument("--limit", type=int, default=None, help="use only the first N examples")
    g.add_argument("--seed", type=int, default=0)


def load_examples(task, args) -> list:
    if args.data:
        examples = task.load(args.data)
    else:
        examples = task.generate(args.num, seed=args.seed, clues=args.clues)
    return examples[: args.limit] if args.limit else examples


def cmd_eval(args: argparse.Namespace) -> int:
    from unmask.api import evaluate_policies

    report = evaluate_policies(
        task=args.task, model=args.model, policies=args.policies, data=args.data, num=args.num, clues=args.clues,
        limit=args.limit, seed=args.seed, steps=args.steps, block_length=args.block_length,
        temperature=args.temperature, batch_size=args.batch_size,
    )
    print(report.table)
    if args.json:
        save_json(args.json, report.to_json())
        print(f"wrote {args.json}")
    if args.plot:
        report.plot(args.plot)
        print(f"wrote {args.plot}")
    return 0


def cmd_train_mdm(args: argparse.Namespace) -> int:
    from unmask.train_mdm import MDMTrainConfig, train_mdm

    cfg = MDMTrainConfig(**{f.name: getattr(args, f.name) for f in fields(MDMTrainConfig)})
    out = train_mdm(cfg, resume=args.resume)
    print(f"saved {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from unmask.api import demo

    demo(output_dir=args.output_dir, num=args.num)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unmask", description="Learning where to unmask in masked diffusion models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("eval", help="evaluate unmasking policies side by side")
    _add_data(p)
    p.add_argument("--model", default=None, help="built-in model name or checkpoint dir; default: the task's shipped model")
    p.add_argument("--policies", default="random,confidence,margin,entropy,left_to_right,topk_softmax,threshold:0.9",
                   help="comma-separated policy specs, e.g. confidence,threshold:0.9,topk_softmax:k=5")
    p.add_argument("--batch-size", type=int, default=256)
    _add_sampling(p)
    p.add_argument("--json", default=None, help="write results JSON here")
    p.add_argument("--plot", default=None, help="write a solved-rate vs NFE plot (PNG) here")
    p.set_defaults(func=cmd_eval)

    from unmask.train_mdm import MDMTrainConfig

    p = sub.add_parser("train-mdm", help="train a built-in MDM with the masked-diffusion objective")
    for f in fields(MDMTrainConfig):
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=type(f.default), default=f.default)
    p.add_argument("--resume", action="store_true", help="continue the run in --output-dir exactly where it stopped")
    p.set_defaults(func=cmd_train_mdm)

    p = sub.add_parser("demo", help="compare policies on fresh puzzles and write a plot (CPU, minutes)")
    p.add_argument("--output-dir", default="outputs/demo")
    p.add_argument("--num", type=int, default=200)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"unmask {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
