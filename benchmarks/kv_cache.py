"""Block key/value caches (``--cache none|prefix|dual``, issue 20): speed, accuracy and memory on CPU.

Speed, side by side in one run (one torch thread; each setting's modes decoded ``--repeats`` times, interleaved, so
machine load hits them alike; a row's time is the median): wall time and generated tokens per second of ``none`` /
``prefix`` / ``dual`` at block 32 on

- ``llada-mid``: a random native LLaDA (width 512, 8 layers, 8 heads, MLP 1408, vocab 8192; weights as the
  tests' reference models, std 0.3, output head scaled by ``--head-scale`` so that confidences spread as a
  trained model's), prompt 64 + gen_length 256, batch 1, loaded through ``load_model("hf:DIR")``;
- ``sudoku9-base``: the largest built-in MDM (4 layers, width 128), 81 cells decoded in blocks of 27 (one
  block per three grid rows; full-grid blocks of 32 do not exist), a batch of 64 puzzles;

with ``confidence`` (LLaDA count schedule: 64 steps on llada-mid, 4 tokens each; 27 on sudoku), ``threshold:0.9`` (Fast-dLLM) and the shipped
learned parallel policy ``bernoulli-arithmetic-carry`` (it reads confidences only, so it runs on any MDM).
Parity: on ``llada-mid`` unmask runs Fast-dLLM's exact setting (``confidence_float64``, ``refine_complete_block``,
``suppress_mask_token`` off) and the ``confidence`` and ``threshold`` runs are also decoded by Fast-dLLM's own
``generate_with_prefix_cache`` / ``generate_with_dual_cache`` on the reference modeling code holding the same
weights; ``fast_dllm_tokens_equal`` / ``fast_dllm_nfe`` record the comparison (needs ../shared/reference).

Accuracy, with and without each cache, of every heuristic and the shipped learned policies on built-in text
tasks decoded in blocks: ``arithmetic-carry`` (one layer: the cache is exact for what the window computes)
and ``zebra`` (three layers).

Memory: what each cache mode holds at its peak (kept keys/values of every layer plus the first-step
probabilities, tokens and confidences / features of the generation region: the ``nbytes()`` of the cache strategy each
decode is given, ``generate(..., cache=...)``), on top of the forward's activations, which every
mode has at a block's first (full) step.

Profile (``--profile``): each mode's decode split into the model's forwards, the cache strategy's bookkeeping, the
token rule's ``prepare`` and the rest of the engine loop (llada-mid, the first ``--policies`` entry).

Commands (from the repository root; the second adds llada-mid with a 256-token prompt, where the prefix cache
keeps more; the next two measure the dual cache's accuracy on 1000 zebra puzzles, paired with ``none`` (the same
with ``--accuracy-modes none prefix`` for the prefix cache); the last one is the time split):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/kv_cache.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/kv_cache.py --llada-only --prompt-length 256 --policies confidence --append
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/kv_cache.py --accuracy-only --accuracy-tasks zebra --accuracy-examples 1000 \
        --accuracy-policies confidence left_to_right eb:0.1 --accuracy-modes none dual --append
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/kv_cache.py --accuracy-only --accuracy-tasks zebra --accuracy-examples 1000 \
        --accuracy-policies threshold:0.9 margin --accuracy-modes none dual --append
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/kv_cache.py --profile --policies confidence --append

Parts re-run alone: ``--llada-only`` (llada-mid's speed), ``--skip-llada --speed-only`` (sudoku9-base's speed),
``--accuracy-only``, ``--profile`` (its ``--policies`` entry, e.g. ``threshold:0.9``).

With ``--cache-refresh SHARE`` the prefix / dual runs refresh the kept keys/values after a step that reveals that share
of the block (``SamplingConfig.cache_refresh``); every row of such a run records ``cache_refresh`` (its ``none`` row
is the run's own baseline), so these rows sit beside the Fast-dLLM-rule ones (no Fast-dLLM comparison then):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/kv_cache.py --accuracy-only --accuracy-tasks zebra --accuracy-examples 1000 \
        --accuracy-policies eb:0.1 factor:1 threshold:0.9 confidence --accuracy-modes none prefix dual --cache-refresh 0.5 --append
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/kv_cache.py --llada-only --policies confidence threshold:0.9 --cache-refresh 0.5 --append

``--append`` adds the run's rows and provenance to the results file, replacing earlier rows of the same setting.

Writes ``benchmarks/results/kv_cache.json`` and ``benchmarks/results/kv_cache.png``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from common import command_line, run_info
from conformance_cases import fast_dllm_reference
from test_kv_cache import Guard

from unmask.api import SHIPPED_POLICIES, resolve_policy
from unmask.engine.cache import CACHES, CacheStrategy
from unmask.engine.config import SamplingConfig
from unmask.engine.loop import generate
from unmask.engine.tokens import GumbelMaxTokens
from unmask.evaluation.evaluate import run_policy
from unmask.models import load_model
from unmask.tasks import get_task

OUT = HERE / "results" / "kv_cache.json"
MODES = ("none", "prefix", "dual")
SPEED_POLICIES = ("confidence", "threshold:0.9", "bernoulli-arithmetic-carry")
HEURISTICS = (
    "random",
    "confidence",
    "margin",
    "entropy",
    "left_to_right",
    "topk_softmax",
    "threshold:0.9",
    "factor:1",
    "eb:0.1",
)
ACCURACY = {  # task -> (model, task options, block length, learned policies shipped for the model)
    "arithmetic": ("arithmetic-carry", {"max_digits": 16, "propagate": 0.8}, 6, ("upo", "bernoulli")),
    "zebra": ("zebra", {}, 26, ("upo",)),
}
LLADA_MID = {
    "d_model": 512,
    "n_heads": 8,
    "n_kv_heads": 8,
    "n_layers": 8,
    "mlp_hidden_size": 1408,
    "vocab_size": 8192,
    "embedding_size": 8192,
    "max_sequence_length": 512,
}


def llada_mid(head_scale: float):
    """(reference LLaDA, native MDM on the same weights) for the mid-size config."""
    import tiny_hf
    from reference_models import reference_llada, save_official, tiny_llada_config

    raw = tiny_llada_config(**LLADA_MID)
    ref = reference_llada(raw)
    with torch.no_grad():
        ref.model.transformer.ff_out.weight.mul_(head_scale)
    tok = tiny_hf.tokenizer(mask=False, chat=True, extra_words=raw["vocab_size"] - len(tiny_hf.WORDS))
    path = save_official(ref, raw, Path(tempfile.mkdtemp()) / "llada-mid", tokenizer=tok)
    return ref, load_model(f"hf:{path}", device="cpu")


def decode(model, x, gen_start, spec, sampling, cache: CacheStrategy | None = None):
    """(output, seconds, bytes the cache held): ``cache`` (or a new strategy of ``sampling.cache``) is given to
    ``generate``; what it keeps only grows during a call, so its ``nbytes()`` after the call is its peak."""
    shipped = SHIPPED_POLICIES / spec
    policy = resolve_policy(str(shipped) if shipped.is_dir() else spec, model)
    cache = cache or CACHES[sampling.cache]()
    start = time.perf_counter()
    out = generate(
        model, x, policy, sampling, gen_start=gen_start, generator=torch.Generator().manual_seed(0), cache=cache
    )
    return out, time.perf_counter() - start, cache.nbytes()


def speed_rows(
    name, model, x, gen_start, block_length, steps, policies, reference=None, loops=None, refresh=None, repeats=3
):
    """``refresh``: the cached modes' ``cache_refresh``; every row of the run records it (``none`` is its baseline).
    Each mode is decoded ``repeats`` times, the modes interleaved (none, prefix, dual, none, ...), so that a change
    of the machine's speed during the run reaches every mode alike; a row's time is the median of its decodes."""
    rows = []
    gen = (x.shape[1] - gen_start) * x.shape[0]
    exact = reference is not None  # Fast-dLLM's bit-exact setting (docs/cache.md, "Parity")
    for spec in policies:
        runs, timed = {}, {}
        configs = {
            mode: SamplingConfig(
                steps=steps if spec == "confidence" else None,
                block_length=block_length,
                cache=mode,
                suppress_mask_token=not exact,
                confidence_float64=exact,
                refine_complete_block=exact,
                cache_refresh=None if mode == "none" else refresh,
            )
            for mode in MODES
        }
        for _ in range(repeats):
            for mode in MODES:
                out, seconds, cache_bytes = decode(model, x, gen_start, spec, configs[mode])
                if mode in runs and not torch.equal(out.sequences, runs[mode][0].sequences):
                    raise RuntimeError(f"{spec} {mode}: a repeated decode gave other tokens")
                runs.setdefault(mode, (out, cache_bytes))
                timed.setdefault(mode, []).append(seconds)
        for mode in MODES:
            (out, cache_bytes), seconds = runs[mode], statistics.median(timed[mode])
            row = {
                "model": name,
                "prompt_length": gen_start,
                "policy": spec,
                "cache": mode,
                "cache_refresh": refresh,
                "seconds": seconds,
                "seconds_each": timed[mode],
                "tokens_per_s": gen / seconds,
                "nfe": out.nfe.float().mean().item(),
                "positions": out.positions_run.float().mean().item(),
                "cache_mib": cache_bytes / 2**20,
                "tokens_equal_none": bool(torch.equal(out.sequences, runs["none"][0].sequences)),
            }
            if reference is not None and mode != "none" and spec in ("confidence", "threshold:0.9") and refresh is None:
                loop = loops.generate_with_prefix_cache if mode == "prefix" else loops.generate_with_dual_cache
                threshold = None if spec == "confidence" else 0.9
                want, want_nfe = loop(
                    Guard(reference, 4 * x.shape[1]),
                    x[:, :gen_start],
                    steps=steps if threshold is None else x.shape[1] - gen_start,
                    gen_length=x.shape[1] - gen_start,
                    block_length=block_length,
                    temperature=0.0,
                    mask_id=model.mask_id,
                    threshold=threshold,
                )
                row.update(fast_dllm_tokens_equal=bool(torch.equal(want, out.sequences)), fast_dllm_nfe=int(want_nfe))
            row["speedup"] = statistics.median(timed["none"]) / seconds
            rows.append(row)
            print(
                f"{name:<13} {spec:<27} {mode:<7} {seconds:>8.2f}s {row['tokens_per_s']:>9.1f} tok/s "
                f"NFE {row['nfe']:>6.1f} positions {row['positions']:>8.0f} cache {row['cache_mib']:>7.2f} MiB "
                f"{'' if 'fast_dllm_tokens_equal' not in row else 'fast-dllm tokens ' + str(row['fast_dllm_tokens_equal'])}",
                flush=True,
            )
    return rows


class Timers:
    """Seconds spent inside a few methods of classes or objects (wrapped while the context is open): where a
    decode's time goes."""

    def __init__(self, methods: dict[str, tuple[object, str]]) -> None:
        self.methods, self.seconds = methods, dict.fromkeys(methods, 0.0)

    def __enter__(self) -> Timers:
        self.saved = {key: getattr(cls, name) for key, (cls, name) in self.methods.items()}
        for key, (cls, name) in self.methods.items():
            setattr(cls, name, self._timed(key, self.saved[key]))
        return self

    def _timed(self, key, method):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds[key] += time.perf_counter() - start

        return timed

    def __exit__(self, *exc) -> None:
        for key, (cls, name) in self.methods.items():
            setattr(cls, name, self.saved[key])


def profile_rows(name, model, x, gen_start, block_length, steps, spec) -> list[dict]:
    """Each mode's decode split into the model's forwards, the cache strategy's bookkeeping around them (its
    ``forward`` less the model's, and ``assemble``), the token rule's ``prepare`` (on each forward's fresh
    positions) and the rest of the engine loop (Fast-dLLM's exact setting, as the speed rows; one warm-up decode
    first)."""
    rows = []
    for mode in MODES:
        sampling = SamplingConfig(
            steps=steps if spec == "confidence" else None,
            block_length=block_length,
            cache=mode,
            suppress_mask_token=False,
            confidence_float64=True,
            refine_complete_block=True,
        )
        decode(model, x, gen_start, spec, sampling)
        cache = CACHES[mode]()
        with Timers(
            {
                "model": (type(model), "forward"),
                "cache": (cache, "forward"),
                "assemble": (cache, "assemble"),
                "prepare": (GumbelMaxTokens, "prepare"),
            }
        ) as timers:
            out, seconds, _ = decode(model, x, gen_start, spec, sampling, cache)
        t = timers.seconds
        row = {
            "model": name,
            "prompt_length": gen_start,
            "policy": spec,
            "cache": mode,
            "seconds": seconds,
            "model_s": t["model"],
            "cache_bookkeeping_s": t["cache"] + t["assemble"] - t["model"],
            "sampler_prepare_s": t["prepare"],
            "rest_s": seconds - t["cache"] - t["assemble"] - t["prepare"],
            "nfe": out.nfe.float().mean().item(),
            "positions": out.positions_run.float().mean().item(),
        }
        rows.append(row)
        print(
            f"{name:<13} {spec:<27} {mode:<7} {seconds:>7.2f}s = model {row['model_s']:6.2f} + cache bookkeeping "
            f"{row['cache_bookkeeping_s']:5.2f} + sampler prepare {row['sampler_prepare_s']:5.2f} + rest {row['rest_s']:5.2f}",
            flush=True,
        )
    return rows


def accuracy_rows(n: int, tasks=tuple(ACCURACY), policies=None, modes=MODES, refresh=None) -> list[dict]:
    """Accuracy of each policy under each mode on the same examples; cached modes also carry the paired
    comparison with ``none`` (per-example solved difference: mean, its standard error, discordant counts).
    ``refresh``: the cached modes' ``cache_refresh``; every row of the run records it (``none`` is its baseline)."""
    rows = []
    for task_name in tasks:
        model_name, options, block_length, learned = ACCURACY[task_name]
        model = load_model(model_name, device="cpu")
        task = get_task(task_name, **options)
        examples = task.generate(n, seed=1)
        for spec in policies or (*HEURISTICS, *learned):
            policy = resolve_policy(spec, model)
            solved = {}
            for mode in modes:
                sampling = SamplingConfig(
                    block_length=block_length, cache=mode, cache_refresh=None if mode == "none" else refresh
                )
                result, per = run_policy(task, model, examples, policy, sampling)
                solved[mode] = per["solved"].astype(float)
                row = {
                    "task": task_name,
                    "model": model_name,
                    "block_length": block_length,
                    "policy": policy.name,
                    "cache": mode,
                    "cache_refresh": refresh,
                    "solved_rate": result.solved_rate,
                    "cell_accuracy": result.cell_accuracy,
                    "nfe": result.nfe,
                    "positions": result.positions,
                    "seconds": result.seconds,
                    "n": result.n,
                }
                if mode != "none" and "none" in solved:
                    delta = solved[mode] - solved["none"]
                    row.update(
                        solved_delta=float(delta.mean()),
                        solved_delta_se=float(delta.std(ddof=1) / len(delta) ** 0.5),
                        solved_only_none=int((delta < 0).sum()),
                        solved_only_cache=int((delta > 0).sum()),
                    )
                rows.append(row)
                paired = (
                    (
                        f" paired {row['solved_delta']:+.4f} +- {row['solved_delta_se']:.4f} "
                        f"({row['solved_only_none']} lost, {row['solved_only_cache']} gained)"
                    )
                    if "solved_delta" in row
                    else ""
                )
                print(
                    f"{model_name:<17} {policy.name:<34} {mode:<7} refresh {refresh} solved {result.solved_rate:.3f} "
                    f"cells {result.cell_accuracy:.4f} NFE {result.nfe:6.2f} positions {result.positions:7.1f}{paired}",
                    flush=True,
                )
    return rows


def plot(speed: list[dict], path: Path) -> None:
    """One panel per model and prompt length: wall-time speed-up of each mode over ``none``, per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((r["model"], r.get("prompt_length", 0)) for r in speed))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), squeeze=False)
    for ax, (name, prompt) in zip(axes[0], panels):
        rows = [
            r
            for r in speed
            if r["model"] == name and r.get("prompt_length", 0) == prompt and r.get("cache_refresh") is None
        ]
        policies = list(dict.fromkeys(r["policy"] for r in rows))
        width = 0.27
        for i, mode in enumerate(MODES):
            vals = [next(r["speedup"] for r in rows if r["policy"] == p and r["cache"] == mode) for p in policies]
            bars = ax.bar([j + (i - 1) * width for j in range(len(policies))], vals, width, label=mode)
            ax.bar_label(bars, fmt="%.1fx", fontsize=7)
        ax.set_xticks(range(len(policies)), [p.split("-")[0] for p in policies])
        ax.set_ylabel("speed-up over --cache none (wall time)")
        ax.set_title(f"{name}, prompt {prompt}" if prompt else name)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--head-scale", type=float, default=3.0, help="llada-mid: output head scale (confidence spread)"
    )
    parser.add_argument("--sudoku-batch", type=int, default=64, help="sudoku9-base: puzzles per batch")
    parser.add_argument("--accuracy-examples", type=int, default=256, help="examples per accuracy point")
    parser.add_argument("--skip-llada", action="store_true", help="leave out llada-mid (no ../shared/reference)")
    parser.add_argument(
        "--prompt-length", type=int, default=64, help="llada-mid: prompt tokens before the 256 generated"
    )
    parser.add_argument("--policies", nargs="+", default=list(SPEED_POLICIES), help="policies of the speed runs")
    parser.add_argument("--llada-only", action="store_true", help="only the llada-mid speed runs")
    parser.add_argument("--accuracy-only", action="store_true", help="only the accuracy runs")
    parser.add_argument(
        "--speed-only", action="store_true", help="only the speed runs (with --skip-llada: sudoku9-base's)"
    )
    parser.add_argument(
        "--accuracy-tasks", nargs="+", default=list(ACCURACY), choices=list(ACCURACY), help="tasks of the accuracy runs"
    )
    parser.add_argument(
        "--accuracy-policies",
        nargs="+",
        default=None,
        help="policies of the accuracy runs (default: every heuristic and the task's shipped learned policies)",
    )
    parser.add_argument(
        "--accuracy-modes",
        nargs="+",
        default=list(MODES),
        choices=MODES,
        help="cache modes of the accuracy runs (none first, for the paired comparison)",
    )
    parser.add_argument(
        "--cache-refresh",
        type=float,
        default=None,
        help="cache_refresh of the prefix / dual runs "
        "(speed and accuracy; recorded in every row of the run, none's included); default: none",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="speed runs: decodes per mode (interleaved; the median is reported)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="only the llada-mid time split (model / cache / sampler / "
        "rest) of each mode, for the first --policies entry",
    )
    parser.add_argument(
        "--append", action="store_true", help="add the rows (and this run's provenance) to the results file"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    speed, accuracy, profile = [], [], []
    if args.profile:
        _, mdm = llada_mid(args.head_scale)
        P = args.prompt_length
        x = torch.randint(6, LLADA_MID["vocab_size"], (1, P + 256), generator=torch.Generator().manual_seed(0))
        x[:, P:] = mdm.mask_id
        profile = profile_rows("llada-mid", mdm, x, P, 32, 64, args.policies[0])
    elif not (args.skip_llada or args.accuracy_only):
        ref, mdm = llada_mid(args.head_scale)
        P = args.prompt_length
        x = torch.randint(6, LLADA_MID["vocab_size"], (1, P + 256), generator=torch.Generator().manual_seed(0))
        x[:, P:] = mdm.mask_id
        speed += speed_rows(
            "llada-mid",
            mdm,
            x,
            P,
            32,
            64,
            args.policies,
            reference=ref,
            loops=fast_dllm_reference(),
            refresh=args.cache_refresh,
            repeats=args.repeats,
        )
    if not (args.llada_only or args.accuracy_only or args.profile):
        sudoku = load_model("sudoku9-base", device="cpu")
        task = get_task("sudoku9")
        enc = task.encode(task.generate(args.sudoku_batch, seed=0), sudoku)
        speed += speed_rows(
            "sudoku9-base",
            sudoku,
            enc.input_ids,
            0,
            27,
            27,
            args.policies,
            refresh=args.cache_refresh,
            repeats=args.repeats,
        )
    if not (args.llada_only or args.profile or args.speed_only):
        accuracy = accuracy_rows(
            args.accuracy_examples, args.accuracy_tasks, args.accuracy_policies, args.accuracy_modes, args.cache_refresh
        )
    previous = json.loads(OUT.read_text()) if args.append and OUT.is_file() else {}
    for part, rows, key in (
        ("speed", speed, ("model", "prompt_length", "policy", "cache", "cache_refresh")),
        ("accuracy", accuracy, ("task", "policy", "cache", "n", "cache_refresh")),
        ("profile", profile, ("model", "prompt_length", "policy", "cache")),
    ):  # --append replaces a setting's rows
        new = {tuple(r.get(k) for k in key) for r in rows}
        previous[part] = [r for r in previous.get(part, []) if tuple(r.get(k) for k in key) not in new]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "provenance": previous.get("provenance", []) + [run_info(command_line("benchmarks/kv_cache.py", args))],
                "speed": previous.get("speed", []) + speed,
                "accuracy": previous.get("accuracy", []) + accuracy,
                "profile": previous.get("profile", []) + profile,
            },
            indent=2,
        )
        + "\n"
    )
    plot(json.loads(OUT.read_text())["speed"], OUT.with_suffix(".png"))
    print(f"wrote {OUT} and {OUT.with_suffix('.png')}")


if __name__ == "__main__":
    main()
