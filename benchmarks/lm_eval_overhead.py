"""lm-evaluation-harness with ``--model unmask`` against ``unmask eval``: same accuracy, and the harness's cost.

One random-init ``BertForMaskedLM`` (4 layers, width 128, the word-level tokenizer of tests/tiny_hf.py) loaded
through ``load_model("hf:DIR")``, one GSM8K-style JSONL of ``--num`` questions, the task YAML of
tests/data/lm_eval/tiny_math.yaml (unmask's gsm8k prompt without chat template and unmask's verifier), the
same batch size, policy and sampling settings on both sides. Per policy and repeat (alternating which side runs
first), on one torch thread:

- ``unmask eval``: ``evaluate(...)``; its time is ``EvalResult.seconds`` (encode, decode, verify).
- lm-eval: ``lm_eval.simple_evaluate(model="unmask", ...)``; timed are its ``evaluate()`` phase (requests,
  ``generate_until``, ``process_results`` with the same verifier, aggregation: the counterpart of the unmask
  loop), ``generate_until`` alone, and the whole call (also model loading, task building and lm-eval's
  environment report, fixed costs per run).

    overhead = harness evaluate() time / unmask eval time - 1   (best of --repeats on each side; the machine is
               shared, so the fastest run is the one least disturbed; the median of per-repeat ratios is kept too)

Accuracy must agree exactly (same tokens: same layout, engine and per-example random streams).

Command (from the repository root):

    .venv/bin/python benchmarks/lm_eval_overhead.py --num 32 --batch-size 16 --gen-length 32 --block-length 8 --repeats 5

Writes ``benchmarks/results/lm_eval_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import command_line, run_info

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lm_eval  # noqa: E402
import lm_eval.evaluator  # noqa: E402
import tiny_hf  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from unmask.api import evaluate  # noqa: E402
from unmask.evaluation.evaluate import run_policy  # noqa: E402
from unmask.integrations.lm_eval import UnmaskLM  # noqa: E402
from unmask.models import load_model  # noqa: E402
from unmask.policies import get_policy  # noqa: E402
from unmask.tasks import MathExample, get_task  # noqa: E402
from unmask.tasks.math_reward import extract_answer  # noqa: E402

TASK_FILES = REPO / "tests" / "data" / "lm_eval"
WIDTH, LAYERS, HEADS = 128, 4, 4


def save_model(directory: Path) -> Path:
    from transformers import BertConfig, BertForMaskedLM

    tok = tiny_hf.tokenizer()
    torch.manual_seed(0)
    BertForMaskedLM(
        BertConfig(
            vocab_size=len(tok),
            hidden_size=WIDTH,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            intermediate_size=4 * WIDTH,
            max_position_embeddings=256,
        )
    ).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def write_data(directory: Path, model: str, args: argparse.Namespace) -> Path:
    """``--num`` questions ``what is a + b ?`` / ``a - b`` over single digits, in the JSONL the task YAML reads.
    The random model cannot add, so every other gold answer is the one it states under one-token-per-step
    confidence decoding (the accuracies then lie strictly between 0 and 1 and their agreement says something)."""
    questions = []
    for i in range(args.num):
        a, b, op = (7 * i + 3) % 10, (3 * i + 1) % 10, "+-"[i % 2]
        a, b = (max(a, b), min(a, b)) if op == "-" else (a, b)
        questions.append((f"what is {a} {op} {b} ?", str(a + b if op == "+" else a - b)))
    task = get_task("gsm8k", chat=False, gen_length=args.gen_length)
    examples = [MathExample(question=q, answer=v) for q, v in questions]
    stated: list[str | None] = []
    mdm = load_model(model, device="cpu")
    run_policy(
        task,
        mdm,
        examples,
        get_policy("confidence"),
        batch_size=args.batch_size,
        on_batch=lambda chunk, enc, out: stated.extend(
            extract_answer(c) for c in task.decode(chunk, out.sequences, mdm)
        ),
    )
    lines = [
        json.dumps({"question": q, "answer": f"#### {s if i % 2 == 0 and s else v}"})
        for i, ((q, v), s) in enumerate(zip(questions, stated))
    ]
    path = directory / "tiny_math.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


class Timer:
    """Wraps ``owner.name`` and sums the seconds spent in it."""

    def __init__(self, owner, name: str) -> None:
        self.owner, self.name, self.real, self.seconds = owner, name, getattr(owner, name), 0.0

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return self.real(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        setattr(owner, name, timed)

    def restore(self) -> None:
        setattr(self.owner, self.name, self.real)


def run_unmask(model: str, data: Path, policy: str, args: argparse.Namespace) -> dict:
    report = evaluate(
        task="gsm8k",
        model=model,
        policies=policy,
        data=str(data),
        steps=args.steps,
        block_length=args.block_length,
        batch_size=args.batch_size,
        progress=False,
        model_options={"device": "cpu"},
        task_options={"gen_length": args.gen_length, "chat": False},
    )
    r = report.results[0]
    return {"solved": r.solved_rate, "seconds": r.seconds, "nfe": r.nfe, "n": r.n}


def run_harness(model: str, policy: str, args: argparse.Namespace, tasks: Path) -> dict:
    model_args = f"model={model},device=cpu,policy={policy},gen_length={args.gen_length}"
    model_args += "".join(f",{k}={v}" for k, v in (("steps", args.steps), ("block_length", args.block_length)) if v)
    phase, generation = Timer(lm_eval.evaluator, "evaluate"), Timer(UnmaskLM, "generate_until")
    start = time.perf_counter()
    try:
        out = lm_eval.simple_evaluate(
            model="unmask",
            model_args=model_args,
            tasks=["unmask_tiny_math"],
            batch_size=args.batch_size,
            task_manager=TaskManager(include_path=str(tasks), include_defaults=False),
        )
    finally:
        phase.restore()
        generation.restore()
    total = time.perf_counter() - start
    return {
        "solved": out["results"]["unmask_tiny_math"]["solved,none"],
        "evaluate_s": phase.seconds,
        "generate_until_s": generation.seconds,
        "total_s": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--gen-length", type=int, default=32)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--block-length", type=int, default=8)
    parser.add_argument("--policies", default="confidence,threshold:0.9")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/lm_eval_overhead.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = f"hf:{save_model(tmp / 'bert')}"
        for name in ("tiny_math.yaml", "utils.py"):
            shutil.copy(TASK_FILES / name, tmp / name)
        data = write_data(tmp, model, args)
        for policy in args.policies.split(","):
            ours, harness = [], []
            sides = {
                "unmask": lambda: ours.append(run_unmask(model, data, policy, args)),
                "lm-eval": lambda: harness.append(run_harness(model, policy, args, tmp)),
            }
            for repeat in range(args.repeats):
                for side in ("unmask", "lm-eval") if repeat % 2 == 0 else ("lm-eval", "unmask"):
                    sides[side]()
            unmask_s = min(r["seconds"] for r in ours)
            best = {k: min(r[k] for r in harness) for k in ("evaluate_s", "generate_until_s", "total_s")}
            n = ours[0]["n"]
            rows.append(
                {
                    "policy": policy,
                    "n": n,
                    "nfe": ours[0]["nfe"],
                    "unmask_solved": ours[0]["solved"],
                    "lm_eval_solved": harness[0]["solved"],
                    "agree": all(r["solved"] == ours[0]["solved"] for r in ours + harness),
                    "unmask_examples_per_s": n / unmask_s,
                    "lm_eval_examples_per_s": n / best["evaluate_s"],
                    "lm_eval_generate_until_examples_per_s": n / best["generate_until_s"],
                    "lm_eval_end_to_end_examples_per_s": n / best["total_s"],
                    "overhead": best["evaluate_s"] / unmask_s - 1,
                    "overhead_median_of_pairs": statistics.median(
                        h["evaluate_s"] / u["seconds"] - 1 for h, u in zip(harness, ours)
                    ),
                    "harness_bookkeeping_s": statistics.median(
                        h["evaluate_s"] - h["generate_until_s"] for h in harness
                    ),
                    "unmask_s": [r["seconds"] for r in ours],
                    "lm_eval": harness,
                }
            )
    print(
        f"{'policy':<14} {'n':>4} {'NFE':>6} {'solved (unmask / lm-eval)':>26} {'unmask ex/s':>12} {'lm-eval ex/s':>13} "
        f"{'overhead':>9} {'end-to-end ex/s':>16}"
    )
    for r in rows:
        print(
            f"{r['policy']:<14} {r['n']:>4} {r['nfe']:>6.2f} {r['unmask_solved']:>12.4f} / {r['lm_eval_solved']:<11.4f} "
            f"{r['unmask_examples_per_s']:>12.2f} {r['lm_eval_examples_per_s']:>13.2f} {100 * r['overhead']:>8.1f}% "
            f"{r['lm_eval_end_to_end_examples_per_s']:>16.2f}"
        )
    out = REPO / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "provenance": [run_info(command_line("benchmarks/lm_eval_overhead.py", args))],
        "torch_threads": 1,
        "model": f"random BertForMaskedLM {LAYERS}x{WIDTH}, tests/tiny_hf.py tokenizer",
        "lm_eval": lm_eval.__version__,
        "settings": {
            "batch_size": args.batch_size,
            "gen_length": args.gen_length,
            "steps": args.steps,
            "block_length": args.block_length,
        },
    }
    out.write_text(json.dumps({**meta, "results": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
