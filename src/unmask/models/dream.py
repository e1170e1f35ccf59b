"""Native Dream (Ye et al. 2025, "Dream 7B"): a Qwen2-shaped bidirectional transformer with shifted logits.

Dream's checkpoints (Dream-org/Dream-v0-Instruct-7B / -Base-7B) keep Qwen2's module tree and parameter names
(``model.layers.N.self_attn.q_proj`` with q/k/v biases, ``mlp.gate_proj`` ..., ``model.norm``, ``lm_head``) and
run it with full attention (Dream ``modeling_dream.DreamSdpaAttention``: ``is_causal=False``). This backend runs
transformers' ``Qwen2DecoderLayer`` / ``Qwen2RMSNorm`` / ``Qwen2RotaryEmbedding`` on the checkpoint as is. As
trained from Qwen2.5, logits at position ``i`` predict token ``i + 1``; the MDM wrapper shifts them
(Dream ``generation_utils._sample``: ``cat([logits[:, :1], logits[:, :-1]])``). ``mask_token_id`` is 151666.
"""

from __future__ import annotations

from transformers import Qwen2Config
from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer, Qwen2RMSNorm, Qwen2RotaryEmbedding

from unmask.models.native import BidirectionalLM, qwen_style_config

# DreamConfig defaults (configuration_dream.py) of the keys read here
DEFAULTS = {
    "vocab_size": 151936,
    "hidden_size": 4096,
    "intermediate_size": 22016,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "hidden_act": "silu",
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "use_sliding_window": False,
    "mask_token_id": 151666,
    "pad_token_id": 151643,
    "bos_token_id": None,
    "eos_token_id": None,
}


def dream_config(raw: dict) -> Qwen2Config:
    """The ``Qwen2Config`` that runs a Dream ``config.json`` (Dream ``configuration_dream.DreamConfig`` keys)."""
    return qwen_style_config(Qwen2Config, {**DEFAULTS, **raw}, "Dream", "Dream-7B")


class Dream(BidirectionalLM):
    """Dream on transformers' Qwen2 layers (see the module docstring); load with :func:`unmask.models.hf.load_hf_model`."""

    config_class = Qwen2Config
    layer_class = Qwen2DecoderLayer
    norm_class = Qwen2RMSNorm
    rotary_class = Qwen2RotaryEmbedding
    family = "Dream"
    tokenizer_class = "Qwen2Tokenizer"  # when AutoTokenizer needs Dream's tokenization_dream.py
    style = "dream"
    config_from_dict = staticmethod(dream_config)
    _no_split_modules = ["Qwen2DecoderLayer"]
