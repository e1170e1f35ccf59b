"""Native SDAR (JetAstra, "Synergistic Diffusion-AutoRegression"): a Qwen3 transformer run with block-causal attention.

SDAR's checkpoints (``model_type: sdar``, ``SDARForCausalLM``) keep Qwen3's module tree and parameter names
(``model.layers.N.self_attn.q_proj`` ..., per-head ``q_norm`` / ``k_norm``, ``model.norm``, ``lm_head``) and attend
block-causally: a query sees its own block and the blocks before it, blocks counted from the sequence start
(SDAR ``block_diffusion_generate``'s ``block_diffusion_attention_mask``). Logits at position ``i`` predict token
``i``. This backend runs transformers' ``Qwen3DecoderLayer`` / ``Qwen3RMSNorm`` / ``Qwen3RotaryEmbedding`` on the
checkpoint as is, with the block-causal mask of :class:`unmask.models.native.BidirectionalLM`.

The block size is the one the checkpoint was trained with, which its ``config.json`` does not record: SDAR's
default models use 4 (``BLOCK_LENGTH``); the -b8 ... -b64 variants are loaded with
``load_model("hf:...", block_length=N)`` (or a ``block_length`` / ``block_size`` key in ``config.json``).
"""

from __future__ import annotations

from transformers import Qwen3Config
from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer, Qwen3RMSNorm, Qwen3RotaryEmbedding

from unmask.models.native import BidirectionalLM

BLOCK_LENGTH = 4  # SDAR's default models ("block size 4 throughout training")

# SDARConfig defaults (configuration_sdar.py) of the keys read here
DEFAULTS = {
    "vocab_size": 151936,
    "hidden_size": 4096,
    "intermediate_size": 22016,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "head_dim": 128,
    "hidden_act": "silu",
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "attention_bias": False,
    "use_sliding_window": False,
    "pad_token_id": None,
    "bos_token_id": None,
    "eos_token_id": None,
    "mask_token_id": None,
}


def sdar_config(raw: dict) -> Qwen3Config:
    """The ``Qwen3Config`` that runs an SDAR ``config.json`` (``configuration_sdar.SDARConfig`` keys)."""
    c = {**DEFAULTS, **raw}
    for key in ("rope_scaling", "use_sliding_window"):
        if c[key]:
            raise ValueError(
                f"SDAR config sets {key}={c[key]!r}, which the native SDAR backend does not implement (the released "
                "SDAR models have none); load this variant with its own code: --remote-code --trust-remote-code"
            )
    block = c.get("block_length") or c.get("block_size") or BLOCK_LENGTH
    if not isinstance(block, int) or block < 1:
        raise ValueError(f"SDAR config: block_length must be an integer >= 1, got {block!r}")
    config = Qwen3Config(
        vocab_size=c["vocab_size"],
        hidden_size=c["hidden_size"],
        intermediate_size=c["intermediate_size"],
        num_hidden_layers=c["num_hidden_layers"],
        num_attention_heads=c["num_attention_heads"],
        num_key_value_heads=c["num_key_value_heads"] or c["num_attention_heads"],
        head_dim=c["head_dim"],
        hidden_act=c["hidden_act"],
        max_position_embeddings=c["max_position_embeddings"],
        rms_norm_eps=c["rms_norm_eps"],
        rope_parameters={"rope_type": "default", "rope_theta": float(c["rope_theta"])},
        tie_word_embeddings=bool(c["tie_word_embeddings"]),
        attention_bias=bool(c["attention_bias"]),
        use_sliding_window=False,
        use_cache=False,
        pad_token_id=c["pad_token_id"],
        bos_token_id=c["bos_token_id"],
        eos_token_id=c["eos_token_id"],
    )
    if c["mask_token_id"] is not None:
        config.mask_token_id = c["mask_token_id"]
    config.block_length = block
    return config


class SDAR(BidirectionalLM):
    """SDAR on transformers' Qwen3 layers with block-causal attention (see the module docstring)."""

    config_class = Qwen3Config
    layer_class = Qwen3DecoderLayer
    norm_class = Qwen3RMSNorm
    rotary_class = Qwen3RotaryEmbedding
    family = "SDAR"
    style = "llada"
    block_causal = True
    block_length_option = True
    tokenizer_class = "Qwen2Tokenizer"  # SDAR ships Qwen3's tokenizer files
    config_from_dict = staticmethod(sdar_config)
    _no_split_modules = ["Qwen3DecoderLayer"]
