"""``unmask.generate``: a drop-in for LLaDA's ``generate()`` and Dream's ``diffusion_generate()``.

    from unmask import generate
    texts = generate(model, tokenizer, ["What is 7 * 8?"], steps=128, gen_length=128, block_length=32,
                     remasking="low_confidence")                       # LLaDA's names
    texts = generate(model, tokenizer, prompts, max_new_tokens=256, steps=256, alg="entropy", alg_temp=0.0,
                     temperature=0.2, top_p=0.95)                      # Dream's names
    texts = generate(model, tokenizer, prompts, policy="upo", gen_length=256)   # a learned policy
    texts = generate(load_model("hf:inclusionAI/LLaDA2.0-mini"), None, prompts, gen_length=256, steps=32,
                     threshold=0.95)                                   # LLaDA2's names (block diffusion)

``model``: an unmask text MDM (``load_model("hf:...")``), a ``transformers`` dLLM (LLaDA, Dream, DiffusionGemma, any
masked LM) with its ``tokenizer``, or a name for :func:`unmask.models.load_model`. ``prompts``: strings (tokenized as
LLaDA's and Dream's example scripts do, ``tokenizer(prompt)``; render a chat template first if the model wants
one) or a (B, P) tensor of prompt ids with its ``attention_mask`` (left padding). LLaDA's loop options
(``block_length``, ``remasking``, ``cfg_scale``, ...) pick the LLaDA loop, Dream's (``alg``, ``top_p``, ``eps``, ...)
the Dream loop, else the model's own (:class:`unmask.engine.config.SamplingConfig`); ``remasking`` / ``alg`` (+ ``alg_temp``)
name the policy unless ``policy`` does (any spec of ``unmask eval --policies``). A block-causal model (LLaDA2.x)
always runs LLaDA2's loop (the block sampler: ``steps`` per block, ``temperature``, ``top_k``, ``top_p``), its
policy ``scheduled_threshold:threshold`` (LLaDA2 ``generate(threshold=0.95)``) unless ``policy`` names one. Example ``j`` draws from its own
random stream ``(seed, j)``. Returns the completions (text up to EOS), or with ``return_order`` a
:class:`SamplerOutput` that also holds the sequences, each position's reveal step and the NFE.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch

from unmask.engine.config import SamplingConfig
from unmask.engine.loop import generate as decode
from unmask.engine.streams import ExampleStreams
from unmask.models.base import MaskedDiffusionModel

REMASKING = {"low_confidence": "confidence", "random": "random"}  # LLaDA generate(remasking=...)
ALGORITHMS = {
    "maskgit_plus": "confidence",
    "topk_margin": "margin",
    "entropy": "entropy",
    "origin": "origin",
}  # Dream alg
LLADA_GEN_LENGTH = 128  # LLaDA generate()'s default gen_length


@dataclass
class SamplerOutput:
    """Completions and how they were decoded."""

    texts: list[str]
    sequences: torch.Tensor  # (B, P + gen_length) prompt (left-padded) and generated ids
    order: torch.Tensor  # (B, gen_length) step at which each generated position was revealed
    nfe: torch.Tensor  # (B,) model forwards per row


def generate(
    model: Any,
    tokenizer: Any = None,
    prompts: str | Sequence[str] | torch.Tensor = (),
    policy: str | None = None,
    *,
    attention_mask: torch.Tensor | None = None,
    steps: int | None = None,
    gen_length: int | None = None,
    block_length: int | None = None,
    temperature: float = 0.0,
    remasking: str | None = None,
    cfg_scale: float = 0.0,
    logits_eos_inf: bool = False,
    confidence_eos_eot_inf: bool = False,
    max_new_tokens: int | None = None,
    alg: str | None = None,
    alg_temp: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    eps: float | None = None,
    threshold: float | None = None,
    mask_id: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    return_order: bool = False,
) -> list[str] | SamplerOutput:
    """Decode ``prompts`` with ``model`` and an unmasking policy; see the module docstring."""
    if gen_length is not None and max_new_tokens is not None:
        raise ValueError("gen_length (LLaDA) and max_new_tokens (Dream) both given; pass one")
    length_name, length = next(
        ((n, v) for n, v in (("gen_length", gen_length), ("max_new_tokens", max_new_tokens)) if v is not None),
        ("gen_length", LLADA_GEN_LENGTH),
    )
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"{length_name} must be an integer >= 1 (tokens to generate), got {length!r}")
    with preserved(model):  # a user's transformers model keeps its train mode and requires_grad flags
        out = _generate(
            as_mdm(model, tokenizer, mask_id),
            prompts,
            policy,
            attention_mask=attention_mask,
            steps=steps,
            length=length,
            block_length=block_length,
            temperature=temperature,
            remasking=remasking,
            cfg_scale=cfg_scale,
            logits_eos_inf=logits_eos_inf,
            confidence_eos_eot_inf=confidence_eos_eot_inf,
            alg=alg,
            alg_temp=alg_temp,
            top_p=top_p,
            top_k=top_k,
            eps=eps,
            threshold=threshold,
            seed=seed,
            batch_size=batch_size,
        )
    return out if return_order else out.texts


def _generate(
    mdm: MaskedDiffusionModel,
    prompts: str | Sequence[str] | torch.Tensor,
    policy: str | None,
    *,
    attention_mask: torch.Tensor | None,
    steps: int | None,
    length: int,
    block_length: int | None,
    temperature: float,
    remasking: str | None,
    cfg_scale: float,
    logits_eos_inf: bool,
    confidence_eos_eot_inf: bool,
    alg: str | None,
    alg_temp: float | None,
    top_p: float | None,
    top_k: int | None,
    eps: float | None,
    threshold: float | None,
    seed: int,
    batch_size: int | None,
) -> SamplerOutput:
    """:func:`generate` on an unmask MDM: the sampler and policy its arguments name, checked against the model."""
    from unmask.policies.resolve import resolve_policy

    llada = [
        n
        for n, v in (
            ("block_length", block_length),
            ("remasking", remasking),
            ("cfg_scale", cfg_scale),
            ("logits_eos_inf", logits_eos_inf),
            ("confidence_eos_eot_inf", confidence_eos_eot_inf),
        )
        if v
    ]
    dream = [
        n
        for n, v in (("alg", alg), ("alg_temp", alg_temp), ("top_p", top_p), ("top_k", top_k), ("eps", eps))
        if v is not None
    ]
    block = mdm.block_length is not None
    if block:  # LLaDA2 generate() names: block_length (the model's), steps per block, temperature, top_k, top_p
        llada = [n for n in llada if n != "block_length"]
        dream = [n for n in dream if n not in ("top_p", "top_k")]
        if llada or dream:
            raise ValueError(
                f"{', '.join(llada + dream)}: not options of LLaDA2 generate(), which {mdm.name} (block-causal) "
                "decodes with; drop them"
            )
        if threshold is not None and (policy is not None or not 0 <= threshold <= 1):
            raise ValueError("threshold (LLaDA2 generate()) must lie in [0, 1] and names the policy: drop policy=")
    elif threshold is not None:
        raise ValueError(f"threshold is LLaDA2 generate()'s; {mdm.name} is not block-causal: use policy='threshold:T'")
    if llada and dream:
        raise ValueError(
            f"LLaDA generate() arguments ({', '.join(llada)}) and Dream diffusion_generate() arguments "
            f"({', '.join(dream)}) together; use one sampler's names"
        )
    sampling = SamplingConfig(
        steps=steps,
        block_length=block_length,
        temperature=float(temperature),
        sampler="block" if block else "dream" if dream else "llada" if llada else "auto",
        cfg_scale=float(cfg_scale),
        logits_eos_inf=logits_eos_inf,
        confidence_eos_eot_inf=confidence_eos_eot_inf,
        top_p=top_p,
        top_k=top_k,
        **({} if eps is None else {"eps": float(eps)}),
    )
    if block and policy is None:
        spec = f"scheduled_threshold:{0.95 if threshold is None else threshold:g}"
    else:
        spec = policy_spec(policy, remasking, alg, alg_temp)
    return decode_prompts(
        mdm, prompt_ids(prompts, mdm, attention_mask), resolve_policy(spec, mdm), sampling, length, seed, batch_size
    )


def decode_prompts(
    mdm: MaskedDiffusionModel,
    ids: list[list[int]],
    policy: Any,
    sampling: SamplingConfig,
    gen_length: int,
    seed: int,
    batch_size: int | None,
) -> SamplerOutput:
    """Decode token-id prompts ``batch_size`` at a time (default: all at once), example ``j`` on stream ``(seed, j)``."""
    from unmask.tasks.math import decode_completions, encode_prompts

    size = batch_size or len(ids)
    texts, sequences, order, nfe = [], [], [], []
    for start in range(0, len(ids), size):
        enc = encode_prompts(ids[start : start + size], mdm, gen_length, "generate")
        streams = ExampleStreams(seed, range(start, start + len(enc.input_ids)), device=mdm.device)
        out = decode(mdm, enc.input_ids, policy, sampling, enc.attention_mask, enc.gen_start, streams)
        texts += decode_completions(out.sequences, mdm, gen_length)
        sequences.append(out.sequences)
        order.append(out.order)
        nfe.append(out.nfe)
    width = max(s.shape[1] for s in sequences)
    padded = [torch.nn.functional.pad(s, (width - s.shape[1], 0), value=mdm.pad_id) for s in sequences]
    return SamplerOutput(texts, torch.cat(padded), torch.cat(order), torch.cat(nfe))


@contextmanager
def preserved(model: Any) -> Iterator[None]:
    """Restore a ``torch.nn.Module``'s train mode and parameters' ``requires_grad`` afterwards (wrapping it as an
    MDM freezes it; a training loop that samples with ``generate`` keeps training it)."""
    if not isinstance(model, torch.nn.Module) or isinstance(model, MaskedDiffusionModel):
        yield
        return
    training, flags = model.training, [p.requires_grad for p in model.parameters()]
    try:
        yield
    finally:
        model.train(training)
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


def policy_spec(policy: str | None, remasking: str | None, alg: str | None, alg_temp: float | None) -> str:
    """The policy spec ``policy``, or the one LLaDA's ``remasking`` / Dream's ``alg`` (+ ``alg_temp``) names;
    default: confidence (LLaDA ``low_confidence``)."""
    named = [n for n, v in (("policy", policy), ("remasking", remasking), ("alg", alg)) if v is not None]
    if len(named) > 1:
        raise ValueError(f"{' and '.join(named)} both choose the unmasking order; pass one")
    if remasking is not None and remasking not in REMASKING:
        raise ValueError(f"unknown remasking {remasking!r}; LLaDA's are {', '.join(REMASKING)}")
    if alg is not None and alg not in ALGORITHMS:
        raise ValueError(f"unknown alg {alg!r}; Dream's are {', '.join(ALGORITHMS)}")
    if alg_temp and alg not in ("maskgit_plus", "topk_margin", "entropy"):
        raise ValueError("alg_temp applies to Dream's alg maskgit_plus, topk_margin and entropy; pass one of them")
    if policy is not None:
        return policy
    spec = REMASKING[remasking] if remasking else ALGORITHMS[alg] if alg else "confidence"
    return f"{spec}:alg_temp={alg_temp:g}" if alg_temp else spec


def as_mdm(model: Any, tokenizer: Any = None, mask_id: int | None = None) -> MaskedDiffusionModel:
    """``model`` as an unmask text MDM: itself, a name for :func:`unmask.models.load_model`, or a
    ``transformers`` model wrapped with ``tokenizer`` (style from its config, mask id as ``load_model`` finds it)."""
    from unmask.models import load_model
    from unmask.models.hf import STYLES, HFMaskedDiffusionModel, resolve_mask_id, resolve_style

    if isinstance(model, str):
        model = load_model(model)
    if isinstance(model, MaskedDiffusionModel):
        if tokenizer is not None and tokenizer is not getattr(model, "tokenizer", None):
            raise ValueError(f"{model.name} brings its own tokenizer; pass tokenizer=None")
        if mask_id is not None and mask_id != model.mask_id:
            raise ValueError(f"mask_id {mask_id}: {model.name} uses mask id {model.mask_id}; drop mask_id")
        if getattr(model, "tokenizer", None) is None:
            raise ValueError(
                f"generate() decodes text: {model.name!r} has no tokenizer; use a Hugging Face dLLM (hf:NAME)"
            )
        return model
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
        raise ValueError(
            f"model must be an unmask MDM, a transformers model or a model name, got {type(model).__name__}"
        )
    if tokenizer is None:
        raise ValueError("a transformers model needs its tokenizer: generate(model, tokenizer, prompts, ...)")
    name = getattr(model.config, "_name_or_path", "") or type(model).__name__
    if model.config.model_type == "diffusion_gemma":  # uniform-state: no mask token to choose
        from unmask.models.diffusion_gemma import DiffusionGemma

        if mask_id is not None:
            raise ValueError("mask_id: DiffusionGemma has no mask token (its canvas starts as random tokens); drop it")
        return DiffusionGemma(model, tokenizer, f"hf:{name}")
    family = getattr(model, "family", None)  # unmask's native LLaDA / Dream backends
    style = (
        replace(STYLES[family.lower()], pairwise_mask=False) if family else resolve_style(model.config.model_type, None)
    )
    return HFMaskedDiffusionModel(
        model, tokenizer, style, resolve_mask_id(tokenizer, model, mask_id, name), f"hf:{name}"
    )


def prompt_ids(
    prompts: str | Sequence[str] | torch.Tensor, model: MaskedDiffusionModel, attention_mask: torch.Tensor | None
) -> list[list[int]]:
    """Token ids of each prompt: strings through the tokenizer, tensor rows without their left padding."""
    if isinstance(prompts, torch.Tensor):
        rows = prompts.tolist() if prompts.dim() == 2 else [prompts.tolist()]
        if attention_mask is None:
            return rows
        keep = attention_mask.bool().tolist() if attention_mask.dim() == 2 else [attention_mask.bool().tolist()]
        return [[t for t, k in zip(row, mask) if k] for row, mask in zip(rows, keep)]
    if attention_mask is not None:
        raise ValueError("attention_mask goes with prompt ids (a tensor); text prompts are padded here")
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not texts:
        raise ValueError("no prompts given")
    return [model.tokenizer(t)["input_ids"] for t in texts]
