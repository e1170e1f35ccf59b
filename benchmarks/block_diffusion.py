"""Block diffusion (LLaDA2.x): unmask's engine vs LLaDA2's own ``generate()`` loop, side by side in one run.

The upstream loop is ``LLaDA2MoeModelLM.generate`` from LLaDA2's Hugging Face modeling code (loaded as the tests
load it, ``tests/reference_models.py``: ``../shared/reference/llada2`` or ``$UNMASK_REFERENCE/llada2``; random
weights, fp32, eval). unmask runs the same weights from a saved checkpoint through ``load_model("hf:DIR")`` (the
native LLaDA2 backend) with the block sampler and ``scheduled_threshold`` (LLaDA2's rule), with ``--cache none``
(every step runs the sequence up to the block's end, as upstream) and ``--cache block`` (the exact cache: a step
runs the current block against the kept keys/values of finished blocks). Greedy (temperature 0), no EOS stop
(upstream ``eos_id=-1``; unmask ``block_eos_stop=False``) so every block is decoded; batch 1 (upstream's loop
is batch 1).

Reported per size and setting: the forwards per generated token (NFE / tokens), whether the tokens equal
upstream's, and the median wall time over ``--repeats`` decodes of each prompt (all three loops alternating in
one process, one torch thread); ``ratio`` = unmask / upstream (below 1: faster).

Sizes: ``tiny`` (the tests' config: width 32, 3 layers, 4 experts, vocab 64) and ``mid`` (width 512, 8 layers, 8
heads / 2 KV heads of 64, 16 experts in 4 groups, top-4 from 2 groups, one shared expert, vocab 8192).

Command (from the repository root):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/block_diffusion.py --sizes tiny,mid --repeats 3

Writes ``benchmarks/results/block_diffusion.json``.
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

import tiny_hf  # noqa: E402
from common import command_line, run_info  # noqa: E402
from reference_models import MASK, count_forwards, reference_llada2, save_official, tiny_llada2_config  # noqa: E402

from unmask.engine.config import SamplingConfig  # noqa: E402
from unmask.engine.loop import generate  # noqa: E402
from unmask.models import load_model  # noqa: E402
from unmask.policies import get_policy  # noqa: E402

OUT = HERE / "results" / "block_diffusion.json"
BLOCK = 32
SIZES = {  # name -> config overrides
    "tiny": {},
    "mid": {
        "vocab_size": 8192,
        "hidden_size": 512,
        "intermediate_size": 1408,
        "num_hidden_layers": 8,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "num_experts": 16,
        "n_group": 4,
        "topk_group": 2,
        "num_experts_per_tok": 4,
        "moe_intermediate_size": 256,
    },
}
SETTINGS = [  # (prompt length, generated tokens, steps per block, threshold)
    (20, 76, 32, 0.95),
    (20, 76, 8, 0.5),
]


def decode_upstream(ref, prompt: torch.Tensor, gen: int, steps: int, threshold: float) -> tuple[torch.Tensor, int]:
    ref.calls = 0
    out = ref.generate(
        prompt,
        temperature=0.0,
        block_length=BLOCK,
        steps=steps,
        gen_length=gen,
        threshold=threshold,
        eos_id=-1,
        mask_id=MASK,
    )
    return out[0], ref.calls


def decode_unmask(model, prompt: torch.Tensor, gen: int, steps: int, threshold: float, cache: str):
    total = -(-(prompt.shape[1] + gen) // BLOCK) * BLOCK  # upstream's canvas: whole blocks
    x = torch.full((1, total), MASK)
    x[:, : prompt.shape[1]] = prompt
    config = SamplingConfig(steps=steps, cache=cache, suppress_mask_token=False, block_eos_stop=False)
    out = generate(model, x, get_policy(f"scheduled_threshold:{threshold}"), config, gen_start=prompt.shape[1])
    return out.sequences[0, prompt.shape[1] : prompt.shape[1] + gen], int(out.nfe[0])


def timed(fn, repeats: int) -> tuple[float, tuple]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="tiny,mid", help="comma list of tiny, mid")
    p.add_argument("--repeats", type=int, default=3, help="decodes per prompt and loop (median time)")
    p.add_argument("--prompts", type=int, default=2, help="random prompts per setting")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for size in args.sizes.split(","):
        raw = tiny_llada2_config(**SIZES[size])
        ref = count_forwards(reference_llada2(raw))
        with tempfile.TemporaryDirectory() as tmp:
            saved = save_official(ref, raw, Path(tmp), shards=1, tokenizer=tiny_hf.full_vocab(raw["vocab_size"]))
            model = load_model(f"hf:{saved}", device="cpu")
        for prompt_length, gen, steps, threshold in SETTINGS:
            stats: dict[str, list] = {"upstream": [], "none": [], "block": []}
            for seed in range(args.prompts):
                prompt = torch.randint(8, 32, (1, prompt_length), generator=torch.Generator().manual_seed(seed))
                t, (want, calls) = timed(lambda: decode_upstream(ref, prompt, gen, steps, threshold), args.repeats)
                stats["upstream"].append((t, calls, True))
                for cache in ("none", "block"):
                    t, (got, nfe) = timed(
                        lambda c=cache: decode_unmask(model, prompt, gen, steps, threshold, c), args.repeats
                    )
                    stats[cache].append((t, nfe, torch.equal(got, want)))
            up_time = sum(t for t, _, _ in stats["upstream"])
            for loop, runs in stats.items():
                wall = sum(t for t, _, _ in runs)
                rows.append(
                    {
                        "size": size,
                        "prompt_length": prompt_length,
                        "gen_length": gen,
                        "steps": steps,
                        "threshold": threshold,
                        "loop": "LLaDA2 generate()" if loop == "upstream" else f"unmask --cache {loop}",
                        "forwards_per_token": sum(n for _, n, _ in runs) / (gen * len(runs)),
                        "tokens_equal": all(eq for _, _, eq in runs),
                        "wall_s": wall / len(runs),
                        "ratio": wall / up_time,
                    }
                )
                print(
                    f"{size:5s} steps={steps:2d} thr={threshold:.2f} {rows[-1]['loop']:20s} "
                    f"fwd/token={rows[-1]['forwards_per_token']:.3f} equal={rows[-1]['tokens_equal']} "
                    f"wall={rows[-1]['wall_s']:.3f}s ratio={rows[-1]['ratio']:.2f}",
                    flush=True,
                )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {"provenance": [run_info(command_line("benchmarks/block_diffusion.py", args))], "results": rows}, indent=2
        )
    )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
