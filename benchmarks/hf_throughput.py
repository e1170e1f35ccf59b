"""Engine overhead on CPU: a Hugging Face masked LM vs the built-in MDM, on equal shapes.

Both models are random-init, ~0.8M parameters, and read 9x9 sudoku grids
(length 81, digits 1-9 as tokens 0-8, mask token 9): the built-in
``MaskedTransformer`` (sudoku9 layout, 4 layers, width 128) and a
``BertForMaskedLM`` of the same depth and width, saved as safetensors and loaded
back through ``load_model("hf:DIR")``, the path a user takes. Each decodes the
same fresh puzzles with max-confidence, one token per step (NFE = blanks).

    overhead = (engine wall time - pure forward time) / pure forward time

where the pure forward time is the time spent inside the raw network's
``forward`` (``BertForMaskedLM`` / ``MaskedTransformer``, timed by hooks) on the
batches the engine fed it in the same run, so machine load affects both terms
alike. For the HF path the backend wrapper counts as overhead. Reported: the
median over ``--repeats`` runs, one torch thread.

Command (from the repository root):

    .venv/bin/python benchmarks/hf_throughput.py --batch-sizes 16 64 --repeats 3

Writes ``benchmarks/results/hf_throughput.json``.
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
from common import run_info

from unmask.engine.config import SamplingConfig
from unmask.engine.loop import generate
from unmask.models import MaskedTransformer, TransformerConfig, load_model
from unmask.policies import get_policy
from unmask.tasks import get_task

WIDTH, LAYERS, HEADS = 128, 4, 4


def builtin_model(task) -> MaskedTransformer:
    vocab, mask = task.vocab()
    torch.manual_seed(0)
    return MaskedTransformer(
        TransformerConfig(vocab, mask, task.coordinates(), n_layer=LAYERS, n_head=HEADS, n_embd=WIDTH)
    ).eval()


def hf_model(directory: Path):
    """BertForMaskedLM with digits 1-9 at ids 0-8 and [MASK] at 9, so both models read the same tensors."""
    from tokenizers import Tokenizer, models
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    words = [str(d) for d in range(1, 10)] + ["[MASK]", "[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]")),
        mask_token="[MASK]",
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=WIDTH,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=4 * WIDTH,
        max_position_embeddings=81,
        pad_token_id=words.index("[PAD]"),
    )
    BertForMaskedLM(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return load_model(f"hf:{directory}", device="cpu", dtype="float32")


def measure(mdm, network: torch.nn.Module, inputs: torch.Tensor, repeats: int) -> dict:
    """Median engine wall time and median time spent inside ``network``'s forward in the same runs."""
    starts: list[float] = []
    spans: list[float] = []
    pre = network.register_forward_pre_hook(lambda *_: starts.append(time.perf_counter()))
    post = network.register_forward_hook(lambda *_: spans.append(time.perf_counter() - starts.pop()))
    engine, forward = [], []
    try:
        for _ in range(repeats):
            spans.clear()
            start = time.perf_counter()
            out = generate(mdm, inputs, get_policy("confidence"), SamplingConfig())
            engine.append(time.perf_counter() - start)
            forward.append(sum(spans))
    finally:
        pre.remove()
        post.remove()
    e, f = statistics.median(engine), statistics.median(forward)
    overheads = [(a - b) / b for a, b in zip(engine, forward)]
    return {
        "engine_s": e,
        "forward_s": f,
        "overhead": statistics.median(overheads),
        "overhead_runs": overheads,
        "nfe": float(out.nfe.float().mean()),
        "tokens_per_s": int((inputs == mdm.mask_id).sum()) / e,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clues", type=int, default=30)
    parser.add_argument("--out", default="benchmarks/results/hf_throughput.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = get_task("sudoku9")
    builtin = builtin_model(task)
    with tempfile.TemporaryDirectory() as tmp:
        hf = hf_model(Path(tmp))
        paths = {"builtin": (builtin, builtin), "hf": (hf, hf.model)}
        params = {"builtin": builtin.num_parameters(), "hf": sum(p.numel() for p in hf.model.parameters())}
        rows = []
        for batch_size in args.batch_sizes:
            inputs = task.encode(task.generate(batch_size, seed=0, difficulty=args.clues), builtin).input_ids
            for name, (mdm, raw) in paths.items():
                rows.append(
                    {
                        "path": name,
                        "batch_size": batch_size,
                        "params": params[name],
                        **measure(mdm, raw, inputs, args.repeats),
                    }
                )
    print(
        f"{'path':<8} {'batch':>5} {'params':>8} {'NFE':>5} {'engine s':>9} {'forward s':>9} {'overhead':>9} {'tokens/s':>9}"
    )
    for r in rows:
        print(
            f"{r['path']:<8} {r['batch_size']:>5} {r['params']:>8} {r['nfe']:>5.0f} {r['engine_s']:>9.3f} {r['forward_s']:>9.3f} "
            f"{100 * r['overhead']:>8.1f}% {r['tokens_per_s']:>9.0f}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "provenance": [run_info(" ".join(sys.argv))],
        "torch_threads": 1,
        "clues": args.clues,
        "policy": "confidence",
        "steps": "one token per step",
    }
    Path(args.out).write_text(json.dumps({**meta, "results": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
