"""Oracle models: the upstream LLaDA / Dream modeling code, tiny random configs, and native twins of them.

The reference code is imported from ``../shared/reference/fast_dllm/{llada,dream}/model`` (verbatim upstream
copies, see its README) as private packages ``_reference_llada`` / ``_reference_dream``; tests that need it
call :func:`reference_llada` / :func:`reference_dream`, which skip the test cleanly when the folder (or
``einops``, which LLaDA's code imports) is absent. The only patches are the ones the test itself needs under
the pinned transformers 5, applied to the imported modules (never to transformers):

- LLaDA: ``scaled_dot_product_attention`` is wrapped in ``torch.compile()`` at import; it is replaced by the
  plain ``F.scaled_dot_product_attention`` it wraps (no compiler on the test machine). ``config.use_cache`` is
  set (transformers 5's config no longer defines it). Importing it registers ``llada`` in ``AutoConfig``;
  that registration is undone so remote-code tests see a clean registry.
- Dream: transformers 5 dropped ``ROPE_INIT_FUNCTIONS["default"]``; the module gets a copy of the table with
  the standard RoPE inverse frequencies under that key (Dream's rope_type), so ``inv_freq`` is derived as
  upstream computes it.

Weights are random and large enough (std 0.3, norm weights around 1) that a wrong wiring shows in the logits.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from unmask.models.tiny import (  # noqa: F401
    EOS,
    MASK,
    PAD,
    randomize_,
    save_safetensors,
    tiny_dream_config,
    tiny_llada2_config,
    tiny_llada_config,
    tiny_sdar_config,
)

SHARED_REFERENCE = Path(
    os.environ.get("UNMASK_REFERENCE") or Path(__file__).resolve().parents[2] / "shared" / "reference"
)
REFERENCE = SHARED_REFERENCE / "fast_dllm"
LLADA2_DIR = SHARED_REFERENCE / "llada2"  # inclusionAI/LLaDA2.0-mini's configuration_ and modeling_llada2_moe.py
SDAR_DIR = SHARED_REFERENCE / "sdar"  # JetAstra/SDAR's configuration_ and modeling_sdar.py, and its generate.py
LLADA_DIR = REFERENCE / "llada" / "model"
DREAM_DIR = REFERENCE / "dream" / "model"


def default_rope(config, device=None, **kwargs) -> tuple[torch.Tensor, float]:
    """transformers 4's ``ROPE_INIT_FUNCTIONS["default"]`` (dropped in 5): ``theta ** (-arange(0, d, 2) / d)`` over the
    rotated dimensions ``d`` (``head_dim`` or hidden / heads, times ``partial_rotary_factor``), scaling 1."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    dim = int(head_dim * getattr(config, "partial_rotary_factor", 1.0))
    exponent = torch.arange(0, dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float) / dim
    return 1.0 / (config.rope_theta**exponent), 1.0


def restore_default_rope(modeling: ModuleType) -> None:
    """Give an upstream modeling module a copy of its RoPE table with :func:`default_rope` under "default"."""
    modeling.ROPE_INIT_FUNCTIONS = {**modeling.ROPE_INIT_FUNCTIONS, "default": default_rope}


def block_mask(length: int, block: int) -> torch.Tensor:
    """(length, length) 1 where a query (row) sees a key (column): its own block and earlier ones, blocks of
    ``block`` from position 0 (LLaDA2's / SDAR's ``block_diffusion_attention_mask``; LLaDA2 passes its log)."""
    n = -(-length // block)
    return torch.tril(torch.ones(n, n)).repeat_interleave(block, 0).repeat_interleave(block, 1)[:length, :length]


def assert_same_outputs(reference: torch.nn.Module, native: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor):
    """``native`` (no mask: its own) gives ``reference``'s logits and hidden states (given the 4-D ``mask``) to 1e-5."""
    with torch.no_grad():
        want = reference(input_ids=x, attention_mask=mask, output_hidden_states=True)
        got = native(input_ids=x, output_hidden_states=True)
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=1e-5)
    for g, w in zip(got.hidden_states, want.hidden_states, strict=True):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
    return got


def count_forwards(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with its ``forward`` counting its calls in ``model.calls`` (what the upstream loops' NFE are)."""
    forward, model.calls = model.forward, 0

    def counting(*args, **kwargs):
        model.calls += 1
        return forward(*args, **kwargs)

    model.forward = counting
    return model


def _import_package(name: str, folder: Path, needs: tuple[str, ...] = ("einops",)) -> ModuleType:
    if not folder.is_dir():
        pytest.skip(f"reference code {folder} is absent")
    for package in needs:
        pytest.importorskip(package)
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def import_llada() -> ModuleType:
    """The reference LLaDA package (``LLaDAConfig``, ``LLaDAModelLM``), patched as the module docstring says."""
    fresh = "_reference_llada" not in sys.modules
    package = _import_package("_reference_llada", LLADA_DIR)
    if fresh:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        modeling = sys.modules["_reference_llada.modeling_llada"]

        def sdpa(q, k, v, mask=None, attn_mask=None, dropout_p=0.0, is_causal=False):
            return torch.nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal
            )

        modeling.scaled_dot_product_attention = sdpa
        CONFIG_MAPPING._extra_content.pop("llada", None)
    return package


def import_dream() -> ModuleType:
    """The reference Dream package (``DreamConfig``, ``DreamModel``), patched as the module docstring says."""
    fresh = "_reference_dream" not in sys.modules
    package = _import_package("_reference_dream", DREAM_DIR)
    if fresh:
        modeling = sys.modules["_reference_dream.modeling_dream"]

        restore_default_rope(modeling)
    return package


def import_llada2() -> ModuleType:
    """LLaDA2's Hugging Face modeling code (``LLaDA2MoeConfig``, ``LLaDA2MoeModelLM`` and its ``generate()``), as a
    package; the folder holds the two files verbatim plus an empty ``__init__.py``. Shims, none editing the files:

    - transformers 5 dropped ``transformers.utils.import_utils.is_torch_fx_available``, which the file imports: it
      is set (to a function returning False, which skips the file's torch < 1.13 branch) while the file loads,
      then removed again.
    - transformers 5 dropped ``ROPE_INIT_FUNCTIONS["default"]``: the module gets a copy of the table with the
      default RoPE of transformers 4.x under that key (``partial_rotary_factor`` of ``head_dim`` rotated, as the
      file's rotary embedding expects).
    - :func:`reference_llada2` wraps each model's ``forward`` to cast a 4-D attention mask to float32:
      ``generate()`` builds its 0 / -inf block mask in bfloat16, which SDPA refuses next to float32 queries (the
      cast is exact for 0 and -inf).
    """
    from transformers.utils import import_utils

    if "_reference_llada2" in sys.modules:
        return sys.modules["_reference_llada2"]
    import_utils.is_torch_fx_available = lambda: False
    try:
        package = _import_package("_reference_llada2", LLADA2_DIR, needs=())
        modeling = importlib.import_module("_reference_llada2.modeling_llada2_moe")
    finally:
        del import_utils.is_torch_fx_available

    restore_default_rope(modeling)
    package.LLaDA2MoeConfig = importlib.import_module("_reference_llada2.configuration_llada2_moe").LLaDA2MoeConfig
    package.LLaDA2MoeModelLM = modeling.LLaDA2MoeModelLM
    return package


def reference_llada2(raw: dict | None = None, seed: int = 0) -> torch.nn.Module:
    """Upstream ``LLaDA2MoeModelLM`` (fp32, eval, eager attention) with random weights for ``raw`` (default
    :func:`tiny_llada2_config`), the routers' expert biases random too (a zero bias would hide their wiring)."""
    package = import_llada2()
    config = package.LLaDA2MoeConfig(**_model_config_kwargs(raw or tiny_llada2_config()))
    config._attn_implementation = "sdpa"
    model = randomize_(package.LLaDA2MoeModelLM(config), seed).eval()
    forward = model.forward

    def float_mask_forward(*args, attention_mask=None, **kwargs):
        if attention_mask is not None and attention_mask.dim() == 4:
            attention_mask = attention_mask.float()
        return forward(*args, attention_mask=attention_mask, **kwargs)

    model.forward = float_mask_forward
    gen = torch.Generator().manual_seed(seed + 1)
    for name, buffer in model.named_buffers():
        if name.endswith("expert_bias"):
            buffer.copy_(torch.randn(buffer.shape, generator=gen) * 0.3)
    return model


def _sdar_stubs() -> dict[str, ModuleType]:
    """Stand-ins for the CUDA-only modules SDAR's file imports, and its training-only sibling module."""
    import torch.nn.functional as F

    def rms_norm_fn(x, weight, bias=None, eps=1e-6):  # the PyTorch RMSNorm the file keeps beside its flash call
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return weight * (x.float() * torch.rsqrt(variance + eps)).to(x.dtype)

    def flash_attn_func(q, k, v, causal=False, softmax_scale=None):  # (b, l, heads, d), as flash-attn lays it out
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            is_causal=causal,
            scale=softmax_scale,
            enable_gqa=True,
        )
        return out.transpose(1, 2)

    modules = {name: ModuleType(name) for name in ("flash_attn", "flash_attn.ops", "flash_attn.ops.triton")}
    modules["flash_attn.ops.triton.layer_norm"] = ModuleType("flash_attn.ops.triton.layer_norm")
    modules["flash_attn.ops.triton.layer_norm"].rms_norm_fn = rms_norm_fn
    modules["flash_attn"].flash_attn_func = flash_attn_func
    modules["flash_attn"].flash_attn_varlen_func = None
    loss = modules["_reference_sdar.fused_linear_diffusion_cross_entropy"] = ModuleType("fused_linear_ce")
    loss.FusedLinearDiffusionCrossEntropyLoss = type("FusedLinearDiffusionCrossEntropyLoss", (), {})
    return modules


def import_sdar() -> ModuleType:
    """SDAR's modeling code (``SDARConfig``, ``SDARForCausalLM``) and its ``generate.py``
    (``block_diffusion_generate``), as a package; the folder holds the three files verbatim plus an empty
    ``__init__.py``. Shims, none editing the files:

    - its CUDA-only imports get stand-ins while it loads: ``flash_attn``'s fused RMSNorm kernel becomes the PyTorch
      RMSNorm the file keeps (commented out) beside the call, ``flash_attn_func`` (non-causal, the decoding path
      when a step's mask is all ones) becomes SDPA on the same layout; the training-only
      ``fused_linear_diffusion_cross_entropy`` sibling is an empty stand-in;
    - ``transformers.utils.LossKwargs`` (dropped in transformers 5; a TypedDict the file subclasses) is set while
      the file loads, then removed;
    - transformers 5 dropped ``ROPE_INIT_FUNCTIONS["default"]``: the module gets the standard table entry back;
    - transformers 5's ``DynamicCache`` is no longer indexable (``cache[layer] -> (keys, values)``, which the
      file's cached path reads): ``generate.py`` gets a subclass that is.
    """
    from typing import TypedDict

    from transformers import utils
    from transformers.cache_utils import DynamicCache

    if "_reference_sdar" in sys.modules:
        return sys.modules["_reference_sdar"]
    for name in ("activations", "generation", "modeling_flash_attention_utils", "modeling_layers", "modeling_utils"):
        importlib.import_module(f"transformers.{name}")  # before the stand-ins: transformers probes for flash_attn
    stubs = _sdar_stubs()
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    utils.LossKwargs = TypedDict("LossKwargs", {"num_items_in_batch": int}, total=False)
    try:
        package = _import_package("_reference_sdar", SDAR_DIR, needs=("einops",))
        modeling = importlib.import_module("_reference_sdar.modeling_sdar")
        sampler = importlib.import_module("_reference_sdar.generate")
    finally:
        del utils.LossKwargs
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v

    restore_default_rope(modeling)
    package.SDARConfig = importlib.import_module("_reference_sdar.configuration_sdar").SDARConfig
    package.SDARForCausalLM = modeling.SDARForCausalLM

    class IndexableCache(DynamicCache):
        def __getitem__(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
            return self.layers[layer].keys, self.layers[layer].values

    sampler.DynamicCache = IndexableCache
    package.block_diffusion_generate = sampler.block_diffusion_generate
    return package


def reference_sdar(raw: dict | None = None, seed: int = 0) -> torch.nn.Module:
    """Upstream ``SDARForCausalLM`` (fp32, eval) with random weights for ``raw`` (default :func:`tiny_sdar_config`)."""
    package = import_sdar()
    config = package.SDARConfig(**_model_config_kwargs(raw or tiny_sdar_config()))
    return randomize_(package.SDARForCausalLM(config), seed).eval()


def _model_config_kwargs(raw: dict) -> dict:
    return {k: v for k, v in raw.items() if k not in ("model_type", "architectures", "auto_map")}


def reference_llada(raw: dict | None = None, seed: int = 0) -> torch.nn.Module:
    """Upstream ``LLaDAModelLM`` (fp32, eval) with random weights for ``raw`` (default :func:`tiny_llada_config`)."""
    package = import_llada()
    config = package.LLaDAConfig(**_model_config_kwargs(raw or tiny_llada_config()))
    config.use_cache = False
    return randomize_(package.LLaDAModelLM(config, init_params=False), seed).eval()


def reference_dream(raw: dict | None = None, seed: int = 0) -> torch.nn.Module:
    """Upstream ``DreamModel`` (fp32, eval, inv_freq derived as upstream) with random weights for ``raw``."""
    package = import_dream()
    model = package.DreamModel(package.DreamConfig(**_model_config_kwargs(raw or tiny_dream_config())))
    return randomize_(model, seed).eval()


def native_twin(reference: torch.nn.Module, raw: dict):
    """The native backend for ``raw`` (``model_type`` picks LLaDA / Dream / LLaDA2) holding ``reference``'s weights
    (shared tensors), via :meth:`unmask.models.native.BidirectionalLM.from_state_dict`."""
    from unmask.models.hf import native_backend

    backend = native_backend(raw["model_type"])
    return backend.from_state_dict(backend.config_from_dict(raw), reference.state_dict())


def save_official(
    reference: torch.nn.Module, raw: dict, directory: Path, shards: int = 3, tokenizer=None, with_code: bool = False
) -> Path:
    """Write ``reference``'s weights in the hub layout: ``config.json``, ``model-0000i-of-0000n.safetensors``
    shards with ``model.safetensors.index.json`` (upstream parameter names), the tokenizer (default: the tiny
    word-level one with a chat template; a mask token only for Dream, as upstream) and, with ``with_code``,
    the upstream modeling files beside them (what a hub repository carries for ``trust_remote_code``)."""
    import tiny_hf

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_safetensors(reference.state_dict(), directory, shards)
    (directory / "config.json").write_text(json.dumps(raw, indent=2))
    tok = tokenizer or tiny_hf.tokenizer(mask=raw["model_type"].lower() == "dream", chat=True)
    tok.save_pretrained(directory)
    if with_code:
        source = LLADA_DIR if raw["model_type"].lower() == "llada" else DREAM_DIR
        for file in source.glob("*.py"):
            if file.name != "__init__.py":
                (directory / file.name).write_text(file.read_text())
    return directory
