"""DiffusionGemma on unmask's engine vs transformers' own ``generate()``, side by side in one process.

Both decode the same random ``DiffusionGemmaForBlockDiffusion`` (one set of weights) from the same prompt with the same
seed and settings: entropy bound ``--entropy-bound`` (``eb:GAMMA`` in unmask), the ``t_max`` -> ``t_min``
temperature schedule, self-conditioning and adaptive stopping at ``generate()``'s defaults. Reported per size:
whether the generated tokens are identical, decoder forwards per generated token (NFE / token) of each, and the wall
time of one decode (median over ``--repeats``, the two alternating), with the ratio unmask / transformers (below 1:
unmask faster). Batch 1: seeded sampling aligns row for row there (tests/models/test_diffusion_gemma.py).

Sizes: ``tiny`` (``unmask make-tiny``'s: width 32, 2 layers, 4 experts, canvas 8, vocab 35; 32 tokens) and ``mid``
(width 512, 8 layers (5 sliding, 3 global), 8 heads / 2 KV heads, 16 experts of 256 with 2 active, vocab 8192,
canvas 32; 64 tokens). The weights are random, so no canvas stops early (the confidence rule needs a mean entropy
below 0.005): both run every step, and the comparison is of the loops' cost at equal work.

Command (from the repository root):

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/diffusion_gemma.py --sizes tiny,mid --repeats 3

Writes ``benchmarks/results/diffusion_gemma.json``.
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
sys.path.insert(0, str(HERE))

from common import command_line, run_info  # noqa: E402

from unmask.engine.config import SamplingConfig  # noqa: E402
from unmask.engine.loop import generate  # noqa: E402
from unmask.models import load_model  # noqa: E402
from unmask.models.tiny import randomize_, tiny_diffusion_gemma_config, tokenizer  # noqa: E402
from unmask.policies.resolve import resolve_policy  # noqa: E402

OUT = HERE / "results" / "diffusion_gemma.json"
MID = {
    "hidden_size": 512,
    "intermediate_size": 1024,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "global_head_dim": 128,
    "sliding_window": 64,
    "layer_types": ["sliding_attention"] * 2 + ["full_attention"] + ["sliding_attention"] * 2 + ["full_attention"] * 3,
    "num_experts": 16,
    "moe_intermediate_size": 256,
}
SIZES = {"tiny": ({}, 8, 35, 32), "mid": (MID, 32, 8192, 64)}  # text overrides, canvas, vocab, generated tokens


def checkpoint(directory: Path, size: str) -> Path:
    """A random DiffusionGemma of ``size`` with a word-level tokenizer of its vocabulary's size."""
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion

    overrides, canvas, vocab, _ = SIZES[size]
    raw = tiny_diffusion_gemma_config(canvas_length=canvas, vocab_size=vocab)
    raw["text_config"].update(overrides)
    config = DiffusionGemmaConfig.from_dict(raw)
    torch.manual_seed(0)
    model = randomize_(DiffusionGemmaForBlockDiffusion(config), 0)
    model.save_pretrained(directory)
    tok = tokenizer(chat=True, extra_words=vocab - len(tokenizer()))  # every id decodable: nothing masked out
    tok.save_pretrained(directory)
    return directory


def run(size: str, repeats: int, bound: float, steps: int) -> dict:
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig

    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(f"hf:{checkpoint(Path(tmp), size)}", device="cpu")
    gen = SIZES[size][3]
    prompt = torch.tensor([[2, 10, 11, 12, 13, 3]])
    x = torch.cat([prompt, torch.full((1, gen), model.mask_id)], 1)
    policy = resolve_policy(f"eb:{bound}", model)
    calls = [0]
    model.model.model.decoder.register_forward_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))

    def reference() -> tuple[torch.Tensor, int]:
        calls[0] = 0
        torch.manual_seed(0)
        out = model.model.generate(
            prompt,
            max_new_tokens=gen,
            max_denoising_steps=steps,
            sampler_config=EntropyBoundSamplerConfig(entropy_bound=bound),
            eos_token_id=None,
        )
        return out.sequences[0, prompt.shape[1] :], calls[0]

    def ours() -> tuple[torch.Tensor, int]:
        calls[0] = 0
        torch.manual_seed(0)
        out = generate(model, x, policy, SamplingConfig(steps=steps), gen_start=prompt.shape[1])
        return out.sequences[0, prompt.shape[1] :], int(out.nfe[0])

    stop_ids, model.stop_ids = model.stop_ids, ()  # as generate() with eos_token_id None: every canvas decoded
    times: dict[str, list[float]] = {"transformers": [], "unmask": []}
    results = {}
    for _ in range(repeats + 1):  # the first round warms up
        for name, fn in (("transformers", reference), ("unmask", ours)):
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    model.stop_ids = stop_ids
    (want, want_nfe), (got, got_nfe) = results["transformers"], results["unmask"]
    median = {name: statistics.median(t[1:]) for name, t in times.items()}
    return {
        "size": size,
        "parameters": sum(p.numel() for p in model.model.parameters()),
        "generated_tokens": gen,
        "canvas_length": model.canvas_length,
        "steps": steps,
        "identical_tokens": bool(torch.equal(want, got)),
        "nfe_per_token_transformers": want_nfe / gen,
        "nfe_per_token_unmask": got_nfe / gen,
        "seconds_transformers": median["transformers"],
        "seconds_unmask": median["unmask"],
        "time_ratio": median["unmask"] / median["transformers"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,mid")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=16, help="max_denoising_steps per canvas")
    parser.add_argument("--entropy-bound", type=float, default=0.1)
    args = parser.parse_args()
    rows = [run(size, args.repeats, args.entropy_bound, args.steps) for size in args.sizes.split(",")]
    header = f"{'size':6} {'params':>11} {'same tokens':>12} {'NFE/tok hf':>11} {'NFE/tok ours':>13} {'hf s':>8} {'ours s':>8} {'ratio':>6}"
    print(header)
    for r in rows:
        print(
            f"{r['size']:6} {r['parameters']:>11,} {str(r['identical_tokens']):>12} {r['nfe_per_token_transformers']:>11.3f} "
            f"{r['nfe_per_token_unmask']:>13.3f} {r['seconds_transformers']:>8.3f} {r['seconds_unmask']:>8.3f} "
            f"{r['time_ratio']:>6.2f}"
        )
    command = "OMP_NUM_THREADS=2 .venv/bin/python " + command_line("benchmarks/diffusion_gemma.py", args)
    OUT.write_text(json.dumps({"provenance": [run_info(command)], "results": rows}, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
