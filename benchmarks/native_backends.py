"""Native LLaDA / Dream backends vs the remote (upstream) modeling code: CPU forward time and peak memory.

"Remote code" is the checkpoint's own modeling code, i.e. the upstream ``modeling_llada.py`` /
``modeling_dream.py`` in ``../shared/reference/fast_dllm`` (built the way the tests build it,
``tests/reference_models.py``: random weights, fp32, eval; its own code cannot load through
``from_pretrained`` under transformers 5). The native backend holds the SAME weight tensors
(``native_twin``), so both read one copy of the weights and compute the same logits (max difference reported).

- time: median over ``--repeats`` samples (a sample: the mean of 20 forwards at ``tiny``, one at ``mid``) of
  one batch, both models alternating in one process, one torch thread; ``ratio`` = native / remote (below 1:
  native faster).
- peak memory: in a fresh subprocess per model (glibc ``MALLOC_MMAP_THRESHOLD_=65536``, so a freed tensor
  leaves the resident set), the peak rise of the resident set during one forward over its size once the
  weights are built, sampled every 0.2 ms: the forward's activations and temporaries (tiny: below resolution).

Sizes: ``tiny`` (the tests' configs: width 32, 2 layers, vocab 64; batch 4 x 64 tokens) and ``mid``
(width 512, 8 layers, 8 heads, MLP 1408, vocab 8192; batch 4 x 256 tokens; Dream with 2 KV heads as Dream-7B's GQA).

Command (from the repository root):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/native_backends.py --sizes tiny,mid --repeats 9

Writes ``benchmarks/results/native_backends.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from common import command_line, run_info  # noqa: E402
from reference_models import (  # noqa: E402
    native_twin,
    reference_dream,
    reference_llada,
    tiny_dream_config,
    tiny_llada_config,
)

OUT = HERE / "results" / "native_backends.json"
SIZES = {  # name -> (LLaDA overrides, Dream overrides, batch, length, forwards per timed sample)
    "tiny": ({}, {}, 4, 64, 20),
    "mid": (
        {
            "d_model": 512,
            "n_heads": 8,
            "n_kv_heads": 8,
            "n_layers": 8,
            "mlp_hidden_size": 1408,
            "vocab_size": 8192,
            "embedding_size": 8192,
            "max_sequence_length": 512,
        },
        {
            "hidden_size": 512,
            "num_attention_heads": 8,
            "num_key_value_heads": 2,
            "num_hidden_layers": 8,
            "intermediate_size": 1408,
            "vocab_size": 8192,
            "max_position_embeddings": 512,
        },
        4,
        256,
        1,
    ),
}
FAMILIES = {"llada": (reference_llada, tiny_llada_config, 0), "dream": (reference_dream, tiny_dream_config, 1)}


def build(family: str, size: str) -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor]:
    """(remote-code model, native model on the same tensors, input batch) for one family and size."""
    make, config, index = FAMILIES[family]
    raw = config(**SIZES[size][index])
    remote = make(raw)
    batch, length = SIZES[size][2:4]
    vocab = raw.get("embedding_size") or raw["vocab_size"]
    x = torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(0))
    return remote, native_twin(remote, raw), x


def forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=x).logits


def peak_memory(family: str, size: str, impl: str) -> float:
    """MiB the resident set rises by, at its peak, during one forward of ``impl`` over the RSS after the weights are
    built (sampled every 0.2 ms; run fresh with ``MALLOC_MMAP_THRESHOLD_`` low, so freed tensors leave the RSS)."""
    import psutil

    remote, native, x = build(family, size)
    model = native if impl == "native" else remote
    del remote, native
    gc.collect()
    process, peak, done = psutil.Process(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.0002)

    before = process.memory_info().rss
    sampler = threading.Thread(target=sample)
    sampler.start()
    forward(model, x)
    done.set()
    sampler.join()
    return max(0, peak[0] - before) / 2**20


def measure(family: str, size: str, repeats: int) -> dict:
    remote, native, x = build(family, size)
    gap = float((forward(remote, x) - forward(native, x)).abs().max())  # also the warm-up of both
    times, inner = {"remote": [], "native": []}, SIZES[size][4]
    for _ in range(repeats):
        for impl, model in (("remote", remote), ("native", native)):
            start = time.perf_counter()
            for _ in range(inner):
                forward(model, x)
            times[impl].append((time.perf_counter() - start) / inner)
    row = {
        "family": family,
        "size": size,
        "batch": list(x.shape),
        "params": sum(p.numel() for p in native.parameters()),
        "max_logit_difference": gap,
    }
    for impl in times:
        row[f"{impl}_ms"] = 1000 * statistics.median(times[impl])
        worker = subprocess.run(
            [sys.executable, __file__, "--peak-memory", family, size, impl],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"},
        )
        row[f"{impl}_peak_mib"] = float(worker.stdout.strip().splitlines()[-1])
    row["time_ratio"] = row["native_ms"] / row["remote_ms"]
    row["memory_ratio"] = row["native_peak_mib"] / max(row["remote_peak_mib"], 1e-9)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,mid", help=f"comma-separated, from {', '.join(SIZES)}")
    parser.add_argument("--families", default="llada,dream", help=f"comma-separated, from {', '.join(FAMILIES)}")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peak-memory", nargs=3, metavar=("FAMILY", "SIZE", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.peak_memory:
        print(peak_memory(*args.peak_memory))
        return
    sizes, families = args.sizes.split(","), args.families.split(",")
    unknown = sorted(set(sizes) - set(SIZES)) + sorted(set(families) - set(FAMILIES))
    if unknown:
        parser.error(
            f"unknown size or family {', '.join(unknown)}; sizes: {', '.join(SIZES)}; families: {', '.join(FAMILIES)}"
        )
    rows = [measure(f, s, args.repeats) for s in sizes for f in families]
    print(
        f"{'family':6} {'size':5} {'params':>9} {'remote ms':>10} {'native ms':>10} {'ratio':>6} "
        f"{'remote MiB':>10} {'native MiB':>10} {'ratio':>6} {'max |dlogit|':>12}"
    )
    for r in rows:
        print(
            f"{r['family']:6} {r['size']:5} {r['params']:>9} {r['remote_ms']:>10.1f} {r['native_ms']:>10.1f} "
            f"{r['time_ratio']:>6.2f} {r['remote_peak_mib']:>10.1f} {r['native_peak_mib']:>10.1f} "
            f"{r['memory_ratio']:>6.2f} {r['max_logit_difference']:>12.2e}"
        )
    args.peak_memory = None
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {"provenance": [run_info(command_line("benchmarks/native_backends.py", args))], "results": rows}, indent=2
        )
        + "\n"
    )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
