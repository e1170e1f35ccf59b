"""Hugging Face dLLMs as MDMs (``hf:NAME_OR_PATH``): LLaDA, Dream and any masked LM.

One backend, three *styles* that differ only in how logits line up with
positions and how a padded batch is passed to the model:

- ``llada``: ``logits[:, i]`` predicts position ``i`` (LLaDA's ``generate()``);
  2-D attention mask. Needs ``trust_remote_code``; mask id from the config
  (``mask_token_id``, 126336 for LLaDA) or the tokenizer.
- ``dream``: ``logits[:, i]`` predicts position ``i + 1``; as Dream's sampler
  (``generation_utils._sample``) we shift right by one, repeating the first
  position: ``cat([logits[:, :1], logits[:, :-1]])``. Padded batches get a
  (B, 1, L, L) boolean mask and position ids counted over real tokens, as that
  sampler builds them. Needs ``trust_remote_code``; mask token from the tokenizer.
- ``masked_lm``: any ``AutoModelForMaskedLM`` (BERT, ModernBERT, ...); logits at
  the same position; 2-D attention mask.

The style comes from ``config.model_type`` (``llada*``, ``dream*``, or a masked-LM
architecture) unless given. Padded batches also pass position ids counted over
real tokens wherever the model's ``forward`` takes them, so left padding does
not move a prompt's positions. Hidden features (for learned policies, UPO
App. B.1) are one layer of ``output_hidden_states`` (default: the last), aligned
like the logits. Forwards run under ``torch.no_grad`` with frozen weights.
Weights load from safetensors only unless ``allow_pickle=True``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from unmask.models.base import MaskedDiffusionModel, MDMOutput, resolve_device

DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}
CONTEXT_KEYS = ("max_position_embeddings", "max_sequence_length", "n_positions")


@dataclass(frozen=True)
class HFStyle:
    """How one family of dLLMs lines up logits and reads padding."""

    name: str
    logit_shift: int  # 1: logits at i predict token i + 1 (Dream)
    pairwise_mask: bool  # padded batches get a (B, 1, L, L) bool mask (Dream's sampler) instead of (B, L)


STYLES = {s.name: s for s in (HFStyle("llada", 0, False), HFStyle("dream", 1, True), HFStyle("masked_lm", 0, False))}


def resolve_style(model_type: str, style: str | None) -> HFStyle:
    """The explicit ``style``, else the one ``model_type`` implies."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    if style is not None:
        if style not in STYLES:
            raise ValueError(f"unknown hf style {style!r}; valid styles: {', '.join(STYLES)}")
        return STYLES[style]
    kind = model_type.lower()
    if kind.startswith("llada"):
        return STYLES["llada"]
    if kind.startswith("dream"):
        return STYLES["dream"]
    if kind in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return STYLES["masked_lm"]
    raise ValueError(
        f"cannot tell how model_type {model_type!r} predicts masked tokens; pass --hf-style llada (logits at the "
        "same position), dream (logits shifted by one) or masked_lm"
    )


class HFMaskedDiffusionModel(MaskedDiffusionModel):
    """A ``transformers`` model and its tokenizer behind the MDM interface.

    Besides the MDM attributes it exposes what text tasks need: ``tokenizer``,
    ``pad_id`` (left padding), ``stop_ids`` (end of a completion) and
    ``max_length`` (the context, None if the config does not say).
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, style: HFStyle, mask_id: int, name: str, hidden_layer: int = -1) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.style = style
        self.mask_id = int(mask_id)
        self.name = name
        self.hidden_layer = hidden_layer
        config = model.config
        self.max_length = next((getattr(config, k) for k in CONTEXT_KEYS if getattr(config, k, None)), None)
        self.pad_id = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)
        self.stop_ids = self._stop_ids()
        self._takes_position_ids = "position_ids" in inspect.signature(model.forward).parameters
        with torch.no_grad():  # one tiny forward tells the vocabulary and feature sizes the model really has
            probe = model(input_ids=torch.full((1, 2), self.pad_id, dtype=torch.long, device=self.device), output_hidden_states=True)
        self.vocab_size = probe.logits.shape[-1]
        self.hidden_size = self._layer(probe.hidden_states).shape[-1]
        self.decodable = len(tokenizer)
        if self.decodable > self.vocab_size:
            raise ValueError(
                f"{name}: the tokenizer has {self.decodable} tokens but the model predicts only {self.vocab_size}; "
                "tokenizer/model mismatch: load the tokenizer that belongs to this model (tokenizer=... / --tokenizer)"
            )
        if not 0 <= self.mask_id < self.vocab_size:
            raise ValueError(f"{name}: mask id {self.mask_id} is outside the model's vocabulary [0, {self.vocab_size}); check --mask-id")

    def _stop_ids(self) -> tuple[int, ...]:
        ids: set[int] = set()
        gen = getattr(self.model, "generation_config", None)
        for source in (self.tokenizer.eos_token_id, getattr(self.model.config, "eos_token_id", None), getattr(gen, "eos_token_id", None)):
            ids.update([source] if isinstance(source, int) else source or [])
        if not ids and self.tokenizer.sep_token_id is not None:  # BERT-style: [SEP] ends the text
            ids.add(self.tokenizer.sep_token_id)
        return tuple(sorted(ids - {self.mask_id}))

    def _model_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Model kwargs; a padded batch gets its mask in the style's form and, where taken, real-token position ids."""
        if attention_mask is None or bool(attention_mask.all()):
            return {"input_ids": input_ids}
        real = attention_mask.bool()
        B, L = input_ids.shape
        inputs = {"input_ids": input_ids}
        # Dream's sampler masks pad queries too (all-False rows, NaN under SDPA); letting pad queries see the real
        # tokens instead leaves every real position's output unchanged and keeps the batch finite.
        inputs["attention_mask"] = real[:, None, None, :].expand(B, 1, L, L) if self.style.pairwise_mask else attention_mask
        if self._takes_position_ids:
            inputs["position_ids"] = (real.long().cumsum(-1) - 1).clamp(min=0)
        return inputs

    def _layer(self, layers: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The chosen entry of ``output_hidden_states`` (0 = embeddings, -1 = last)."""
        if not -len(layers) <= self.hidden_layer < len(layers):
            raise ValueError(
                f"{self.name}: hidden layer {self.hidden_layer} is out of range; the model returns {len(layers)} hidden "
                f"states (embeddings + {len(layers) - 1} layers); use -1 for the last (--hf-layer)"
            )
        return layers[self.hidden_layer]

    def _align(self, t: torch.Tensor) -> torch.Tensor:
        """Make ``t[:, i]`` belong to position ``i`` (Dream: shift right by one, repeating the first)."""
        return torch.cat([t[:, :1], t[:, :-1]], dim=1) if self.style.logit_shift else t

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> MDMOutput:
        self.check_input(input_ids)
        if self.max_length is not None and input_ids.shape[1] > self.max_length:
            raise ValueError(
                f"{self.name}: {input_ids.shape[1]} tokens exceed the model's context of {self.max_length}; "
                "lower gen_length or shorten the prompt"
            )
        with torch.no_grad():
            out = self.model(**self._model_inputs(input_ids, attention_mask), output_hidden_states=output_hidden_states)
        logits = self._align(out.logits)
        if self.decodable < logits.shape[-1]:  # padded embedding rows: no text the tokenizer could decode
            logits[..., self.decodable :] = float("-inf")
        hidden = self._align(self._layer(out.hidden_states)) if output_hidden_states else None
        return MDMOutput(logits=logits, hidden_states=hidden)


def read_config(name_or_path: str, revision: str | None = None) -> dict:
    """The raw ``config.json`` of a local directory or hub model, without running any model code."""
    from transformers import PretrainedConfig

    if name_or_path.startswith(("/", ".", "~")) and not Path(name_or_path).expanduser().is_dir():
        raise FileNotFoundError(f"model directory {name_or_path} does not exist")
    try:
        config = PretrainedConfig.get_config_dict(name_or_path, revision=revision)[0]
    except OSError as e:
        raise ValueError(f"cannot read the config of Hugging Face model {name_or_path!r}: {e}") from e
    if not config.get("model_type"):
        raise ValueError(f"cannot read the config of Hugging Face model {name_or_path!r}: no config.json with a model_type")
    return config


def _auto_class(config: dict, style: HFStyle, remote: bool) -> Any:
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

    if remote:  # the class the model's own code registers (LLaDA and Dream: AutoModel)
        auto_map = config.get("auto_map", {})
        for name in ("AutoModel", "AutoModelForMaskedLM", "AutoModelForCausalLM"):
            if name in auto_map:
                return getattr(transformers, name)
        raise ValueError(
            f"model_type {config.get('model_type')!r} is not in transformers and its config has no auto_map entry to load it with"
        )
    model_type = config.get("model_type", "")
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return transformers.AutoModelForMaskedLM
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and style.name != "masked_lm":
        return transformers.AutoModelForCausalLM
    raise ValueError(
        f"model_type {model_type!r} has no masked-LM head in transformers; pass --hf-style llada or dream for a dLLM built on it"
    )


def resolve_mask_id(tokenizer: Any, model: torch.nn.Module, mask_id: int | None, name: str) -> int:
    """The explicit ``mask_id``, else the tokenizer's mask token, else the config's ``mask_token_id``."""
    if mask_id is not None:
        return int(mask_id)
    gen = getattr(model, "generation_config", None)
    from_config = getattr(model.config, "mask_token_id", None)
    from_config = from_config if from_config is not None else getattr(gen, "mask_token_id", None)
    from_tokenizer = tokenizer.mask_token_id
    if from_tokenizer is not None and from_config is not None and from_tokenizer != from_config:
        raise ValueError(
            f"{name}: the tokenizer's mask token has id {from_tokenizer} but the model config says mask_token_id "
            f"{from_config}; tokenizer/model mismatch? pass --mask-id to choose"
        )
    found = from_tokenizer if from_tokenizer is not None else from_config
    if found is None:
        raise ValueError(f"{name}: no mask token in the tokenizer or the config (mask_token_id); pass --mask-id ID (mask_id=...)")
    return int(found)


def _device_and_dtype(device: str | None, dtype: str | None) -> tuple[torch.device, Any]:
    dev = resolve_device(device)
    if dtype is None:
        return dev, torch.bfloat16 if dev.type == "cuda" else torch.float32
    if dtype == "auto":
        return dev, "auto"
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: auto, {', '.join(DTYPES)}")
    return dev, DTYPES[dtype]


def load_hf_model(
    name_or_path: str,
    *,
    style: str | None = None,
    trust_remote_code: bool = False,
    mask_id: int | None = None,
    dtype: str | None = None,
    device: str | None = None,
    hidden_layer: int = -1,
    allow_pickle: bool = False,
    tokenizer: str | None = None,
    revision: str | None = None,
) -> HFMaskedDiffusionModel:
    """Load a hub model or local directory as an MDM (what ``load_model("hf:...")`` calls).

    ``dtype``: auto, float32, bfloat16, float16 (default: bfloat16 on GPU, float32 on CPU);
    ``device``: default cuda when available; ``tokenizer``: another tokenizer path;
    ``hidden_layer``: index into ``output_hidden_states`` for learned policies.
    """
    from transformers import AutoTokenizer
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    config = read_config(name_or_path, revision)
    model_type = config.get("model_type", "")
    remote = model_type not in CONFIG_MAPPING_NAMES
    if remote and not trust_remote_code:
        raise ValueError(
            f"{name_or_path}: model_type {model_type!r} runs the model's own code from its repository; "
            "pass --trust-remote-code (trust_remote_code=True) if you trust its source"
        )
    hf_style = resolve_style(model_type, style)
    auto = _auto_class(config, hf_style, remote)
    dev, torch_dtype = _device_and_dtype(device, dtype)
    tok = AutoTokenizer.from_pretrained(tokenizer or name_or_path, trust_remote_code=trust_remote_code, revision=revision)
    try:
        model = auto.from_pretrained(
            name_or_path, trust_remote_code=trust_remote_code, dtype=torch_dtype, revision=revision,
            use_safetensors=None if allow_pickle else True,
        )
    except OSError as e:
        if allow_pickle or "safetensors" not in str(e):
            raise
        raise ValueError(
            f"{name_or_path}: no safetensors weights found; unmask never unpickles weights by default. Convert the "
            "checkpoint to safetensors, or pass --allow-pickle (allow_pickle=True) if you trust its source"
        ) from e
    model.to(dev)
    name = f"hf:{name_or_path}"
    return HFMaskedDiffusionModel(model, tok, hf_style, resolve_mask_id(tok, model, mask_id, name), name, hidden_layer)
