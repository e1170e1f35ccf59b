"""Native dLLM backends: bidirectional transformers built from transformers' own Llama / Qwen2 layers.

LLaDA (Nie et al. 2025) and Dream (Ye et al. 2025) are decoder-shaped transformers run without a causal
mask. :class:`BidirectionalLM` composes transformers' maintained building blocks (the family's decoder layer,
RMSNorm and rotary embedding) and drives them with a bidirectional attention mask
(``masking_utils.create_bidirectional_mask``: padding keys masked, no causal triangle) and ``is_causal=False``
on every attention module, so SDPA / flash attention, bf16, ``device_map``, bitsandbytes 4-bit and
transformers' ``Cache`` classes work as for any transformers model. No code from the checkpoint runs.

A family (``unmask.models.llada``, ``unmask.models.dream``) is a subclass that names its layer classes, how its
``config.json`` becomes a transformers config, and how its checkpoint's parameter names map onto this module
tree (``checkpoint_names``, and as ``key_mapping`` regexes the way ``from_pretrained(key_mapping=...)`` takes them).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils.deprecation import deprecate_kwarg

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"


def prefix_mapping(names: dict[str, str]) -> dict[str, str]:
    """``key_mapping`` regexes for checkpoint -> module tree name prefixes (``{i}``: a layer index)."""
    return {
        "^" + re.escape(stored).replace(r"\{i\}", r"(\d+)"): ours.replace("{i}", r"\1")
        for stored, ours in names.items()
    }


def qwen_style_config(config_class: type, c: dict, family: str, example: str, **extra: Any) -> PretrainedConfig:
    """The transformers Qwen2 / Qwen3 config (``config_class``) of a Qwen-style ``config.json`` ``c`` (the family's
    defaults applied): the keys Dream and SDAR share, plus ``extra``; ``rope_scaling`` and sliding-window variants,
    which ``example`` lacks, are refused."""
    for key in ("rope_scaling", "use_sliding_window"):
        if c[key]:
            raise ValueError(
                f"{family} config sets {key}={c[key]!r}, which the native {family} backend does not implement "
                f"({example} has none); load this variant with its own code: --remote-code --trust-remote-code"
            )
    config = config_class(
        vocab_size=c["vocab_size"],
        hidden_size=c["hidden_size"],
        intermediate_size=c["intermediate_size"],
        num_hidden_layers=c["num_hidden_layers"],
        num_attention_heads=c["num_attention_heads"],
        num_key_value_heads=c["num_key_value_heads"] or c["num_attention_heads"],
        hidden_act=c["hidden_act"],
        max_position_embeddings=c["max_position_embeddings"],
        rms_norm_eps=c["rms_norm_eps"],
        rope_parameters={"rope_type": "default", "rope_theta": float(c["rope_theta"])},
        tie_word_embeddings=bool(c["tie_word_embeddings"]),
        use_sliding_window=False,
        use_cache=False,
        pad_token_id=c["pad_token_id"],
        bos_token_id=c["bos_token_id"],
        eos_token_id=c["eos_token_id"],
        **extra,
    )
    if c["mask_token_id"] is not None:
        config.mask_token_id = c["mask_token_id"]
    return config


def block_causal_function(block_length: int) -> Callable[[int, int, int, int], bool]:
    """transformers' mask-function form of block-causal attention (block diffusion, Arriola et al. 2025): query
    ``q`` sees key ``k`` when ``k``'s block is not after ``q``'s, blocks of ``block_length`` counted from position 0
    (indices are absolute: a cached window's queries are offset by its start)."""

    def visible(batch_idx, head_idx, q_idx, kv_idx):
        return kv_idx // block_length <= q_idx // block_length

    return visible


class BidirectionalBackbone(nn.Module):
    """Embeddings, ``config.num_hidden_layers`` decoder layers, final RMSNorm and the shared rotary embedding
    (the module tree and parameter names of transformers' ``LlamaModel`` / ``Qwen2Model``)."""

    def __init__(self, config: PretrainedConfig, layer_class: type, norm_class: type, rotary_class: type) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(layer_class(config, i) for i in range(config.num_hidden_layers))
        for layer in self.layers:
            layer.self_attn.is_causal = False  # sdpa / flash kernels read this flag; eager uses the mask alone
        self.norm = norm_class(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = rotary_class(config=config)


class BidirectionalLM(PreTrainedModel):
    """A masked diffusion LM: ``logits = lm_head(norm(layers(embed(x))))`` with full (non-causal) attention.

    ``forward`` takes transformers' arguments: a 2-D ``attention_mask`` (1 = real token, 0 = padding; with a
    cache it covers cached + new positions), ``position_ids`` (default: counted from the cache length),
    ``cache`` (alias ``past_key_values``, any transformers ``Cache``) and ``use_cache``. Hidden states follow
    the reference models' convention: the input of every layer, then the final normed state
    (``num_hidden_layers + 1`` entries).
    """

    layer_class: ClassVar[type]
    norm_class: ClassVar[type]
    rotary_class: ClassVar[type]
    checkpoint_names: ClassVar[dict[str, str]] = {}  # checkpoint name prefix -> this module tree's ({i}: layer)
    key_mapping: ClassVar[dict[str, str]] = {}  # the same as regexes (prefix_mapping), as from_pretrained takes them
    family: ClassVar[str]
    style: ClassVar[str]  # the unmask.models.hf style: how logits line up with positions ("llada": same, "dream": +1)
    block_causal: ClassVar[bool] = False  # attention within a block and to earlier ones (config.block_length)
    block_length_option: ClassVar[bool] = False  # the block may be given at load time (config.json lacks it: SDAR)
    config_from_dict: ClassVar[
        Callable[[dict], PretrainedConfig]
    ]  # config.json -> transformers config (ValueError: variant)
    base_model_prefix = "model"
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__(config)
        self.model = BidirectionalBackbone(config, self.layer_class, self.norm_class, self.rotary_class)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        x = self.model.embed_tokens(input_ids)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            position_ids = (torch.arange(x.shape[1], device=x.device) + past).unsqueeze(0)
        mask = create_bidirectional_mask(
            config=self.config,
            inputs_embeds=x,
            attention_mask=attention_mask,
            cache=cache,
            and_mask_function=block_causal_function(self.config.block_length) if self.block_causal else None,
        )
        rope = self.model.rotary_emb(x, position_ids=position_ids)
        hidden = []
        for layer in self.model.layers:
            if output_hidden_states:
                hidden.append(x)
            x = layer(
                x,
                attention_mask=mask,
                position_ids=position_ids,
                cache=cache,
                use_cache=use_cache,
                position_embeddings=rope,
                **kwargs,
            )
        x = self.model.norm(x)
        if output_hidden_states:
            hidden.append(x)
        return CausalLMOutputWithPast(
            logits=self.lm_head(x),
            cache=cache if use_cache else None,
            hidden_states=tuple(hidden) if output_hidden_states else None,
        )

    @classmethod
    def rename(cls, name: str) -> str:
        """A checkpoint parameter name in this module tree's naming (``key_mapping`` applied in order)."""
        for pattern, replacement in cls.key_mapping.items():
            name = re.sub(pattern, replacement, name)
        return name

    @classmethod
    def checkpoint_name(cls, name: str) -> str:
        """The checkpoint's name of one of this module tree's parameters (the inverse of :meth:`rename`)."""
        for stored, ours in cls.checkpoint_names.items():
            found = re.match(re.escape(ours).replace(r"\{i\}", r"(\d+)"), name)
            if found:
                return stored.replace("{i}", found.group(1) if found.groups() else "") + name[found.end() :]
        return name

    @classmethod
    def from_state_dict(cls, config: PretrainedConfig, state_dict: dict[str, torch.Tensor]) -> BidirectionalLM:
        """This backend holding ``state_dict`` (checkpoint names), sharing its tensors (no copy): how tests load
        the reference model's weights and how the remote-code self-check compares without doubling memory."""
        with torch.device("meta"):
            model = cls(config)
        state_dict = {k: v for k, v in state_dict.items() if not k.endswith("inv_freq")}
        check_tensors(model, {k: tuple(v.shape) for k, v in state_dict.items()}, f"{cls.family} weights")
        model.load_state_dict({cls.rename(k): v for k, v in state_dict.items()}, strict=False, assign=True)
        if config.tie_word_embeddings:
            model.lm_head.weight = model.model.embed_tokens.weight
        model.model.rotary_emb = cls.rotary_class(config=config).to(model.model.embed_tokens.weight.device)
        return model.eval()


def expected_tensors(model: BidirectionalLM) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape the checkpoint must hold (the tied head is not stored)."""
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        shapes.pop("lm_head.weight", None)
    return shapes


def check_tensors(model: BidirectionalLM, found: dict[str, tuple[int, ...]], source: str) -> None:
    """One clear error when a checkpoint's tensors (name -> shape, checkpoint names) do not fit the model's
    parameters; extra and mis-shaped tensors are named as in the checkpoint, missing ones as in this module tree."""
    want = expected_tensors(model)
    original = {model.rename(k): k for k in found}
    shapes = {model.rename(k): v for k, v in found.items()}
    missing = sorted(set(want) - set(shapes))
    extra = sorted(original[k] for k in set(shapes) - set(want))
    wrong = sorted(k for k in set(want) & set(shapes) if want[k] != shapes[k])
    if not (missing or extra or wrong):
        return
    family, parts = model.family, []
    if missing:
        parts.append(f"missing {len(missing)} parameters (e.g. {', '.join(missing[:3])})")
    if extra:
        parts.append(f"{len(extra)} parameters the {family} architecture does not have (e.g. {', '.join(extra[:3])})")
    if wrong:
        parts.append(
            "wrong shapes: "
            + ", ".join(f"{original[k]} is {shapes[k]}, config.json implies {want[k]}" for k in wrong[:3])
        )
    raise ValueError(
        f"{source} do not fit the native {family} backend built from config.json: {'; '.join(parts)}. "
        f"Check that config.json belongs to these weights (an incomplete download or an edited config?), or load the "
        f"repository's own code with --remote-code --trust-remote-code if this is a {family} variant"
    )


def checkpoint_tensors(path: Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in a local safetensors checkpoint (headers only, nothing loaded); one clear
    error for a missing shard or a missing weights file."""
    from safetensors import SafetensorError, safe_open

    index = path / SAFETENSORS_INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = sorted(set(weight_map.values()))
        absent = [f for f in files if not (path / f).is_file()]
        if absent:
            raise FileNotFoundError(
                f"{path}: {len(absent)} of the {len(files)} shards listed in {SAFETENSORS_INDEX} are missing "
                f"({', '.join(absent[:3])}); download the checkpoint again (e.g. `hf download REPO --local-dir {path}`)"
            )
    elif (path / SAFETENSORS_SINGLE).is_file():
        files = [SAFETENSORS_SINGLE]
    else:
        raise FileNotFoundError(
            f"{path}: no safetensors weights ({SAFETENSORS_INDEX} or {SAFETENSORS_SINGLE}); the native backends read "
            "safetensors only: convert the checkpoint, or download the safetensors files"
        )
    shapes: dict[str, tuple[int, ...]] = {}
    for name in files:
        try:
            with safe_open(str(path / name), framework="pt") as f:
                for key in f.keys():
                    shapes[key] = tuple(f.get_slice(key).get_shape())
        except SafetensorError as e:
            raise ValueError(
                f"{path / name} is not a complete safetensors file ({e}): a cut or corrupt download; "
                f"download it again (e.g. `hf download REPO --local-dir {path}`)"
            ) from None
    return shapes
