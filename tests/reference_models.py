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
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from unmask.models.tiny import EOS, MASK, PAD, randomize_, save_safetensors, tiny_dream_config, tiny_llada_config  # noqa: F401

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "fast_dllm"
LLADA_DIR = REFERENCE / "llada" / "model"
DREAM_DIR = REFERENCE / "dream" / "model"


def _import_package(name: str, folder: Path) -> ModuleType:
    if not folder.is_dir():
        pytest.skip(f"reference code {folder} is absent")
    pytest.importorskip("einops")
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

        def default_rope(config, device=None, **kwargs):
            dim = config.hidden_size // config.num_attention_heads
            inv_freq = 1.0 / (
                config.rope_theta
                ** (torch.arange(0, dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float) / dim)
            )
            return inv_freq, 1.0

        modeling.ROPE_INIT_FUNCTIONS = {**modeling.ROPE_INIT_FUNCTIONS, "default": default_rope}
    return package


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
    """The native backend for ``raw`` (``model_type`` picks LLaDA / Dream) holding ``reference``'s weights
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
