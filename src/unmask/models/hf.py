"""Hugging Face dLLMs as MDMs (``hf:NAME_OR_PATH``): LLaDA, Dream and any masked LM.

One backend, three *styles* that differ only in how logits line up with
positions and how a padded batch is passed to the model:

- ``llada``: ``logits[:, i]`` predicts position ``i`` (LLaDA's ``generate()``);
  2-D attention mask; mask id from the config (``mask_token_id``, 126336 for
  LLaDA) or the tokenizer.
- ``dream``: ``logits[:, i]`` predicts position ``i + 1``; as Dream's sampler
  (``generation_utils._sample``) we shift right by one, repeating the first
  position: ``cat([logits[:, :1], logits[:, :-1]])``. Padded batches get a
  (B, 1, L, L) boolean mask (remote code; the native backend takes the 2-D mask)
  and position ids counted over real tokens, as that sampler builds them.
- ``masked_lm``: any ``AutoModelForMaskedLM`` (BERT, ModernBERT, ...); logits at
  the same position; 2-D attention mask.

LLaDA and Dream checkpoints run on the native backends (``unmask.models.llada`` /
``unmask.models.dream``, no remote code) unless ``native=False`` asks for the
repository's code (with ``trust_remote_code``; checked by :func:`self_check_remote`).
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from unmask.models.base import MaskedDiffusionModel, MDMOutput, resolve_device
from unmask.models.kv import BLOCK_CACHE_MODES, CACHE_MODES, KVWindow

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
CONTEXT_KEYS = ("max_position_embeddings", "max_sequence_length", "n_positions")


@dataclass(frozen=True)
class HFStyle:
    """How one family of dLLMs lines up logits and reads padding."""

    name: str
    logit_shift: int  # 1: logits at i predict token i + 1 (Dream)
    pairwise_mask: bool  # padded batches get a (B, 1, L, L) bool mask (Dream's sampler) instead of (B, L)


STYLES = {s.name: s for s in (HFStyle("llada", 0, False), HFStyle("dream", 1, True), HFStyle("masked_lm", 0, False))}


def native_backend(model_type: str) -> type | None:
    """The native backend class (:class:`unmask.models.native.BidirectionalLM`) for ``model_type``, or None."""
    from unmask.models.dream import Dream
    from unmask.models.llada import LLaDA
    from unmask.models.llada2 import LLaDA2
    from unmask.models.sdar import SDAR

    return {"llada": LLaDA, "dream": Dream, "llada2_moe": LLaDA2, "sdar": SDAR}.get(model_type.lower())


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

    def __init__(
        self, model: torch.nn.Module, tokenizer: Any, style: HFStyle, mask_id: int, name: str, hidden_layer: int = -1
    ) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.style = style
        self.mask_id = int(mask_id)
        self.name = name
        self.hidden_layer = hidden_layer
        self.logit_shift = style.logit_shift
        from unmask.models.native import BidirectionalLM

        native = isinstance(model, BidirectionalLM)
        self.block_length = model.config.block_length if native and model.block_causal else None
        if self.block_length is not None:  # block-causal: finished blocks' keys/values are final (exact cache)
            self.cache_modes = BLOCK_CACHE_MODES
            eos = getattr(model.config, "eos_token_id", None)
            self.eos_token_id = eos if isinstance(eos, int) else None  # the block sampler stops after its block
        else:
            self.cache_modes = CACHE_MODES if native else ("none",)  # cached windows: native backends only
        config = model.config
        self.max_length = next((getattr(config, k) for k in CONTEXT_KEYS if getattr(config, k, None)), None)
        self.pad_id = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)
        self.stop_ids = self._stop_ids()
        self._takes_position_ids = "position_ids" in inspect.signature(model.forward).parameters
        self.vocab_size, self.hidden_size = self._sizes()
        self.decodable = len(tokenizer)
        if self.decodable > self.vocab_size:
            raise ValueError(
                f"{name}: the tokenizer has {self.decodable} tokens but the model predicts only {self.vocab_size}; "
                "tokenizer/model mismatch: load the tokenizer that belongs to this model (tokenizer=... / --tokenizer)"
            )
        if not 0 <= self.mask_id < self.vocab_size:
            raise ValueError(
                f"{name}: mask id {self.mask_id} is outside the model's vocabulary [0, {self.vocab_size}); check --mask-id"
            )

    def _sizes(self) -> tuple[int, int]:
        """(vocabulary, feature size) the model really has: one tiny forward tells them."""
        with torch.no_grad():
            probe = self.model(
                input_ids=torch.full((1, 2), self.pad_id, dtype=torch.long, device=self.device),
                output_hidden_states=True,
            )
        return probe.logits.shape[-1], self._layer(probe.hidden_states).shape[-1]

    def _stop_ids(self) -> tuple[int, ...]:
        ids: set[int] = set()
        gen = getattr(self.model, "generation_config", None)
        for source in (
            self.tokenizer.eos_token_id,
            getattr(self.model.config, "eos_token_id", None),
            getattr(gen, "eos_token_id", None),
        ):
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
        inputs["attention_mask"] = (
            real[:, None, None, :].expand(B, 1, L, L) if self.style.pairwise_mask else attention_mask
        )
        if self._takes_position_ids:
            inputs["position_ids"] = (real.long().cumsum(-1) - 1).clamp(min=0)
        return inputs

    def _window_inputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, cache: KVWindow
    ) -> dict[str, Any]:
        """Model kwargs of a cached forward: the window's tokens at their positions in the whole sequence (the
        ids :meth:`_model_inputs` would give, sliced), the whole sequence's padding mask over the keys."""
        if cache.end - cache.start != input_ids.shape[1]:
            raise ValueError(
                f"{self.name}: the cache window [{cache.start}, {cache.end}) does not match {input_ids.shape[1]} input tokens"
            )
        inputs: dict[str, Any] = {"input_ids": input_ids, "cache": cache}
        if attention_mask is None or bool(attention_mask.all()):
            inputs["position_ids"] = torch.arange(cache.start, cache.end, device=input_ids.device).expand(
                input_ids.shape[0], -1
            )
        else:
            inputs["attention_mask"] = attention_mask[:, : cache.length]
            inputs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, cache.start : cache.end]
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
        cache: KVWindow | None = None,
    ) -> MDMOutput:
        """With ``cache`` (native backends, :mod:`unmask.engine.cache`): ``input_ids`` is the window ``[cache.start,
        cache.end)`` of a sequence whose full padding mask is ``attention_mask``; outputs are the window's."""
        self.check_input(input_ids)
        length = input_ids.shape[1] if cache is None else cache.length
        if self.max_length is not None and length > self.max_length:
            raise ValueError(
                f"{self.name}: {length} tokens exceed the model's context of {self.max_length}; "
                "lower gen_length or shorten the prompt"
            )
        inputs = (
            self._model_inputs(input_ids, attention_mask)
            if cache is None
            else self._window_inputs(input_ids, attention_mask, cache)
        )
        with torch.no_grad():
            out = self.model(**inputs, output_hidden_states=output_hidden_states)
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
        raise ValueError(
            f"cannot read the config of Hugging Face model {name_or_path!r}: no config.json with a model_type"
        )
    return config


def _auto_class(config: dict, style: HFStyle, remote: bool) -> Any:
    import transformers
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

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
        raise ValueError(
            f"{name}: no mask token in the tokenizer or the config (mask_token_id); pass --mask-id ID (mask_id=...)"
        )
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
    native: bool | None = None,
    trust_remote_code: bool = False,
    style: str | None = None,
    mask_id: int | None = None,
    dtype: str | None = None,
    device: str | None = None,
    device_map: str | None = None,
    load_in_4bit: bool = False,
    hidden_layer: int = -1,
    allow_pickle: bool = False,
    tokenizer: str | None = None,
    revision: str | None = None,
    block_length: int | None = None,
) -> HFMaskedDiffusionModel:
    """Load a hub model or local directory as an MDM (what ``load_model("hf:...")`` calls).

    ``native``: LLaDA and Dream checkpoints (``model_type`` llada / Dream) run on unmask's native backends
    (:mod:`unmask.models.llada`, :mod:`unmask.models.dream`; no code from the checkpoint) unless ``native=False``,
    which runs the repository's own code and needs ``trust_remote_code=True`` too; ``native=True`` insists.
    Other models load through transformers' Auto classes (remote code again only with ``trust_remote_code``).
    ``dtype``: auto, float32, bfloat16, float16 (default: bfloat16 on GPU, float32 on CPU);
    ``device``: default cuda when available; ``device_map``: e.g. "auto" (accelerate), instead of ``device``;
    ``load_in_4bit``: bitsandbytes NF4 weights (native backends, CUDA, ``pip install unmask[quant]``);
    ``tokenizer``: another tokenizer path; ``hidden_layer``: index into ``output_hidden_states`` for learned policies;
    ``block_length``: the block a block-causal checkpoint was trained with where ``config.json`` does not say (SDAR's
    -b8 ... -b64 variants; the native SDAR backend assumes 4 otherwise).
    """
    config = read_config(name_or_path, revision)
    model_type = config.get("model_type", "")
    if model_type == "diffusion_gemma":
        return load_diffusion_gemma(
            name_or_path,
            config,
            native=native,
            style=style,
            load_in_4bit=load_in_4bit,
            dtype=dtype,
            device=device,
            device_map=device_map,
            hidden_layer=hidden_layer,
            tokenizer=tokenizer,
            revision=revision,
        )
    backend = native_backend(model_type)
    if native and backend is None:
        raise ValueError(
            f"{name_or_path}: no native backend for model_type {model_type!r}; native backends: llada, Dream, llada2_moe, sdar"
        )
    dev, torch_dtype = _device_and_dtype(device, dtype)
    name = f"hf:{name_or_path}"
    if backend is not None and native is not False:
        if style is not None and style != backend.style:
            raise ValueError(
                f"{name}: --hf-style {style} does not apply to the native {backend.family} backend; drop it"
            )
        if block_length is not None:
            if not backend.block_length_option:
                raise ValueError(
                    f"{name}: block_length applies to block-causal checkpoints whose config.json does not fix it "
                    f"(SDAR); the native {backend.family} backend {'uses its fixed block' if backend.block_causal else 'is not block-causal'}: drop it (--hf-block-length)"
                )
            config = {**config, "block_length": block_length}
        local = _local_snapshot(name_or_path, revision)
        model = load_native(backend, local, config, torch_dtype, dev, device_map, load_in_4bit)
        hf_style = replace(STYLES[backend.style], pairwise_mask=False)
        tok = _native_tokenizer(
            tokenizer or str(local), backend, None if tokenizer is None else revision, tokenizer is None
        )
    else:
        if load_in_4bit:
            raise ValueError(f"{name}: --load-in-4bit is implemented for the native backends only")
        if block_length is not None:
            raise ValueError(
                f"{name}: block_length applies to the native block-causal backends (SDAR) only; drop it (--hf-block-length)"
            )
        model, tok, hf_style = _load_with_transformers(
            name_or_path,
            config,
            style,
            trust_remote_code,
            torch_dtype,
            dev,
            device_map,
            allow_pickle,
            tokenizer,
            revision,
        )
        if backend is not None:
            self_check_remote(model, config, backend, name)
    return HFMaskedDiffusionModel(model, tok, hf_style, resolve_mask_id(tok, model, mask_id, name), name, hidden_layer)


def load_diffusion_gemma(
    name_or_path: str,
    config: dict,
    *,
    native: bool | None,
    style: str | None,
    load_in_4bit: bool,
    dtype: str | None,
    device: str | None,
    device_map: str | None,
    hidden_layer: int,
    tokenizer: str | None,
    revision: str | None,
) -> HFMaskedDiffusionModel:
    """A DiffusionGemma checkpoint on transformers' own ``DiffusionGemmaForBlockDiffusion`` (no remote code, no
    native copy: ``native`` and ``style`` do not apply), refusing a load that left any tensor uninitialised."""
    from transformers import AutoTokenizer, DiffusionGemmaForBlockDiffusion

    from unmask.models.diffusion_gemma import DiffusionGemma

    name = f"hf:{name_or_path}"
    for flag, given in (
        ("--native", native is not None),
        ("--hf-style", style is not None),
        ("--load-in-4bit", load_in_4bit),
    ):
        if given:
            raise ValueError(
                f"{name}: {flag} does not apply to DiffusionGemma, which runs on transformers' own "
                "DiffusionGemmaForBlockDiffusion; drop it"
            )
    if not config.get("canvas_length"):
        raise ValueError(f"{name}: a DiffusionGemma config needs canvas_length (the block length); check config.json")
    dev, torch_dtype = _device_and_dtype(device, dtype)
    options = {"device_map": device_map} if device_map else {}
    model, info = DiffusionGemmaForBlockDiffusion.from_pretrained(
        name_or_path, dtype=torch_dtype, revision=revision, use_safetensors=True, output_loading_info=True, **options
    )
    unloaded = sorted(set(info["missing_keys"]) | set(info["mismatched_keys"]))
    if unloaded:
        raise ValueError(
            f"{name}: {len(unloaded)} tensors of the model are not in the checkpoint ({', '.join(unloaded[:3])}); "
            "it is not a complete DiffusionGemma checkpoint for this transformers version"
        )
    if not device_map:
        model.to(dev)
    tok = AutoTokenizer.from_pretrained(tokenizer or name_or_path, revision=revision)
    return DiffusionGemma(model, tok, name, hidden_layer)


def _native_tokenizer(path: str, backend: type, revision: str | None, checkpoint: bool) -> Any:
    """The checkpoint's tokenizer without its code: AutoTokenizer, else the family's transformers tokenizer
    (``backend.tokenizer_class``; Dream's ``tokenization_dream.DreamTokenizer`` is Qwen2's BPE tokenizer).

    ``checkpoint``: ``path`` is the model's own directory. AutoTokenizer would then read its config.json, which
    transformers cannot parse without the remote code, fall back to a generic config and warn that a model of
    type llada / Dream is being instantiated as another type (no model is); it gets a generic config of that
    path instead, as its fallback would."""
    import transformers

    config = transformers.PretrainedConfig(name_or_path=path) if checkpoint else None
    try:
        return transformers.AutoTokenizer.from_pretrained(
            path, trust_remote_code=False, revision=revision, config=config
        )
    except (ValueError, OSError) as e:
        fallback = getattr(backend, "tokenizer_class", None)
        if fallback is None:
            raise ValueError(
                f"cannot load the tokenizer of {path} without its code ({e}); pass --tokenizer NAME_OR_PATH"
            ) from e
        return getattr(transformers, fallback).from_pretrained(path, revision=revision)


def _local_snapshot(name_or_path: str, revision: str | None) -> Path:
    """A local directory with the checkpoint: the path itself, or the hub snapshot (config, tokenizer, safetensors)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                name_or_path,
                revision=revision,
                allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"],
            )
        )
    except Exception as e:  # hub errors come in many types; one message with the cause
        raise ValueError(f"cannot download Hugging Face model {name_or_path!r}: {e}") from e


def load_native(
    backend: type,
    path: Path,
    raw: dict,
    torch_dtype: Any,
    dev: torch.device,
    device_map: str | None,
    load_in_4bit: bool,
) -> torch.nn.Module:
    """A native backend on ``path``'s weights: config translated, every tensor's name and shape checked against the
    model before anything loads (one error for missing / extra / mis-shaped tensors or a missing shard), then
    transformers' ``from_pretrained`` with the family's ``key_mapping`` (dtype, device_map, 4-bit as for any model)."""
    from unmask.models.native import check_tensors, checkpoint_tensors

    config = backend.config_from_dict(raw)
    with torch.device("meta"):
        skeleton = backend(config)
    check_tensors(skeleton, checkpoint_tensors(path), f"the weights in {path}")
    options: dict[str, Any] = {"config": config, "dtype": torch_dtype, "use_safetensors": True}
    if backend.key_mapping:
        options["key_mapping"] = backend.key_mapping
    if load_in_4bit:
        options.update(quantization_config=_bnb_4bit(dev, torch_dtype), device_map=device_map or {"": str(dev)})
    elif device_map:
        options["device_map"] = device_map
    model, info = backend.from_pretrained(str(path), output_loading_info=True, **options)
    unloaded = sorted(set(info["missing_keys"]) | set(info["unexpected_keys"]) | set(info["mismatched_keys"]))
    if (
        unloaded
    ):  # the check above makes this unreachable unless transformers renames differently: never run half-random
        raise ValueError(
            f"{path}: transformers did not load {len(unloaded)} tensors into the native {backend.family} "
            f"backend ({', '.join(map(str, unloaded[:3]))}); please report this with your transformers version"
        )
    if not (device_map or load_in_4bit):
        model.to(dev)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rotary = int(head_dim * config.rope_parameters.get("partial_rotary_factor", 1.0))  # LLaDA2: half of each head
    rederive_inv_freq(model, float(config.rope_parameters["rope_theta"]), rotary)
    return model


def _bnb_4bit(dev: torch.device, torch_dtype: Any) -> Any:
    """bitsandbytes NF4 (as UPO ran LLaDA), computing in ``torch_dtype`` (bf16 by default on GPU)."""
    import importlib.util

    from transformers import BitsAndBytesConfig

    if dev.type != "cuda" or importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError(
            "--load-in-4bit needs a CUDA GPU and bitsandbytes: pip install 'unmask[quant]' and pass --device cuda"
        )
    compute = torch_dtype if isinstance(torch_dtype, torch.dtype) and torch_dtype != torch.float32 else torch.bfloat16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute)


def rederive_inv_freq(model: torch.nn.Module, theta: float, head_dim: int) -> int:
    """Recompute every RoPE ``inv_freq`` buffer (non-persistent, so never in the checkpoint) as
    ``theta ** (-arange(0, d, 2) / d)`` (Su et al. 2021, Eq. 15), in place; returns how many were set. Loading
    paths that initialise modules on the meta device can leave these uninitialised (seen: Dream's remote code)."""
    expected = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    count = 0
    with torch.no_grad():
        for module in model.modules():
            for attr in ("inv_freq", "original_inv_freq"):
                buf = getattr(module, attr, None)
                if isinstance(buf, torch.Tensor) and buf.shape == expected.shape and not buf.is_meta:
                    buf.copy_(expected.to(buf))
                    count += attr == "inv_freq"
    return count


def self_check_remote(model: torch.nn.Module, raw: dict, backend: type, name: str) -> None:
    """The remote-code path never computes garbage silently: RoPE buffers re-derived from the config, then a
    forward on a short input must give finite logits equal to the native backend's on the same weight tensors
    (shared, no copy; skipped when the weights are quantized or the config is a variant the native backend
    does not implement)."""
    from transformers import __version__

    heads = raw.get("num_attention_heads", raw.get("n_heads"))
    width = raw.get("hidden_size", raw.get("d_model"))
    if raw.get("rope_theta") and heads and width and not raw.get("rope_scaling"):
        rederive_inv_freq(model, float(raw["rope_theta"]), width // heads)
    device = next(model.parameters()).device
    probe = torch.arange(8, device=device).unsqueeze(0) % max(2, int(raw.get("vocab_size", 8)))
    with torch.no_grad():
        logits = model(input_ids=probe).logits.float()
    fix = f"load it with unmask's native {backend.family} backend instead (drop --remote-code / native=False)"
    if not torch.isfinite(logits).all():
        raise ValueError(
            f"{name}: the repository's code gives non-finite logits under transformers {__version__}; {fix}"
        )
    if any(not p.is_floating_point() for p in model.parameters()):
        return  # quantized weights: no native twin to compare with
    try:
        twin = backend.from_state_dict(backend.config_from_dict(raw), model.state_dict())
    except ValueError:
        return  # a variant the native backend does not implement: nothing to compare with
    with torch.no_grad():
        want = twin(input_ids=probe).logits.float()
    tol = (1e-3 if logits.dtype == torch.float32 and next(model.parameters()).dtype == torch.float32 else 5e-2) * (
        1 + want.abs().max()
    )
    gap = float((logits - want).abs().max())
    if gap > tol:
        raise ValueError(
            f"{name}: the repository's code computes different logits than the native {backend.family} backend on the "
            f"same weights (max difference {gap:.3g}) under transformers {__version__}: its buffers or code do not "
            f"run correctly here; {fix}"
        )


def _load_with_transformers(
    name_or_path: str,
    config: dict,
    style: str | None,
    trust_remote_code: bool,
    torch_dtype: Any,
    dev: torch.device,
    device_map: str | None,
    allow_pickle: bool,
    tokenizer: str | None,
    revision: str | None,
) -> tuple[torch.nn.Module, Any, HFStyle]:
    """Model, tokenizer and style through transformers' Auto classes (a masked LM, or the repository's own code)."""
    from transformers import AutoTokenizer, __version__
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    model_type = config.get("model_type", "")
    remote = model_type not in CONFIG_MAPPING_NAMES
    if remote and not trust_remote_code:
        native = (
            " (or drop --remote-code: unmask's native backend runs it without remote code)"
            if native_backend(model_type)
            else ""
        )
        raise ValueError(
            f"{name_or_path}: model_type {model_type!r} runs the model's own code from its repository; "
            f"pass --trust-remote-code (trust_remote_code=True) if you trust its source{native}"
        )
    hf_style = resolve_style(model_type, style)
    auto = _auto_class(config, hf_style, remote)
    tok = AutoTokenizer.from_pretrained(
        tokenizer or name_or_path, trust_remote_code=trust_remote_code, revision=revision
    )
    options = {"device_map": device_map} if device_map else {}
    try:
        model = auto.from_pretrained(
            name_or_path,
            trust_remote_code=trust_remote_code,
            dtype=torch_dtype,
            revision=revision,
            use_safetensors=None if allow_pickle else True,
            **options,
        )
    except OSError as e:
        if allow_pickle or "safetensors" not in str(e):
            raise
        raise ValueError(
            f"{name_or_path}: no safetensors weights found; unmask never unpickles weights by default. Convert the "
            "checkpoint to safetensors, or pass --allow-pickle (allow_pickle=True) if you trust its source"
        ) from e
    except (AttributeError, TypeError, KeyError, NotImplementedError) as e:
        if not remote:
            raise
        backend = native_backend(model_type)
        fix = (
            f"load it with unmask's native {backend.family} backend instead: drop --remote-code (native=False)"
            if backend
            else "use a transformers version the repository's code supports"
        )
        raise ValueError(
            f"{name_or_path}: the repository's own code does not run under transformers {__version__} "
            f"({type(e).__name__}: {e}); {fix}"
        ) from e
    if not device_map:
        model.to(dev)
    return model, tok, hf_style
