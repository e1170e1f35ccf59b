"""The ``unmask`` command line: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from unmask.checkpoint import save_json
from unmask.policies import parse_value
from unmask.tasks import TASKS


def _add_sampling(p: argparse.ArgumentParser, steps: bool = True) -> None:
    g = p.add_argument_group("sampling (LLaDA generate() names)")
    if steps:
        g.add_argument("--steps", type=int, default=None, help="total decoding steps; default: one token per step")
    g.add_argument("--block-length", type=int, default=None, help="semi-autoregressive block length; default: full diffusion")
    g.add_argument("--temperature", type=float, default=0.0, help="token sampling temperature (0 = argmax)")


def _add_data(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--task", default="sudoku9", help=f"task name ({', '.join(sorted(TASKS))})")
    g.add_argument("--data", default=None, help="data file; default: freshly generated examples")
    g.add_argument("--num", type=int, default=200, help="number of generated examples (without --data)")
    g.add_argument("--difficulty", "--clues", type=int, default=None,
                   help="difficulty of generated examples: the task's knob (sudoku: clues, arithmetic: digits, ...)")
    g.add_argument("--limit", type=int, default=None, help="use only the first N examples")
    g.add_argument("--seed", type=int, default=0)


def _add_hf(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Hugging Face dLLMs (--model hf:NAME_OR_PATH) and text tasks")
    g.add_argument("--gen-length", "--max-new-tokens", dest="gen_length", type=int, default=None,
                   help="tokens to generate after the prompt (LLaDA gen_length, Dream max_new_tokens); default 256")
    g.add_argument("--no-chat", action="store_true", help="do not wrap prompts in the tokenizer's chat template")
    g.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a task option, repeatable (e.g. zebra houses=4; arithmetic op=mul); see `get_task`")
    g.add_argument("--trust-remote-code", action="store_true", help="run the model repository's own code (LLaDA, Dream)")
    g.add_argument("--dtype", default=None, choices=["auto", "float32", "bfloat16", "float16"],
                   help="weights dtype; default bfloat16 on GPU, float32 on CPU")
    g.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:1, ... for any model (built-in or hf:); default cuda when available")
    g.add_argument("--hf-layer", type=int, default=None, help="hidden_states index fed to learned policies; default -1 (last)")
    g.add_argument("--hf-style", default=None, choices=["llada", "dream", "masked_lm"],
                   help="logit alignment; default from config.model_type")
    g.add_argument("--mask-id", type=int, default=None, help="mask token id when neither tokenizer nor config names one")
    g.add_argument("--tokenizer", default=None, help="tokenizer name or path; default the model's")
    g.add_argument("--allow-pickle", action="store_true", help="also load pickled (.bin) weights; default safetensors only")


def hf_options(args: argparse.Namespace) -> tuple[dict, dict]:
    """(model options, task options) from the Hugging Face flags the user set."""
    model = {
        "trust_remote_code": args.trust_remote_code or None, "dtype": args.dtype, "device": args.device,
        "hidden_layer": args.hf_layer, "style": args.hf_style, "mask_id": args.mask_id, "tokenizer": args.tokenizer,
        "allow_pickle": args.allow_pickle or None,
    }
    task = {"gen_length": args.gen_length, "chat": False if args.no_chat else None, **task_options(args.task_option)}
    return {k: v for k, v in model.items() if v is not None}, {k: v for k, v in task.items() if v is not None}


def task_options(items: list[str]) -> dict:
    """``--task-option KEY=VALUE`` flags as a dict of parsed values."""
    options = {}
    for option in items:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise ValueError(f"--task-option takes KEY=VALUE, got {option!r}")
        options[key] = parse_value(value)
    return options


def cmd_eval(args: argparse.Namespace) -> int:
    from unmask.api import evaluate_policies

    model_options, task_options = hf_options(args)
    report = evaluate_policies(
        task=args.task, model=args.model, policies=args.policies, data=args.data, num=args.num, difficulty=args.difficulty,
        limit=args.limit, seed=args.seed, steps=args.steps, block_length=args.block_length,
        temperature=args.temperature, batch_size=args.batch_size,
        model_options=model_options, task_options=task_options, pass_at=args.pass_at, alpha=args.alpha,
    )
    _write_report(report, args)
    return 0


def _write_report(report, args: argparse.Namespace) -> None:
    print(report.table)
    if args.json:
        save_json(args.json, report.to_json())
        print(f"wrote {args.json}")
    if args.plot:
        report.plot(args.plot)
        print(f"wrote {args.plot}")


def _numbers(cast):
    """argparse type for comma-separated lists of numbers."""

    def parse(text: str) -> list:
        try:
            return [cast(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {cast.__name__}s, got {text!r}") from None

    return parse


def cmd_frontier(args: argparse.Namespace) -> int:
    from unmask.api import frontier

    model_options, task_options = hf_options(args)
    report = frontier(
        task=args.task, model=args.model, policies=args.policies, data=args.data, num=args.num, difficulty=args.difficulty,
        limit=args.limit, seed=args.seed, block_length=args.block_length, temperature=args.temperature,
        batch_size=args.batch_size, thresholds=args.thresholds, ks=args.ks, alphas=args.alphas,
        policy_temperatures=args.policy_temperatures, model_options=model_options, task_options=task_options,
    )
    _write_report(report, args)
    return 0


def cmd_train_mdm(args: argparse.Namespace) -> int:
    from unmask.train_mdm import MDMTrainConfig, train_mdm

    values = {f.name: getattr(args, f.name) for f in fields(MDMTrainConfig) if f.name != "task_options"}
    cfg = MDMTrainConfig(**values, task_options=task_options(args.task_option))
    out = train_mdm(cfg, resume=args.resume)
    print(f"saved {out}")
    return 0


def cmd_train_policy(args: argparse.Namespace) -> int:
    from unmask.api import train_policy
    from unmask.rl.grpo import GRPOConfig

    model_options, task_options = hf_options(args)
    if args.reward:
        task_options["reward"] = args.reward
    values = {f.name: getattr(args, f.name) for f in fields(GRPOConfig) if f.name not in ("model_options", "task_options")}
    cfg = GRPOConfig(**values, model_options=model_options, task_options=task_options)
    out = train_policy(cfg, resume=args.resume, max_minutes=args.max_minutes)
    print(f"saved {out / 'best'} (best held-out solved rate) and {out / 'last'} (resumable)")
    return 0


def _add_config_flags(p: argparse.ArgumentParser, config_cls) -> None:
    """One flag per scalar dataclass field, typed from its default."""
    for f in fields(config_cls):
        if f.type == "dict":
            continue
        flag = "--" + f.name.replace("_", "-")
        if str(f.type) == "str | None":  # None is the default; 'none' is a value (--reference none)
            kind = str
        elif "None" in str(f.type):
            kind = _optional(int if str(f.type).startswith("int") else float)
        else:
            kind = type(f.default)
        aliases = ["--clues"] if f.name == "difficulty" else []  # the sudoku name of the knob
        p.add_argument(flag, *aliases, dest=f.name, type=kind, default=f.default)


def _optional(cast):
    """argparse type for ``X | None`` fields: 'none' gives None."""

    def parse(text: str):
        return None if text.lower() == "none" else cast(text)

    parse.__name__ = cast.__name__
    return parse


def cmd_demo(args: argparse.Namespace) -> int:
    from unmask.api import demo

    demo(output_dir=args.output_dir, num=args.num, difficulty=args.difficulty, train_steps=args.train_steps)
    return 0


def cmd_show_order(args: argparse.Namespace) -> int:
    from unmask.order import plot_order, show_order

    model_options, task_options = hf_options(args)
    result = show_order(
        task=args.task, policy=args.policy, model=args.model, data=args.data, num=args.num, difficulty=args.difficulty,
        limit=args.limit, seed=args.seed, steps=args.steps, block_length=args.block_length, temperature=args.temperature,
        batch_size=args.batch_size, model_options=model_options, task_options=task_options,
    )
    print(f"{result.context['policy']}: solved {result.solved.mean():.3f}, mean NFE {result.nfe.mean():.2f} on {len(result.nfe)} examples")
    print("mean reveal step / last step per generated position (0 = first, 1 = last):")
    for row in result.mean_normalised.reshape(result.shape):
        print("  " + " ".join(f"{v:.2f}" for v in row))
    plot_order(result, args.out, num_examples=args.show, normalise=args.normalise)
    print(f"wrote {args.out}")
    if args.json:
        save_json(args.json, result.to_json())
        print(f"wrote {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unmask", description="Learning where to unmask in masked diffusion models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("eval", help="evaluate unmasking policies side by side")
    _add_data(p)
    p.add_argument("--model", default=None,
                   help="built-in model name, checkpoint dir or hf:NAME_OR_PATH; default: the task's shipped model")
    p.add_argument("--policies", default="random,confidence,margin,entropy,left_to_right,topk_softmax,threshold:0.9",
                   help="comma-separated policy specs, e.g. confidence,threshold:0.9,topk_softmax:k=5")
    p.add_argument("--batch-size", type=int, default=256)
    _add_sampling(p)
    _add_hf(p)
    p.add_argument("--pass-at", type=int, default=None, metavar="N",
                   help="also report pass@1..N of the stochastic policies (UPO App. D)")
    p.add_argument("--alpha", type=float, default=None,
                   help="speed weight alpha fed to alpha-conditioned learned policies (unless their spec sets :alpha=)")
    p.add_argument("--json", default=None, help="write results JSON here")
    p.add_argument("--plot", default=None, help="write a solved-rate vs NFE plot (PNG) here")
    p.set_defaults(func=cmd_eval)

    from unmask.frontier import POLICY_TEMPERATURES, THRESHOLDS, TOKENS_PER_STEP

    p = sub.add_parser("frontier", help="sweep each method's speed knob: solved rate vs mean NFE (PNG + JSON)",
                       description="Curves: confidence over k tokens per step, threshold over its value, and each "
                                   "--policies entry (learned parallel policies over alpha or tau_pi).")
    _add_data(p)
    p.add_argument("--model", default=None,
                   help="built-in model name, checkpoint dir or hf:NAME_OR_PATH; default: the task's shipped model")
    p.add_argument("--policies", default="", help="policies to add, e.g. bernoulli,runs/bern/best (swept) or upo (a point)")
    p.add_argument("--thresholds", type=_numbers(float), default=list(THRESHOLDS), help="Fast-dLLM thresholds to sweep")
    p.add_argument("--ks", type=_numbers(int), default=list(TOKENS_PER_STEP), help="tokens per step for confidence")
    p.add_argument("--alphas", type=_numbers(float), default=None,
                   help="alphas for alpha-conditioned policies; default 5 across the trained range")
    p.add_argument("--policy-temperatures", type=_numbers(float), default=list(POLICY_TEMPERATURES),
                   help="tau_pi values for the other parallel policies")
    p.add_argument("--batch-size", type=int, default=256)
    _add_sampling(p, steps=False)
    _add_hf(p)
    p.add_argument("--json", default=None, help="write curves and summary JSON here")
    p.add_argument("--plot", default=None, help="write the frontier plot (PNG) here")
    p.set_defaults(func=cmd_frontier)

    from unmask.train_mdm import MDMTrainConfig

    p = sub.add_parser("train-mdm", help="train a built-in MDM with the masked-diffusion objective")
    _add_config_flags(p, MDMTrainConfig)
    p.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a task option, repeatable (e.g. arithmetic op=mul); pass the same ones to eval")
    p.add_argument("--resume", action="store_true", help="continue the run in --output-dir exactly where it stopped")
    p.set_defaults(func=cmd_train_mdm)

    from unmask.rl.grpo import GRPOConfig

    p = sub.add_parser("train-policy", help="train a learned unmasking policy with GRPO (UPO, Bernoulli, Plackett-Luce)",
                       description="Flags mirror unmask.rl.grpo.GRPOConfig; optional ones (--reference, --beta, "
                                   "--reward-form, --stop-logit, ...) accept 'none'.")
    _add_config_flags(p, GRPOConfig)
    _add_hf(p)
    p.add_argument("--reward", default=None, help="task reward variant, e.g. 'upo' for math tasks (UPO App. E.2)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output-dir exactly where it stopped")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="wall-time budget: stop at the first step past it, with a resumable checkpoint")
    p.set_defaults(func=cmd_train_policy)

    p = sub.add_parser("demo", help="train UPO on 4x4 sudoku from random order and compare it with the heuristics "
                                    "on 4x4 and 9x9 (CPU, minutes)")
    p.add_argument("--output-dir", default="outputs/demo")
    p.add_argument("--num", type=int, default=200, help="fresh puzzles in each comparison")
    p.add_argument("--difficulty", "--clues", type=int, default=28, help="clues of the 9x9 puzzles")
    p.add_argument("--train-steps", type=int, default=60, help="GRPO steps of the 4x4 UPO run (0: no training)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("show-order", help="heatmap (PNG) of the step at which a policy reveals each generated position",
                       description="Decodes --num examples with one policy and draws the reveal step of each position "
                                   "for --show of them, beside the mean over all (JSON with --json).")
    _add_data(p)
    p.set_defaults(num=100)
    p.add_argument("--model", default=None,
                   help="built-in model name, checkpoint dir or hf:NAME_OR_PATH; default: the task's shipped model")
    p.add_argument("--policy", default="confidence", help="one policy spec, as in eval --policies (e.g. threshold:0.9, upo, PATH)")
    p.add_argument("--show", type=int, default=8, help="examples drawn one by one")
    p.add_argument("--normalise", action="store_true", help="colour by step / last step of the row instead of the step")
    p.add_argument("--batch-size", type=int, default=256)
    _add_sampling(p)
    _add_hf(p)
    p.add_argument("--out", default="order.png", help="write the heatmap (PNG) here")
    p.add_argument("--json", default=None, help="write every example's reveal steps and tokens (JSON) here")
    p.set_defaults(func=cmd_show_order)
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
