"""Tiny random LLaDA / Dream / DiffusionGemma checkpoints in the real layout (``unmask make-tiny``): try the Hugging Face path on a
CPU in seconds, with nothing downloaded.

Each checkpoint is what a hub repository holds: ``config.json`` with the family's own keys (LLaDA's
``configuration_llada`` names, Dream's ``configuration_dream`` ones, shaped like LLaDA-8B / Dream-7B at width 32:
grouped-query attention, SwiGLU, RMSNorm, RoPE, an untied head, Dream's q/k/v biases), ``model.safetensors``
(or shards with ``model.safetensors.index.json``) under the upstream parameter names, and a word-level
tokenizer with a chat template (a mask token for Dream; LLaDA names its mask in ``config.json``, as upstream).
``load_model("hf:DIR")`` runs them on the native backends (:mod:`unmask.models.native`). A DiffusionGemma one is
transformers' own ``DiffusionGemmaForBlockDiffusion`` at width 32 (2 layers, one sliding and one global, MoE with 4
experts of which 2 are active, a 1-layer vision tower, canvases of 8 tokens), saved by ``save_pretrained``. The weights are random
and large (std 0.3, norm weights around 1), so wrong wiring shows in the logits; the answers are noise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from unmask.core.config import Config, option

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[EOS]", "<user>", "<assistant>"]
WORDS = (
    SPECIALS
    + list("0123456789")
    + ["what", "is", "the", "answer", "+", "-", "=", "?", ".", "\\", "boxed", "{", "}", "#"]
)
CHAT_TEMPLATE = (
    "{% for m in messages %}<user> {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}<assistant> {% endif %}"
)
MASK, PAD, EOS = WORDS.index("[MASK]"), WORDS.index("[PAD]"), WORDS.index("[EOS]")
FAMILIES = ("llada", "dream", "llada2", "sdar", "diffusion_gemma")
CONTEXT = 1024  # tokens: a GSM8K prompt and 256 generated tokens fit


def tokenizer(mask: bool = True, chat: bool = False, extra_words: int = 0):
    """A fast word-level tokenizer over :data:`WORDS` (digits one by one, other words -> ``[UNK]``); ``[CLS] text
    [SEP]`` around plain text, like BERT's."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = WORDS + [f"w{i}" for i in range(extra_words)]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(), pre_tokenizers.Digits(individual_digits=True)]
    )
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        eos_token="[EOS]",
        mask_token="[MASK]" if mask else None,
        additional_special_tokens=["<user>", "<assistant>"],
    )
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_llada_config(context: int = CONTEXT, **overrides) -> dict:
    """A LLaDA-8B-shaped ``config.json`` (LLaMA blocks, SwiGLU, RMSNorm, RoPE, untied head, GQA) at d_model 32."""
    return {
        "model_type": "llada",
        "architectures": ["LLaDAModelLM"],
        "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig", "AutoModel": "modeling_llada.LLaDAModelLM"},
        "d_model": 32,
        "n_heads": 4,
        "n_kv_heads": 2,
        "n_layers": 2,
        "mlp_hidden_size": 48,
        "mlp_ratio": 4,
        "activation_type": "silu",
        "block_type": "llama",
        "layer_norm_type": "rms",
        "rms_norm_eps": 1e-5,
        "rope": True,
        "rope_theta": 500000.0,
        "rope_full_precision": True,
        "alibi": False,
        "flash_attention": False,
        "include_bias": False,
        "include_qkv_bias": False,
        "bias_for_layer_norm": False,
        "weight_tying": False,
        "attention_dropout": 0.0,
        "residual_dropout": 0.0,
        "embedding_dropout": 0.0,
        "init_device": "cpu",
        "init_fn": "normal",
        "max_sequence_length": context,
        "vocab_size": 64,
        "embedding_size": 64,
        "mask_token_id": MASK,
        "eos_token_id": EOS,
        "pad_token_id": PAD,
        "use_cache": False,
        **overrides,
    }


def tiny_dream_config(context: int = CONTEXT, **overrides) -> dict:
    """A Dream-7B-shaped ``config.json`` (Qwen2 blocks with q/k/v biases, GQA, untied head) at hidden size 32."""
    return {
        "model_type": "Dream",
        "architectures": ["DreamModel"],
        "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
        "vocab_size": 64,
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "max_position_embeddings": context,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "tie_word_embeddings": False,
        "use_sliding_window": False,
        "attention_dropout": 0.0,
        "mask_token_id": MASK,
        "pad_token_id": PAD,
        "bos_token_id": 2,
        "eos_token_id": EOS,
        **overrides,
    }


def tiny_llada2_config(context: int = CONTEXT, **overrides) -> dict:
    """A LLaDA2.0-mini-shaped ``config.json`` (fused q/k/v, QK-norm, half-rotary RoPE, GQA, a first dense layer, then
    MoE layers: 4 sigmoid-routed experts in 2 groups, top-2 from 1 group, one shared expert) at hidden size 32."""
    return {
        "model_type": "llada2_moe",
        "architectures": ["LLaDA2MoeModelLM"],
        "auto_map": {
            "AutoConfig": "configuration_llada2_moe.LLaDA2MoeConfig",
            "AutoModel": "modeling_llada2_moe.LLaDA2MoeModelLM",
            "AutoModelForCausalLM": "modeling_llada2_moe.LLaDA2MoeModelLM",
        },
        "vocab_size": 64,
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "partial_rotary_factor": 0.5,
        "hidden_act": "silu",
        "use_qkv_bias": False,
        "use_bias": False,
        "use_qk_norm": True,
        "rms_norm_eps": 1e-6,
        "rope_theta": 600000.0,
        "rope_scaling": None,
        "max_position_embeddings": context,
        "num_experts": 4,
        "num_shared_experts": 1,
        "num_experts_per_tok": 2,
        "n_group": 2,
        "topk_group": 1,
        "routed_scaling_factor": 2.5,
        "moe_intermediate_size": 16,
        "first_k_dense_replace": 1,
        "score_function": "sigmoid",
        "tie_word_embeddings": False,
        "embedding_dropout": 0.0,
        "attention_dropout": 0.0,
        "output_dropout": 0.0,
        "mask_token_id": MASK,
        "pad_token_id": PAD,
        "eos_token_id": EOS,
        **overrides,
    }


def tiny_sdar_config(context: int = CONTEXT, **overrides) -> dict:
    """An SDAR-4B-shaped ``config.json`` (Qwen3 blocks: QK-norm, GQA, head_dim set, untied head; block size 4) at
    hidden size 32: Dream's tiny config with SDAR's keys."""
    dream = {
        k: v for k, v in tiny_dream_config(context).items() if k not in ("model_type", "architectures", "auto_map")
    }
    return {
        "model_type": "sdar",
        "architectures": ["SDARForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_sdar.SDARConfig",
            "AutoModelForCausalLM": "modeling_sdar.SDARForCausalLM",
        },
        **dream,
        "head_dim": 8,
        "rope_theta": 1000000.0,
        "attention_bias": False,
        "block_size": 4,
        "fuse_cross_entropy": False,
        "bos_token_id": None,
        **overrides,
    }


TINY_CONFIGS = {
    "llada": tiny_llada_config,
    "dream": tiny_dream_config,
    "llada2": tiny_llada2_config,
    "sdar": tiny_sdar_config,
}


def tiny_diffusion_gemma_config(context: int = CONTEXT, canvas_length: int = 8, vocab_size: int = 35) -> dict:
    """A DiffusionGemma-26B-A4B-shaped ``config.json`` at hidden size 32, built from transformers' own config classes
    (MoE sizes set; the default vision tower alone would be ~160M parameters). The image token ids are the last three
    of ``vocab_size`` (words the tiny tokenizer has but prompts never use)."""
    from transformers import DiffusionGemmaConfig
    from transformers.models.gemma4 import Gemma4VisionConfig

    text = {
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "global_head_dim": 16,
        "sliding_window": 8,
        "layer_types": ["sliding_attention", "full_attention"],
        "num_experts": 4,
        "top_k_experts": 2,
        "moe_intermediate_size": 16,
        "enable_moe_block": True,
        "max_position_embeddings": context,
        "pad_token_id": PAD,
        "eos_token_id": EOS,
        "bos_token_id": 2,
    }
    vision = Gemma4VisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
    )
    config = DiffusionGemmaConfig(
        text_config=text,
        vision_config=vision,
        canvas_length=canvas_length,
        boi_token_id=vocab_size - 3,
        eoi_token_id=vocab_size - 2,
        image_token_id=vocab_size - 1,
    )
    return config.to_dict()


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Overwrite every parameter with N(0, 0.3^2) (1-D: norm weights 1 + N(0, 0.1^2), biases N(0, 0.1^2))."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # in place: no temporary as large as a weight (benchmarks/native_backends.py measures memory)
        for name, p in model.named_parameters():
            p.normal_(generator=gen).mul_(0.1 if p.dim() == 1 else 0.3)
            if p.dim() == 1 and not name.endswith("bias"):
                p.add_(1)
    return model


def save_safetensors(state: dict[str, torch.Tensor], directory: Path, shards: int = 1) -> None:
    """``state`` (checkpoint names) as the hub stores it: ``model.safetensors``, or ``shards`` files
    ``model-0000i-of-0000n.safetensors`` with ``model.safetensors.index.json``."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in state.items() if not k.endswith("inv_freq")}
    if shards == 1:
        save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
        return
    names, weight_map = list(state), {}
    for i in range(shards):
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k] for k in names[i::shards]}
        save_file(part, str(directory / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
    total = sum(v.numel() * v.element_size() for v in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


@dataclass
class TinyConfig(Config):
    """``unmask make-tiny``: tiny random checkpoints in the real LLaDA / Dream / LLaDA2 / SDAR layout, to try hf: models on a CPU."""

    output_dir: str = option("tiny-models", "directory that receives one checkpoint per family")
    families: str = option("llada,dream", f"comma list of {', '.join(FAMILIES)}")
    context: int = option(CONTEXT, "context window in tokens (prompt + generated)", low=8)
    seed: int = option(0, "seed of the random weights", low=0)


def save_tiny(directory: str | Path, family: str, context: int = CONTEXT, seed: int = 0) -> Path:
    """Write a tiny random ``family`` (``llada`` / ``dream`` / ``llada2`` / ``sdar``) checkpoint with a ``context``-token window to
    ``directory`` (see the module docstring); load it with ``load_model(f"hf:{directory}")``."""
    from unmask.models.hf import native_backend

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; make-tiny writes {', '.join(FAMILIES)}")
    if context < 8:
        raise ValueError(f"context (--context) must be an integer >= 8 tokens, got {context}")
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"{directory} is not empty; give a new directory (make-tiny never overwrites)")
    if family == "diffusion_gemma":
        return _save_diffusion_gemma(directory, context, seed)
    raw = TINY_CONFIGS[family](context)
    backend = native_backend(raw["model_type"])
    model = randomize_(backend(backend.config_from_dict(raw)), seed)
    directory.mkdir(parents=True, exist_ok=True)
    save_safetensors({backend.checkpoint_name(k): v for k, v in model.state_dict().items()}, directory)
    (directory / "config.json").write_text(json.dumps(raw, indent=2))
    tokenizer(mask=family == "dream", chat=True).save_pretrained(directory)
    return directory


def _save_diffusion_gemma(directory: Path, context: int, seed: int) -> Path:
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion

    tok = tokenizer(chat=True, extra_words=3)
    config = DiffusionGemmaConfig.from_dict(tiny_diffusion_gemma_config(context, vocab_size=len(tok)))
    torch.manual_seed(seed)
    model = DiffusionGemmaForBlockDiffusion(config)
    randomize_(model, seed)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory
