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

from unmask.models.dream import DEFAULTS as DREAM_DEFAULTS
from unmask.models.native import BidirectionalLM, qwen_style_config

BLOCK_LENGTH = 4  # SDAR's default models ("block size 4 throughout training")

# SDARConfig defaults (configuration_sdar.py) of the keys read here: DreamConfig's (both Qwen's) but these
DEFAULTS = {
    **DREAM_DEFAULTS,
    "head_dim": 128,
    "attention_bias": False,
    "pad_token_id": None,
    "mask_token_id": None,
}


def sdar_config(raw: dict) -> Qwen3Config:
    """The ``Qwen3Config`` that runs an SDAR ``config.json`` (``configuration_sdar.SDARConfig`` keys)."""
    c = {**DEFAULTS, **raw}
    block = c.get("block_length") or c.get("block_size") or BLOCK_LENGTH
    if not isinstance(block, int) or block < 1:
        raise ValueError(f"SDAR config: block_length must be an integer >= 1, got {block!r}")
    config = qwen_style_config(
        Qwen3Config,
        c,
        "SDAR",
        "the released SDAR models",
        head_dim=c["head_dim"],
        attention_bias=bool(c["attention_bias"]),
    )
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
    _supports_flash_attn = False  # flash-attention kernels take a padding mask only, not the block mask
    block_length_option = True
    tokenizer_class = "Qwen2Tokenizer"  # SDAR ships Qwen3's tokenizer files
    config_from_dict = staticmethod(sdar_config)
    _no_split_modules = ["Qwen3DecoderLayer"]
