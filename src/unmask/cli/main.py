"""The ``unmask`` command line: a thin layer over the Python API.

Flags are generated from the typed configs (:mod:`unmask.core.config`): every flag has its help text and valid values,
and a bad value is the same one-line error as from Python. ``train-policy`` and ``train-mdm`` also read a YAML
recipe (``--config FILE.yaml``; flags override its values, and the run stores what was used).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
from pathlib import Path

from unmask import __version__
from unmask.core.checkpoint import atomic_write, save_json
from unmask.core.config import Config, add_config_arguments, check_recipe, flat_fields, load_recipe
from unmask.core.distributed import RankFailure, current
from unmask.core.tracking import quiet
from unmask.evaluation.run_config import EvalConfig, FrontierConfig, OrderConfig
from unmask.policies import parse_value


class UsageError(ValueError):
    """A command line argparse rejects (printed as one line, like every expected error)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line (a :class:`UsageError`) instead of usage text and an exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        inner = re.fullmatch(r"argument [^:]+: (\w+ \(--[\w-]+\) .*)", message)
        raise UsageError(inner.group(1) if inner else f"{message} (see {self.prog} --help)")


HF_COMMON = ("--gen-length", "--task-option", "--trust-remote-code", "--device")


def _add_hf(p: argparse.ArgumentParser, show_all: bool = False) -> None:
    """The Hugging Face model and text-task flags (:func:`hf_options`); ``--help`` shows the common ones
    (:data:`HF_COMMON`), ``--help-all`` every one."""
    g = _Group(p.add_argument_group("Hugging Face dLLMs (--model hf:NAME_OR_PATH) and text tasks"), HF_COMMON, show_all)
    g.add_argument(
        "--gen-length",
        "--max-new-tokens",
        dest="gen_length",
        type=int,
        default=None,
        help="tokens to generate after the prompt (LLaDA gen_length, Dream max_new_tokens); default 256",
    )
    g.add_argument("--no-chat", action="store_true", help="do not wrap prompts in the tokenizer's chat template")
    g.add_argument(
        "--task-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a task option, repeatable (e.g. zebra houses=4; arithmetic op=mul); see `get_task`",
    )
    g.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow running a model repository's own code (models without a native backend; with --remote-code)",
    )
    g.add_argument(
        "--remote-code",
        action="store_true",
        help="LLaDA / Dream: run the repository's modeling code instead of unmask's native backend "
        "(needs --trust-remote-code; checked against the native backend after loading)",
    )
    g.add_argument(
        "--device-map", default=None, help="accelerate device map, e.g. auto (spread over GPUs); instead of --device"
    )
    g.add_argument(
        "--load-in-4bit",
        action="store_true",
        help="native backends (LLaDA / Dream / LLaDA2 / SDAR) in bitsandbytes NF4 4-bit (CUDA; pip install 'unmask[quant]')",
    )
    g.add_argument(
        "--dtype",
        default=None,
        choices=["auto", "float32", "bfloat16", "float16"],
        help="weights dtype; default bfloat16 on GPU, float32 on CPU",
    )
    g.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, cuda:1, ... for any model (built-in or hf:); default cuda when available",
    )
    g.add_argument(
        "--hf-layer", type=int, default=None, help="hidden_states index fed to learned policies; default -1 (last)"
    )
    g.add_argument(
        "--hf-style",
        default=None,
        choices=["llada", "dream", "masked_lm"],
        help="logit alignment; default from config.model_type",
    )
    g.add_argument(
        "--hf-block-length",
        type=int,
        default=None,
        help="the block a block-causal checkpoint was trained with when its config.json does not say (SDAR -b8 ... "
        "-b64); default: config.json's, else the family's (SDAR 4)",
    )
    g.add_argument(
        "--mask-id", type=int, default=None, help="mask token id when neither tokenizer nor config names one"
    )
    g.add_argument("--tokenizer", default=None, help="tokenizer name or path; default the model's")
    g.add_argument(
        "--allow-pickle", action="store_true", help="also load pickled (.bin) weights; default safetensors only"
    )


class _Group:
    """An argument group that hides (from ``--help``, not from parsing) the flags not in ``common``."""

    def __init__(self, group, common: tuple[str, ...], show_all: bool) -> None:
        self.group, self.common, self.show_all = group, common, show_all

    def add_argument(self, flag: str, *aliases: str, **kwargs) -> None:
        if not self.show_all and flag not in self.common:
            kwargs["help"] = argparse.SUPPRESS
        self.group.add_argument(flag, *aliases, **kwargs)


def _described(cls: type) -> str:
    """A command's description: its config's docstring and where the rest of the settings are."""
    doc = " ".join((cls.__doc__ or "").split())
    return (
        f"{doc} --help shows the common flags; --help-all every setting (each one also a key of a "
        "--config FILE.yaml recipe; docs/configuration.md has them all)."
    )


def hf_options(args: argparse.Namespace) -> dict[str, dict]:
    """``model_options`` and ``task_options`` (keyword arguments of :func:`config_from_args`) from the Hugging Face
    flags the user set."""
    model = {
        "trust_remote_code": args.trust_remote_code or None,
        "dtype": args.dtype,
        "device": args.device,
        "hidden_layer": args.hf_layer,
        "style": args.hf_style,
        "mask_id": args.mask_id,
        "tokenizer": args.tokenizer,
        "allow_pickle": args.allow_pickle or None,
        "native": False if args.remote_code else None,
        "device_map": args.device_map,
        "load_in_4bit": args.load_in_4bit or None,
        "block_length": args.hf_block_length,
    }
    task = {"gen_length": args.gen_length, "chat": False if args.no_chat else None, **task_options(args.task_option)}
    return {
        "model_options": {k: v for k, v in model.items() if v is not None},
        "task_options": {k: v for k, v in task.items() if v is not None},
    }


def task_options(items: list[str]) -> dict:
    """``--task-option KEY=VALUE`` flags as a dict of parsed values."""
    options = {}
    for option in items:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise ValueError(f"--task-option takes KEY=VALUE, got {option!r}")
        options[key] = parse_value(value)
    return options


def config_from_args(cls: type, args: argparse.Namespace, **options: dict) -> Config:
    """``cls`` from the flags the user typed over the recipe file's values (``--config``, when the command takes
    one) over the defaults; ``options`` (model_options / task_options from their own flags) update the recipe's."""
    table = flat_fields(cls)
    recipe = {}
    if getattr(args, "config", None):
        recipe = load_recipe(args.config)
        check_recipe(cls, recipe, args.config)
    values = {**recipe, **{k: v for k, v in vars(args).items() if k in table and k not in options}}
    for key, given in options.items():
        if key in table:
            values[key] = {**recipe.get(key, {}), **given}
    return cls.from_flat(values)


def check_output_file(path: str | None, option: str) -> None:
    """Fail before any work when ``path`` cannot be written as a file (a directory, a missing or read-only parent)."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{option} {path} is a directory; give a file name")
    parent = target.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"{option} {path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise PermissionError(f"{option} {path}: not writable")


def check_output_dir(path: str, option: str = "--output-dir") -> None:
    """Fail before any work when ``path`` cannot be a run directory (a file, or under a read-only directory)."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{option} {path} is a file; give a directory")
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not existing.is_dir():
        raise NotADirectoryError(f"{option} {path}: {existing} is a file")
    if not os.access(existing, os.W_OK):
        raise PermissionError(f"{option} {path}: {existing} is not writable")


def cmd_eval(args: argparse.Namespace) -> int:
    from unmask.api import evaluate

    config = config_from_args(EvalConfig, args, **hf_options(args))
    check_output_file(args.json, "--json")
    check_output_file(args.plot, "--plot")
    _write_report(evaluate(config), config, args)
    return 0


def _write_report(report, config: Config, args: argparse.Namespace) -> None:
    """Print the table; write the JSON (with the resolved config beside it, a recipe ``--config`` reads back) and
    the plot where asked. Under several processes rank 0 alone prints and writes."""
    if not current().main:
        return
    print(report.table)
    if args.json:
        save_json(args.json, report.to_json())
        print(f"wrote {args.json} and {write_resolved(config, args.json)}")
    if args.plot:
        report.plot(args.plot)
        print(f"wrote {args.plot}")


def write_resolved(config: Config, results: str | Path) -> Path:
    """The resolved config as a recipe file next to ``results`` (``results.json`` -> ``results.config.yaml``):
    ``--config`` of the same command reproduces the run."""
    import yaml

    path = Path(results).with_suffix(".config.yaml")
    text = yaml.safe_dump(config.flat(), sort_keys=False)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path


def cmd_frontier(args: argparse.Namespace) -> int:
    from unmask.api import frontier

    config = config_from_args(FrontierConfig, args, **hf_options(args))
    check_output_file(args.json, "--json")
    check_output_file(args.plot, "--plot")
    _write_report(frontier(config), config, args)
    return 0


def cmd_train_mdm(args: argparse.Namespace) -> int:
    from unmask.training.mdm import MDMTrainConfig, train_mdm

    if current().world_size > 1:
        raise ValueError(
            f"train-mdm runs as one process (launched as {current().world_size}); run it without "
            "accelerate launch / torchrun"
        )
    cfg = config_from_args(MDMTrainConfig, args, task_options=task_options(args.task_option))
    args.output_dir = cfg.output_dir
    check_output_dir(cfg.output_dir)
    out = train_mdm(cfg, resume=args.resume)
    print(f"saved {out}")
    return 0


def cmd_train_policy(args: argparse.Namespace) -> int:
    from unmask.api import train_policy
    from unmask.training.grpo import GRPOConfig

    options = hf_options(args)
    if args.reward:
        options["task_options"]["reward"] = args.reward
    cfg = config_from_args(GRPOConfig, args, **options)
    args.output_dir = cfg.output_dir
    check_output_dir(cfg.output_dir)
    out = train_policy(cfg, resume=args.resume, max_minutes=args.max_minutes)
    if current().main:
        print(f"saved {out / 'best'} (best held-out solved rate) and {out / 'last'} (resumable)")
    return 0


def cmd_pretrain_coupling(args: argparse.Namespace) -> int:
    from unmask.api import pretrain_coupling
    from unmask.training.grpo import GRPOConfig

    if "output_dir" not in vars(args):  # a recipe's output_dir names the GRPO run, not this checkpoint
        raise ValueError(
            "give --output-dir DIR: where the pre-trained policy goes (then train-policy --init-policy DIR)"
        )
    cfg = config_from_args(GRPOConfig, args, **hf_options(args))
    check_output_dir(cfg.output_dir)
    out = pretrain_coupling(cfg)
    if current().main:
        print(f"saved {out}; continue with GRPO: unmask train-policy ... --init-policy {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from unmask.api import DemoConfig, demo

    config = config_from_args(DemoConfig, args)
    check_output_dir(config.output_dir)
    demo(config)
    return 0


def cmd_show_order(args: argparse.Namespace) -> int:
    from unmask.api import show_order
    from unmask.evaluation.order import plot_order

    config = config_from_args(OrderConfig, args, **hf_options(args))
    check_output_file(args.out, "--out")
    check_output_file(args.json, "--json")
    result = show_order(config)
    print(
        f"{result.context['policy']}: solved {result.solved.mean():.3f}, mean NFE {result.nfe.mean():.2f} on {len(result.nfe)} examples"
    )
    print("mean reveal step / last step per generated position (0 = first, 1 = last):")
    for row in result.mean_normalised.reshape(result.shape):
        print("  " + " ".join(f"{v:.2f}" for v in row))
    plot_order(result, args.out, num_examples=config.show, normalise=config.normalise)
    print(f"wrote {args.out}")
    if args.json:
        save_json(args.json, result.to_json())
        print(f"wrote {args.json} and {write_resolved(config, args.json)}")
    return 0


def cmd_make_tiny(args: argparse.Namespace) -> int:
    from unmask.core.extras import require

    require("transformers", "hf", "make-tiny")
    from unmask.models.tiny import FAMILIES, TinyConfig, save_tiny

    config = config_from_args(TinyConfig, args)
    families = [f.strip() for f in config.families.split(",") if f.strip()]
    unknown = sorted(set(families) - set(FAMILIES)) or ([] if families else [config.families])
    if unknown:
        raise ValueError(
            f"--families {config.families!r}: unknown {', '.join(map(repr, unknown))}; give a comma list "
            f"of {', '.join(FAMILIES)}"
        )
    for family in families:
        out = save_tiny(Path(config.output_dir) / family, family, context=config.context, seed=config.seed)
        print(f"wrote {out} (random {family}, {config.context}-token context): --model hf:{out}")
    return 0


def _add_recipe(p: argparse.ArgumentParser, resumable: bool = True) -> None:
    p.add_argument(
        "--config",
        default=None,
        metavar="FILE.yaml",
        help="recipe file: option names (as the flags, with underscores) and values; flags given here "
        "override it (recipes/ has the shipped models' and policies')",
    )
    if resumable:
        p.add_argument(
            "--resume", action="store_true", help="continue the run in --output-dir exactly where it stopped"
        )


def cmd_lm_eval(args: argparse.Namespace) -> int:
    from unmask.integrations.lm_eval import run_lm_eval

    return run_lm_eval(args.lm_eval_args)


def cmd_sglang(args: argparse.Namespace) -> int:
    from unmask.integrations.sglang import shim

    if args.action == "install":
        path = shim.install()
        print(
            f"wrote {path}: serve with --dllm-algorithm UnmaskPolicy --dllm-algorithm-config FILE.yaml (docs/deploy.md)"
        )
    else:
        path = shim.uninstall()
        print(f"removed {path}" if path else "unmask is not registered in this SGLang: nothing to remove")
    return 0


def build_parser(show_all: bool = False) -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="unmask", description="Learning where to unmask in masked diffusion models.")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of an unexpected error (a bug); also accepted after the command",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars (as TQDM_DISABLE=1); results and errors are still printed; also "
        "accepted after the command",
    )
    parser.add_argument("--version", action="version", version=f"unmask {__version__}")
    parser.add_argument(
        "--help-all", action="store_true", help="with a command: list every flag, not only the common ones"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("eval", help="evaluate unmasking policies side by side", description=_described(EvalConfig))
    _add_recipe(p, resumable=False)
    add_config_arguments(p, EvalConfig, show_all=show_all)
    _add_hf(p, show_all)
    p.add_argument("--json", default=None, help="write results JSON here (and the resolved config beside it)")
    p.add_argument("--plot", default=None, help="write a solved-rate vs NFE plot (PNG) here")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "frontier",
        help="sweep each method's speed knob: solved rate vs mean NFE (PNG + JSON)",
        description=_described(FrontierConfig),
    )
    _add_recipe(p, resumable=False)
    add_config_arguments(p, FrontierConfig, skip=("steps",), show_all=show_all)
    _add_hf(p, show_all)
    p.add_argument(
        "--json", default=None, help="write curves and summary JSON here (and the resolved config beside it)"
    )
    p.add_argument("--plot", default=None, help="write the frontier plot (PNG) here")
    p.set_defaults(func=cmd_frontier)

    from unmask.models.tiny import TinyConfig
    from unmask.training.mdm import MDMTrainConfig

    p = sub.add_parser(
        "train-mdm",
        help="train a built-in MDM with the masked-diffusion objective",
        description="Flags mirror unmask.training.mdm.MDMTrainConfig.",
    )
    _add_recipe(p)
    add_config_arguments(p, MDMTrainConfig, show_all=show_all)
    p.add_argument(
        "--task-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a task option, repeatable (e.g. arithmetic op=mul); pass the same ones to eval",
    )
    p.set_defaults(func=cmd_train_mdm)

    from unmask.training.grpo import GRPOConfig

    p = sub.add_parser(
        "train-policy",
        help="train a learned unmasking policy with GRPO (UPO, Bernoulli, Plackett-Luce)",
        description="Flags mirror unmask.training.grpo.GRPOConfig (trainer), its run (task, model, data, "
        "sampling) and its policy (the settings of the --policy kind); optional ones "
        "accept 'none'. --steps is the diffusion steps of the rollouts, --max-steps the "
        "GRPO steps.",
    )
    _add_recipe(p)
    add_config_arguments(p, GRPOConfig, show_all=show_all)
    _add_hf(p, show_all)
    p.add_argument("--reward", default=None, help="task reward variant, e.g. 'upo' for math tasks (UPO App. E.2)")
    p.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="wall-time budget: stop at the first step past it, with a resumable checkpoint",
    )
    p.set_defaults(func=cmd_train_policy)

    p = sub.add_parser(
        "pretrain-coupling",
        help="pre-train a policy's coupling (the step before GRPO) into a policy "
        "checkpoint for train-policy --init-policy",
        description="The coupling pre-training step of train-policy on its own (unmask.training.pretrain): "
        "the same flags and recipe files as train-policy; --output-dir is the checkpoint "
        "written. train-policy --init-policy DIR then starts GRPO from it.",
    )
    _add_recipe(p, resumable=False)
    add_config_arguments(p, GRPOConfig, show_all=show_all)
    _add_hf(p, show_all)
    p.set_defaults(func=cmd_pretrain_coupling)

    from unmask.api import DemoConfig

    p = sub.add_parser(
        "demo",
        help="train UPO on 4x4 sudoku from random order and compare it with the heuristics "
        "on 4x4 and 9x9 (CPU, minutes)",
        description=_described(DemoConfig),
    )
    _add_recipe(p, resumable=False)
    add_config_arguments(p, DemoConfig)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "show-order",
        help="heatmap (PNG) of the step at which a policy reveals each generated position",
        description=_described(OrderConfig) + " Draws the reveal step of each position for --show "
        "examples, beside the mean over all (JSON with --json).",
    )
    _add_recipe(p, resumable=False)
    add_config_arguments(p, OrderConfig, show_all=show_all)
    _add_hf(p, show_all)
    p.add_argument("--out", default="order.png", help="write the heatmap (PNG) here")
    p.add_argument("--json", default=None, help="write every example's reveal steps and tokens (JSON) here")
    p.set_defaults(func=cmd_show_order)

    p = sub.add_parser(
        "make-tiny",
        help="write tiny random LLaDA / Dream checkpoints (real layout) to try hf: models on a CPU",
        description="Writes OUTPUT_DIR/llada and OUTPUT_DIR/dream: config.json, model.safetensors "
        "(upstream parameter names) and a word-level tokenizer; load them with --model "
        "hf:OUTPUT_DIR/llada. Random weights: the answers are noise (needs pip install "
        "'unmask[hf]').",
    )
    _add_recipe(p, resumable=False)
    add_config_arguments(p, TinyConfig)
    p.set_defaults(func=cmd_make_tiny)

    p = sub.add_parser(
        "lm-eval",
        help="lm-evaluation-harness with the unmask model registered (lm_eval --model unmask)",
        description="Runs lm-eval's own command line, e.g. unmask lm-eval run --model unmask --model_args "
        "model=hf:NAME,policy=threshold:0.9 --tasks gsm8k (needs pip install 'unmask[lm-eval]').",
    )
    p.add_argument("lm_eval_args", nargs=argparse.REMAINDER, help="lm_eval arguments")
    p.set_defaults(func=cmd_lm_eval)

    p = sub.add_parser(
        "sglang",
        help="register unmask's policies as an SGLang dLLM algorithm (--dllm-algorithm UnmaskPolicy)",
        description="install writes a one-line module into the installed SGLang's dLLM algorithm package "
        "(sglang/srt/dllm/algorithm/unmask_policy.py), after checking the interface unmask relies on; "
        "uninstall removes it. Run it with the Python that runs SGLang; see docs/deploy.md.",
    )
    p.add_argument("action", choices=("install", "uninstall"), help="install or uninstall the registration module")
    p.set_defaults(func=cmd_sglang)
    return parser


EXPECTED = (ValueError, OSError, RankFailure)  # bad input, missing or unwritable files, a failed peer process: one line


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--version"]:
        print(f"unmask {__version__}")
        return 0
    debug, silent, show_all = "--debug" in argv, "--quiet" in argv, "--help-all" in argv
    argv = [("--help" if a == "--help-all" else a) for a in argv if a not in ("--debug", "--quiet")]
    if argv[:1] == ["lm-eval"]:  # lm-eval's own flags pass through unparsed
        argv.insert(1, "--")
    try:
        args = build_parser(show_all).parse_args(argv)
    except UsageError as e:
        command = next((a for a in argv if not a.startswith("-")), "")
        print(f"unmask{' ' + command if command else ''}: error: {e}", file=sys.stderr)
        return 2
    try:
        with quiet(silent):
            return args.func(args)
    except EXPECTED as e:
        print(f"unmask {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if getattr(args, "output_dir", None) and args.command in ("train-policy", "train-mdm"):
            from unmask.core.checkpoint import interrupted_message

            print(f"unmask {args.command}: {interrupted_message(argv, args.output_dir)}", file=sys.stderr)
        else:
            print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # anything else is a bug in unmask
        print(
            f"unmask {args.command}: internal error (a bug in unmask; please report it): {type(e).__name__}: "
            f"{_one_line(e)}" + ("" if debug else " (rerun with --debug for the traceback)"),
            file=sys.stderr,
        )
        if debug:
            traceback.print_exc()
        return 1


def _one_line(error: BaseException) -> str:
    """An error's message on one line (an OSError from the system: its reason and the file)."""
    text = f"{error.strerror}: {error.filename}" if isinstance(error, OSError) and error.filename else str(error)
    return " ".join(text.split())
