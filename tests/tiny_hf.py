"""Tiny Hugging Face models and tokenizers built from scratch, saved the way users' checkpoints are.

Nothing is downloaded: a word-level tokenizer over a few dozen words, random-init
BERT / Llama models with small configs, and a local "remote code" LLaDA stand-in
(its own configuration/modeling files plus ``auto_map``, ``model_type: llada``,
``mask_token_id`` in the config and no mask token in the tokenizer).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from unmask.models.tiny import CHAT_TEMPLATE, SPECIALS, WORDS, tokenizer  # noqa: F401  (the tests' names)


def full_vocab(vocab_size: int):
    """The tiny chat tokenizer padded with words to ``vocab_size`` (unmask bars ids a tokenizer cannot decode, so a
    model compared token for token with upstream code needs every id decodable)."""
    return tokenizer(mask=False, chat=True, extra_words=vocab_size - len(WORDS))


def save_bert(
    directory: Path,
    mask: bool = True,
    chat: bool = False,
    vocab_size: int | None = None,
    seed: int = 0,
    max_positions: int = 128,
) -> Path:
    """A 1-layer BertForMaskedLM (hidden 16) and its tokenizer, as safetensors."""
    from transformers import BertConfig, BertForMaskedLM

    tok = tokenizer(mask=mask, chat=chat)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size or len(tok),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=max_positions,
    )
    BertForMaskedLM(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return Path(directory)


def save_llama(directory: Path, seed: int = 0) -> Path:
    """A 2-layer LlamaForCausalLM (hidden 16, RoPE): the stand-in for Dream's shifted logits."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer(chat=True)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.cls_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return Path(directory)


REMOTE_CONFIG = """from transformers import BertConfig


class TinyLLaDAConfig(BertConfig):
    model_type = "llada"
"""
REMOTE_MODEL = """from transformers import BertForMaskedLM

from .configuration_tinyllada import TinyLLaDAConfig


class TinyLLaDAModelLM(BertForMaskedLM):
    config_class = TinyLLaDAConfig
"""


def save_remote_llada(directory: Path) -> Path:
    """A model whose code lives in its own directory (like LLaDA on the hub): needs trust_remote_code."""
    directory = Path(directory)
    save_bert(directory, mask=False, chat=True)
    (directory / "configuration_tinyllada.py").write_text(REMOTE_CONFIG)
    (directory / "modeling_tinyllada.py").write_text(REMOTE_MODEL)
    config = json.loads((directory / "config.json").read_text())
    config.update(
        model_type="llada",
        mask_token_id=WORDS.index("[MASK]"),
        architectures=["TinyLLaDAModelLM"],
        auto_map={
            "AutoConfig": "configuration_tinyllada.TinyLLaDAConfig",
            "AutoModel": "modeling_tinyllada.TinyLLaDAModelLM",
        },
    )
    (directory / "config.json").write_text(json.dumps(config))
    return directory
