"""Native LLaDA (Nie et al. 2025, "Large Language Diffusion Models"): a LLaMA-shaped bidirectional transformer.

LLaDA's checkpoints (GSAI-ML/LLaDA-8B-Base / -Instruct) use the OLMo-derived ``LLaDAModelLM`` layout:
``block_type: llama`` blocks of RMSNorm -> q/k/v projections -> RoPE attention (no causal mask) -> ``attn_out``,
then RMSNorm -> ``ff_out(silu(ff_proj(x)) * up_proj(x))`` (SwiGLU), a final ``ln_f`` and either a separate
``ff_out`` head or the embedding matrix (``weight_tying``). That is LLaMA's decoder layer exactly, so this
backend runs transformers' ``LlamaDecoderLayer`` / ``LlamaRMSNorm`` / ``LlamaRotaryEmbedding`` and maps the
parameter names (``LLADA_NAMES``). Logits at position ``i`` predict token ``i``; ``mask_token_id`` is
126336 on the official checkpoints.

Config keys read (LLaDA's ``configuration_llada.ModelConfig`` names, defaults as there): ``d_model``,
``n_heads``, ``n_kv_heads``, ``n_layers``, ``mlp_hidden_size`` / ``mlp_ratio``, ``rope_theta``,
``rms_norm_eps``, ``max_sequence_length``, ``vocab_size`` / ``embedding_size``, ``weight_tying`` and the token
ids. Variants this backend does not implement (other block or norm types, biases, ALiBi, QK-norm, logit
scaling) are refused with an error naming ``--remote-code``.
"""

from __future__ import annotations

from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm, LlamaRotaryEmbedding

from unmask.models.native import BidirectionalLM, prefix_mapping

# LLaDA checkpoint name prefixes -> transformers' Llama ones ({i}: a block index), in order
LLADA_NAMES = {
    "model.transformer.wte.": "model.embed_tokens.",
    "model.transformer.ln_f.": "model.norm.",
    "model.transformer.ff_out.": "lm_head.",
    "model.transformer.blocks.{i}.attn_norm.": "model.layers.{i}.input_layernorm.",
    "model.transformer.blocks.{i}.ff_norm.": "model.layers.{i}.post_attention_layernorm.",
    "model.transformer.blocks.{i}.q_proj.": "model.layers.{i}.self_attn.q_proj.",
    "model.transformer.blocks.{i}.k_proj.": "model.layers.{i}.self_attn.k_proj.",
    "model.transformer.blocks.{i}.v_proj.": "model.layers.{i}.self_attn.v_proj.",
    "model.transformer.blocks.{i}.attn_out.": "model.layers.{i}.self_attn.o_proj.",
    "model.transformer.blocks.{i}.ff_proj.": "model.layers.{i}.mlp.gate_proj.",
    "model.transformer.blocks.{i}.up_proj.": "model.layers.{i}.mlp.up_proj.",
    "model.transformer.blocks.{i}.ff_out.": "model.layers.{i}.mlp.down_proj.",
}

# ModelConfig defaults (configuration_llada.py) of the keys read here, for configs that leave them out
DEFAULTS = {
    "d_model": 768,
    "n_heads": 12,
    "n_kv_heads": None,
    "n_layers": 12,
    "mlp_ratio": 4,
    "mlp_hidden_size": None,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-5,
    "max_sequence_length": 1024,
    "vocab_size": 50257,
    "embedding_size": 50304,
    "weight_tying": True,
    "eos_token_id": 50256,
    "pad_token_id": 50256,
    "mask_token_id": 50256,
    "multi_query_attention": None,
}
# (key, value this backend implements, ModelConfig default): LLaMA-style LLaDA as the official checkpoints set it
REQUIRED = [
    ("block_type", "llama", "sequential"),
    ("activation_type", "silu", "swiglu"),
    ("layer_norm_type", "rms", "default"),
    ("rope", True, False),
    ("alibi", False, False),
    ("attention_layer_norm", False, False),
    ("include_bias", False, False),
    ("include_qkv_bias", False, False),
    ("scale_logits", False, False),
    ("input_emb_norm", False, False),
    ("block_group_size", 1, 1),
    ("layer_norm_with_affine", True, True),
]


def llada_config(raw: dict) -> LlamaConfig:
    """The ``LlamaConfig`` that runs a LLaDA ``config.json`` (LLaDA ``configuration_llada.LLaDAConfig`` keys)."""
    for key, value, default in REQUIRED:
        if raw.get(key, default) != value:
            raise ValueError(
                f"LLaDA config has {key}={raw.get(key, default)!r}; the native LLaDA backend implements the LLaMA-style "
                f"LLaDA ({key}={value!r}, as LLaDA-8B). Load this variant with its own code: --remote-code --trust-remote-code"
            )
    if raw.get("bias_for_layer_norm"):
        raise ValueError(
            "LLaDA config has bias_for_layer_norm=true, which the native LLaDA backend does not implement; "
            "load it with --remote-code --trust-remote-code"
        )
    c = {**DEFAULTS, **raw}
    heads = c["n_heads"]
    kv_heads = c["n_kv_heads"] or (1 if c["multi_query_attention"] else heads)
    if c["d_model"] % heads or heads % kv_heads:
        raise ValueError(
            f"LLaDA config: d_model {c['d_model']} must divide by n_heads {heads}, and n_heads by n_kv_heads {kv_heads}"
        )
    config = LlamaConfig(
        vocab_size=c["embedding_size"] or c["vocab_size"],
        hidden_size=c["d_model"],
        intermediate_size=c["mlp_hidden_size"] or c["mlp_ratio"] * c["d_model"],
        num_hidden_layers=c["n_layers"],
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=c["d_model"] // heads,
        hidden_act="silu",
        max_position_embeddings=c["max_sequence_length"],
        rms_norm_eps=c["rms_norm_eps"],
        rope_parameters={"rope_type": "default", "rope_theta": float(c["rope_theta"])},
        tie_word_embeddings=bool(c["weight_tying"]),
        attention_bias=False,
        mlp_bias=False,
        use_cache=False,
        pad_token_id=c["pad_token_id"],
        eos_token_id=c["eos_token_id"],
        bos_token_id=None,
    )
    config.mask_token_id = c["mask_token_id"]
    return config


class LLaDA(BidirectionalLM):
    """LLaDA on transformers' Llama layers (see the module docstring); load with :func:`unmask.models.hf.load_hf_model`."""

    config_class = LlamaConfig
    layer_class = LlamaDecoderLayer
    norm_class = LlamaRMSNorm
    rotary_class = LlamaRotaryEmbedding
    checkpoint_names = LLADA_NAMES
    key_mapping = prefix_mapping(LLADA_NAMES)
    family = "LLaDA"
    style = "llada"
    config_from_dict = staticmethod(llada_config)
    _no_split_modules = ["LlamaDecoderLayer"]
