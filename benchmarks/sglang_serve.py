"""Serve a tiny random LLaDA2 with SGLang: its own LowConfidence and an unmask Bernoulli policy, tokens checked
against unmask's engine, tokens/s at 1 and 16 concurrent requests (GPU; UNRUN so far, see below).

For users with SGLang installed on a CUDA machine. One unattended command (from the repository root):

    python benchmarks/sglang_serve.py

What it does: writes a tiny random checkpoint of SGLang's LLaDA2 architecture (``LLaDA2MoeModelLM``, model_type
``llada2_moe``; vocabulary 157,184 so that SGLang's built-in LLaDA2 mask id 156895 is a token, block size 32, as
SGLang's ``DllmConfig`` fixes them for this architecture) and a fresh, untrained Bernoulli policy for it; registers
unmask in SGLang (``unmask sglang install``, undone at the end when it was not installed before); then, for
SGLang's ``LowConfidence`` (threshold 0.95) and for ``UnmaskPolicy`` running the Bernoulli policy (greedy), starts
an offline ``sglang.Engine`` in float32 (so SGLang's softmax and unmask's agree bit for bit; ``--dtype``) at each
concurrency (``--max-running-requests``), decodes ``--requests`` random prompts (``--prompt-length`` tokens, one
block by default), ``--gen-length`` tokens each, times the batch (after one warm-up request), and compares every request's tokens with unmask's engine on the same checkpoint
(``load_model("hf:DIR")``, ``block_length`` 32, the policy ``threshold:0.95`` without mask suppression for
LowConfidence, the same Bernoulli checkpoint for UnmaskPolicy). Forwards per token are the engine's (NFE per
generated token) plus SGLang's one extra forward per block (the forward that sees the block clean), exact where the
tokens agree. Prints a table and writes ``benchmarks/results/sglang_serve.json``.

Depends on (and is therefore unrun as of this commit): SGLang with a CUDA GPU (tested interface: SGLang 0.5.23),
and unmask's LLaDA2 backend (``unmask.models.tiny.tiny_llada2_config`` and ``load_model("hf:DIR")`` for model_type
``llada2_moe``, block-causal attention as SGLang's), which is not merged yet (branch ``block``). Without either the
script stops with one line naming what is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, command_line, run_info

BLOCK, MASK_ID, VOCAB = 32, 156895, 157184  # SGLang's DllmConfig for LLaDA2MoeModelLM: block size 32, mask 156895
CONFIG_MODULE = '''"""The config class of the tiny random LLaDA2 checkpoint (written by benchmarks/sglang_serve.py)."""
from transformers import PretrainedConfig


class LLaDA2MoeConfig(PretrainedConfig):
    model_type = "llada2_moe"
'''


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--workdir", default="outputs/sglang_serve", help="where the checkpoint and the policy are written")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16], help="SGLang --max-running-requests values")
    p.add_argument("--requests", type=int, default=32, help="prompts decoded at each concurrency")
    p.add_argument("--prompt-length", type=int, default=BLOCK, help="prompt tokens (a multiple of the block size 32)")
    p.add_argument("--gen-length", type=int, default=2 * BLOCK, help="tokens generated per request (a multiple of 32)")
    p.add_argument("--threshold", type=float, default=0.95, help="LowConfidence's threshold")
    p.add_argument(
        "--dtype",
        default="float32",
        help="SGLang's dtype; float32 (default) makes its softmax and unmask's agree bit for bit (bfloat16: tokens "
        "next to the threshold can differ from unmask's float32 engine)",
    )
    p.add_argument("--attention-backend", default="triton", help="SGLang's --attention-backend (triton takes float32)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "sglang_serve.json"), help="results JSON")
    args = p.parse_args(argv)
    for name in ("prompt_length", "gen_length"):
        value = getattr(args, name)
        if value < BLOCK or value % BLOCK:
            p.error(
                f"--{name.replace('_', '-')} must be a positive multiple of SGLang's LLaDA2 block size {BLOCK}, got {value}"
            )
    if args.requests < 1 or min(args.concurrency) < 1:
        p.error("--requests and --concurrency take integers >= 1")
    return args


def require() -> None:
    """One line for what this machine lacks: SGLang, a GPU, unmask's LLaDA2 backend."""
    missing = []
    if importlib.util.find_spec("sglang") is None:
        missing.append("SGLang (pip install sglang; docs/deploy.md)")
    if not torch.cuda.is_available():
        missing.append("a CUDA GPU")
    try:
        from unmask.models.tiny import randomize_, save_safetensors, tiny_llada2_config  # noqa: F401
    except ImportError:
        missing.append("unmask's LLaDA2 backend (unmask.models.tiny.tiny_llada2_config; branch block, not merged yet)")
    if missing:
        sys.exit(f"sglang_serve.py needs {', '.join(missing)}")


def write_checkpoint(directory: Path, context: int) -> Path:
    """The tiny random LLaDA2 with a ``context``-token window (unmask's LLaDA2 backend writes the weights in the
    upstream names SGLang loads)."""
    from unmask.models.hf import native_backend
    from unmask.models.tiny import randomize_, save_safetensors, tiny_llada2_config

    raw = tiny_llada2_config(
        context,
        vocab_size=VOCAB,
        mask_token_id=MASK_ID,
        norm_topk_prob=True,
        torch_dtype="float32",
        auto_map={"AutoConfig": "configuration_llada2_moe.LLaDA2MoeConfig"},
    )
    backend = native_backend(raw["model_type"])
    model = randomize_(backend(backend.config_from_dict(raw)), 0)
    directory.mkdir(parents=True, exist_ok=True)
    save_safetensors({backend.checkpoint_name(k): v for k, v in model.state_dict().items()}, directory)
    (directory / "config.json").write_text(json.dumps(raw, indent=2))
    (directory / "configuration_llada2_moe.py").write_text(CONFIG_MODULE)
    return directory


def serve(
    args: argparse.Namespace, checkpoint: Path, algorithm: str, config: Path, concurrency: int, prompts: list[list[int]]
):
    """SGLang's tokens for ``prompts`` and the wall seconds of the batch (an offline engine, started and shut down)."""
    import sglang

    engine = sglang.Engine(
        model_path=str(checkpoint),
        trust_remote_code=True,
        skip_tokenizer_init=True,
        dtype=args.dtype,
        attention_backend=args.attention_backend,
        dllm_algorithm=algorithm,
        dllm_algorithm_config=str(config),
        max_running_requests=concurrency,
        mem_fraction_static=0.3,
        disable_cuda_graph=True,
        log_level="error",
    )
    try:
        params = {"max_new_tokens": args.gen_length, "temperature": 0.0, "ignore_eos": True}
        engine.generate(input_ids=prompts[:1], sampling_params=params)  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        outputs = engine.generate(input_ids=prompts, sampling_params=params)
        seconds = time.perf_counter() - start
    finally:
        engine.shutdown()
    return [o["output_ids"][: args.gen_length] for o in outputs], seconds


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    require()
    from unmask.engine.config import SamplingConfig
    from unmask.engine.loop import generate
    from unmask.integrations.sglang import shim
    from unmask.models import load_model
    from unmask.policies.learned import LearnedPolicy
    from unmask.policies.resolve import resolve_policy

    work = Path(args.workdir)
    checkpoint = write_checkpoint(work / "llada2", args.prompt_length + args.gen_length)
    mdm = load_model(f"hf:{checkpoint}", device="cuda")
    LearnedPolicy.for_model("bernoulli", mdm, base_threshold=0.9).save(work / "bernoulli")
    setups = {  # SGLang algorithm -> (its config, the unmask policy that decides the same in unmask's engine)
        "LowConfidence": ({"threshold": args.threshold}, f"threshold:{args.threshold}", False),
        "UnmaskPolicy": (
            {"policy": f"{work / 'bernoulli'}:mode=greedy", "model": mdm.name},
            f"{work / 'bernoulli'}:mode=greedy",
            True,
        ),
    }
    registered = (shim.algorithm_package() / shim.SHIM).exists()
    shim.install()
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, 1000, (args.requests, args.prompt_length), generator=g)
    rows = []
    try:
        for algorithm, (settings, spec, suppress) in setups.items():
            config = work / f"{algorithm}.yaml"
            config.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in settings.items()))
            start = torch.cat([prompts, torch.full((args.requests, args.gen_length), MASK_ID)], 1).cuda()
            sampling = SamplingConfig(block_length=BLOCK, suppress_mask_token=suppress)
            ref = generate(mdm, start, resolve_policy(spec, mdm), sampling, gen_start=args.prompt_length)
            expected = ref.sequences[:, args.prompt_length :].tolist()
            forwards = (ref.nfe.float().mean().item() + args.gen_length // BLOCK) / args.gen_length
            for concurrency in args.concurrency:
                tokens, seconds = serve(args, checkpoint, algorithm, config, concurrency, prompts.tolist())
                agree = sum(t == e for t, e in zip(tokens, expected)) / len(expected)
                rows.append(
                    {
                        "algorithm": algorithm,
                        "policy": spec if algorithm == "UnmaskPolicy" else f"LowConfidence threshold {args.threshold}",
                        "concurrency": concurrency,
                        "requests": args.requests,
                        "tokens_per_s": args.requests * args.gen_length / seconds,
                        "forwards_per_token": forwards,
                        "agree_with_engine": agree,
                    }
                )
                print(json.dumps(rows[-1]))
    finally:
        if not registered:
            shim.uninstall()
    print(f"\n{'algorithm':<14} {'concurrency':>11} {'tokens/s':>10} {'forwards/token':>15} {'same tokens':>12}")
    for r in rows:
        print(
            f"{r['algorithm']:<14} {r['concurrency']:>11} {r['tokens_per_s']:>10.1f} "
            f"{r['forwards_per_token']:>15.3f} {r['agree_with_engine']:>12.0%}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name()
    info = run_info(command_line("benchmarks/sglang_serve.py", args))
    out.write_text(json.dumps({"provenance": [info], "device": device, "results": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
