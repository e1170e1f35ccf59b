"""Native LLaDA2.x (inclusionAI LLaDA2.0 / 2.1 mini and flash): a block-diffusion MoE transformer.

LLaDA2's checkpoints (``model_type: llada2_moe``, ``LLaDA2MoeModelLM``) are the Bailing / Ling MoE V2 design run
with block-causal attention: a query attends to every key of its own block of ``BLOCK_LENGTH`` positions and of
the blocks before it (blocks counted from the sequence start, as LLaDA2 ``generate()`` builds its
``block_diffusion_attention_mask``), logits at position ``i`` predict token ``i``. Each layer is RMSNorm ->
attention (one fused ``query_key_value`` projection, per-head RMSNorm on queries and keys, RoPE on the first
``partial_rotary_factor`` of each head's dimensions, grouped-query heads, ``dense`` output) -> RMSNorm -> either a
SwiGLU MLP (the first ``first_k_dense_replace`` layers) or a mixture of experts: a sigmoid router in float32 whose
choice adds a per-expert bias (``expert_bias``) and keeps the best ``topk_group`` of ``n_group`` groups (scored by
their two best experts), the chosen experts' scores normalised and scaled by ``routed_scaling_factor``, plus
shared experts.

Built from transformers' GLM-4-MoE layers (the same router as DeepSeek-V3, partial rotary and QK-norm):
``Glm4MoeTopkRouter``, ``Glm4MoeMLP``, ``Glm4MoeRMSNorm``, ``Glm4MoeRotaryEmbedding``, ``Glm4MoeMoE.forward``,
``Glm4MoeDecoderLayer.forward``, ``apply_rotary_pos_emb`` and transformers' attention kernels. Two small modules
are this file's own, because transformers has no layer of this layout: :class:`FusedQKVAttention` (one fused
q/k/v projection, which no GLM / DeepSeek attention has) and :class:`ExpertList` (experts as separate
``nn.Linear`` s under the checkpoint's names ``mlp.experts.{j}.gate_proj`` ..., where transformers' MoE layers hold
fused 3-D expert tensors; separate linears also keep bitsandbytes 4-bit working and the per-expert arithmetic
upstream's). ``LLADA2_NAMES`` maps the parameter names.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers import Glm4MoeConfig
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.glm4_moe.modeling_glm4_moe import (
    Glm4MoeDecoderLayer,
    Glm4MoeMLP,
    Glm4MoeMoE,
    Glm4MoeRMSNorm,
    Glm4MoeRotaryEmbedding,
    Glm4MoeTopkRouter,
    apply_rotary_pos_emb,
    eager_attention_forward,
)

from unmask.models.native import BidirectionalLM, prefix_mapping

BLOCK_LENGTH = 32  # LLaDA2's training block (generate()'s block_length default; every released checkpoint)
MASK_TOKEN_ID = 156895  # generate()'s mask_id default (LLaDA2.0 / 2.1 tokenizer "<|mask|>")

# LLaDA2 checkpoint name prefixes -> this module tree's ({i}: a layer index), in order
LLADA2_NAMES = {
    "model.word_embeddings.": "model.embed_tokens.",
    "model.layers.{i}.attention.dense.": "model.layers.{i}.self_attn.o_proj.",
    "model.layers.{i}.attention.query_layernorm.": "model.layers.{i}.self_attn.q_norm.",
    "model.layers.{i}.attention.key_layernorm.": "model.layers.{i}.self_attn.k_norm.",
    "model.layers.{i}.attention.": "model.layers.{i}.self_attn.",
    "model.layers.{i}.mlp.gate.expert_bias": "model.layers.{i}.mlp.gate.e_score_correction_bias",
}

# LLaDA2MoeConfig defaults (configuration_llada2_moe.py) of the keys read here
DEFAULTS = {
    "vocab_size": 30592,
    "hidden_size": 1024,
    "intermediate_size": None,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "num_key_value_heads": 0,
    "hidden_act": "silu",
    "use_qkv_bias": False,
    "use_qk_norm": True,
    "use_bias": True,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "max_position_embeddings": 16384,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "pad_token_id": 126081,
    "eos_token_id": None,
    "num_experts": 16,
    "num_shared_experts": 0,
    "num_experts_per_tok": 2,
    "n_group": 8,
    "topk_group": 4,
    "routed_scaling_factor": 2.5,
    "moe_intermediate_size": None,
    "first_k_dense_replace": 0,
    "head_dim": None,
    "partial_rotary_factor": 0.5,
    "mask_token_id": MASK_TOKEN_ID,
}
REMOTE = "load this variant with its own code: --remote-code --trust-remote-code"


def llada2_config(raw: dict) -> Glm4MoeConfig:
    """The ``Glm4MoeConfig`` that runs a LLaDA2 ``config.json`` (``configuration_llada2_moe.LLaDA2MoeConfig`` keys)."""
    c = {**DEFAULTS, **raw}
    if c["rope_scaling"]:
        raise ValueError(
            f"LLaDA2 config sets rope_scaling={c['rope_scaling']!r}, which the native backend does not implement; {REMOTE}"
        )
    if c.get("score_function", "sigmoid") != "sigmoid":
        raise ValueError(
            f"LLaDA2 config has score_function={c['score_function']!r}; LLaDA2 routes with sigmoid scores; {REMOTE}"
        )
    if not c["num_experts"] or c["num_shared_experts"] is None:
        raise ValueError(
            "LLaDA2 config has no routed experts (num_experts) or no num_shared_experts: a dense variant the native "
            f"LLaDA2 backend does not implement (every LLaDA2.x checkpoint is MoE); {REMOTE}"
        )
    heads, kv_heads = c["num_attention_heads"], c["num_key_value_heads"]
    if not kv_heads or heads % kv_heads or c["num_experts"] % c["n_group"]:
        raise ValueError(
            f"LLaDA2 config: num_key_value_heads ({kv_heads}) must be > 0 and divide num_attention_heads ({heads}), "
            f"and n_group ({c['n_group']}) must divide num_experts ({c['num_experts']})"
        )
    config = Glm4MoeConfig(
        vocab_size=c["vocab_size"],
        hidden_size=c["hidden_size"],
        intermediate_size=c["intermediate_size"],
        num_hidden_layers=c["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=c["head_dim"] or c["hidden_size"] // heads,
        hidden_act=c["hidden_act"],
        max_position_embeddings=c["max_position_embeddings"],
        rms_norm_eps=c["rms_norm_eps"],
        rope_parameters={
            "rope_type": "default",
            "rope_theta": float(c["rope_theta"]),
            "partial_rotary_factor": float(c["partial_rotary_factor"]),
        },
        tie_word_embeddings=bool(c["tie_word_embeddings"]),
        attention_bias=bool(c["use_qkv_bias"]),
        use_qk_norm=bool(c["use_qk_norm"]),
        moe_intermediate_size=c["moe_intermediate_size"],
        num_experts_per_tok=c["num_experts_per_tok"],
        n_shared_experts=c["num_shared_experts"],
        n_routed_experts=c["num_experts"],
        routed_scaling_factor=float(c["routed_scaling_factor"]),
        n_group=c["n_group"],
        topk_group=c["topk_group"],
        first_k_dense_replace=c["first_k_dense_replace"],
        norm_topk_prob=c["num_experts_per_tok"] > 1,  # LLaDA2MoeGate normalises whenever top_k > 1
        use_cache=False,
        pad_token_id=c["pad_token_id"],
        eos_token_id=c["eos_token_id"],
        bos_token_id=None,
    )
    config.output_bias = bool(c["use_bias"])  # the attention output projection's bias (LLaDA2 use_bias)
    config.mask_token_id = c["mask_token_id"]
    config.block_length = BLOCK_LENGTH
    return config


class FusedQKVAttention(nn.Module):
    """Grouped-query attention with one fused ``query_key_value`` projection (split as [q heads, k heads, v heads]),
    QK-norm before partial RoPE (GLM-4-MoE's ``apply_rotary_pos_emb``) and transformers' attention kernels."""

    def __init__(self, config: Glm4MoeConfig, layer_idx: int) -> None:
        super().__init__()
        self.config, self.layer_idx = config, layer_idx
        self.head_dim = config.head_dim
        self.num_heads, self.num_kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.num_key_value_groups = self.num_heads // self.num_kv_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = 0.0
        self.is_causal = False
        width = (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
        self.query_key_value = nn.Linear(config.hidden_size, width, bias=config.attention_bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=config.output_bias)
        if config.use_qk_norm:
            self.q_norm = Glm4MoeRMSNorm(self.head_dim, eps=config.rms_norm_eps)
            self.k_norm = Glm4MoeRMSNorm(self.head_dim, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
        cache=None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        shape = hidden_states.shape[:-1]
        qkv = self.query_key_value(hidden_states).view(*shape, -1, self.head_dim)
        q, k, v = (t.transpose(1, 2) for t in qkv.split([self.num_heads, self.num_kv_heads, self.num_kv_heads], -2))
        if self.config.use_qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rotary_pos_emb(q, k, *position_embeddings)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        kwargs.pop("position_ids", None)
        kwargs.pop("use_cache", None)
        out, weights = attention(self, q, k, v, attention_mask, dropout=0.0, scaling=self.scaling, **kwargs)
        return self.o_proj(out.reshape(*shape, -1).contiguous()), weights


class ExpertList(nn.ModuleList):
    """The routed experts as separate SwiGLU MLPs (``Glm4MoeMLP``), called as transformers' fused expert modules
    are: ``(hidden (T, D), top_k_index (T, k), top_k_weights (T, k)) -> (T, D)``; each token's k expert outputs are
    weighted and summed in the weights' dtype (LLaDA2 ``moe_infer``)."""

    def __init__(self, config: Glm4MoeConfig) -> None:
        super().__init__(Glm4MoeMLP(config, config.moe_intermediate_size) for _ in range(config.n_routed_experts))

    def forward(self, hidden: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
        out = hidden.new_zeros((*top_k_index.shape, hidden.shape[-1]))
        for e in top_k_index.unique().tolist():
            token, slot = (top_k_index == e).nonzero(as_tuple=True)
            out[token, slot] = self[e](hidden[token])
        return (out.to(top_k_weights.dtype) * top_k_weights.unsqueeze(-1)).sum(1).to(hidden.dtype)


class LLaDA2MoE(Glm4MoeMoE):
    """GLM-4-MoE's routed + shared experts block (its router and ``forward``) over an :class:`ExpertList`."""

    def __init__(self, config: Glm4MoeConfig) -> None:
        nn.Module.__init__(self)
        self.config = config
        self.experts = ExpertList(config)
        self.gate = Glm4MoeTopkRouter(config)
        self.shared_experts = Glm4MoeMLP(config, config.moe_intermediate_size * config.n_shared_experts)


class LLaDA2DecoderLayer(Glm4MoeDecoderLayer):
    """GLM-4-MoE's decoder layer (its ``forward``) with :class:`FusedQKVAttention` and :class:`LLaDA2MoE`."""

    def __init__(self, config: Glm4MoeConfig, layer_idx: int) -> None:
        super(Glm4MoeDecoderLayer, self).__init__()
        self.hidden_size = config.hidden_size
        self.self_attn = FusedQKVAttention(config, layer_idx)
        self.mlp = LLaDA2MoE(config) if layer_idx >= config.first_k_dense_replace else Glm4MoeMLP(config)
        self.input_layernorm = Glm4MoeRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = Glm4MoeRMSNorm(config.hidden_size, eps=config.rms_norm_eps)


class LLaDA2(BidirectionalLM):
    """LLaDA2.x on transformers' GLM-4-MoE layers with block-causal attention (see the module docstring)."""

    config_class = Glm4MoeConfig
    layer_class = LLaDA2DecoderLayer
    norm_class = Glm4MoeRMSNorm
    rotary_class = Glm4MoeRotaryEmbedding
    checkpoint_names = LLADA2_NAMES
    key_mapping = prefix_mapping(LLADA2_NAMES)
    family = "LLaDA2"
    style = "llada"
    block_causal = True
    _supports_flash_attn = False  # flash-attention kernels take a padding mask only, not the block mask
    config_from_dict = staticmethod(llada2_config)
    _no_split_modules = ["LLaDA2DecoderLayer"]
