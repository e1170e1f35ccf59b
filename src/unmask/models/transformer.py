"""The built-in MDM: a small bidirectional transformer (nanoGPT-style, no causal mask).

Positions are embedded by *factorised coordinates*: each position has one index
per coordinate table (for sudoku: row, column, box), and the position embedding is
the sum of one learned embedding per table. Tasks provide the tables, so the same
model class serves grids and text.

It serves the block caches of :mod:`unmask.engine.cache`: given a ``cache`` window, it runs
only the window's positions and attends to the whole sequence's keys/values.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from unmask.core.checkpoint import CONFIG, WEIGHTS, load_json, load_state_into, load_tensors
from unmask.core.hub import HubMixin
from unmask.models.base import MaskedDiffusionModel, MDMOutput
from unmask.models.kv import CACHE_MODES, KVWindow


@dataclass
class TransformerConfig:
    """Architecture of a built-in MDM; saved as ``config.json`` beside the weights."""

    vocab_size: int
    mask_id: int
    coordinates: list[list[int]] = field(default_factory=list)  # one table per factor, each of length L
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    task: str = ""

    @property
    def seq_len(self) -> int:
        return len(self.coordinates[0])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TransformerConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fields in transformer config: {sorted(unknown)}")
        missing = sorted(
            f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING and f.name not in data
        )
        if missing:
            raise ValueError(f"missing fields in transformer config: {missing}")
        for name, value in data.items():
            ok = (
                isinstance(value, str)
                if name == "task"
                else (
                    isinstance(value, list)
                    and all(isinstance(t, list) and all(type(i) is int for i in t) for t in value)
                    if name == "coordinates"
                    else type(value) is int and value >= (1 if name.startswith("n_") else 0)
                )
            )
            if not ok:
                raise ValueError(f"transformer config field {name} has the invalid value {value!r}")
        return cls(**data)


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig, layer: int) -> None:
        super().__init__()
        self.n_head, self.layer = cfg.n_head, layer
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.n_embd, 4 * cfg.n_embd), nn.GELU(), nn.Linear(4 * cfg.n_embd, cfg.n_embd)
        )

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None, cache: KVWindow | None = None) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(D, dim=2)
        q, k, v = (t.view(B, L, self.n_head, D // self.n_head).transpose(1, 2) for t in (q, k, v))
        if cache is not None:  # keys/values of the whole sequence: kept ones around this window's
            k, v = cache.update(k, v, self.layer)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        x = x + self.proj(y.transpose(1, 2).reshape(B, L, D))
        return x + self.mlp(self.ln_2(x))


class MaskedTransformer(MaskedDiffusionModel, HubMixin):
    """Bidirectional transformer MDM with factorised position embeddings (on the Hugging Face Hub through
    ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``, :mod:`unmask.core.hub`)."""

    record: dict = {}  # what the loaded checkpoint's config.json held besides the model (train recipe, step)

    cache_modes = CACHE_MODES

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        if not config.coordinates:
            raise ValueError("TransformerConfig.coordinates must hold at least one coordinate table")
        self.config = config
        self.mask_id = config.mask_id
        self.vocab_size = config.vocab_size
        self.hidden_size = config.n_embd
        self.name = config.task or "transformer"
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.ModuleList(nn.Embedding(max(t) + 1, config.n_embd) for t in config.coordinates)
        self.register_buffer("coords", torch.tensor(config.coordinates, dtype=torch.long), persistent=False)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, config.vocab_size)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    checkpoint_section = "model"

    @classmethod
    def load_checkpoint(cls, directory: Path) -> MaskedTransformer:
        """The MDM of a checkpoint directory written by ``unmask train-mdm`` (on the CPU, frozen, in eval mode)."""
        meta = load_json(directory / CONFIG)
        if "model" not in meta:
            raise ValueError(
                f"{directory / CONFIG} has no 'model' section: this is not an MDM checkpoint (a policy checkpoint?)"
            )
        try:
            config = TransformerConfig.from_dict(meta["model"])
        except ValueError as e:
            raise ValueError(f"{directory / CONFIG}: {e}") from None
        model = cls(config)
        load_state_into(model, load_tensors(directory / WEIGHTS), directory)
        model.name = meta.get("name", directory.name)
        model.record = {k: v for k, v in meta.items() if k not in ("model", "name", "parameters")}
        return model.eval().requires_grad_(False)

    def checkpoint_config(self) -> dict:
        return {**self.record, "name": self.name, "model": self.config.to_dict(), "parameters": self.num_parameters()}

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        cache: KVWindow | None = None,
    ) -> MDMOutput:
        """Logits (and features) of every position, or with ``cache`` of the window ``input_ids`` holds
        (positions ``cache.start`` to ``cache.end`` of the sequence; ``attention_mask`` covers the whole sequence)."""
        self.check_input(input_ids)
        L = input_ids.shape[1] if cache is None else cache.length
        if L != self.config.seq_len:
            raise ValueError(
                f"{self.name}: this built-in model reads sequences of length {self.config.seq_len}, got {L}; "
                "use the task the model was trained for"
            )
        window = slice(0, L) if cache is None else slice(cache.start, cache.end)
        x = self.tok_emb(input_ids)
        for table, emb in zip(self.coords, self.pos_emb):
            x = x + emb(table[window])
        attn = None if attention_mask is None else attention_mask[:, None, None, :].bool()
        for block in self.blocks:
            x = block(x, attn, cache)
        h = self.ln_f(x)
        return MDMOutput(logits=self.head(h), hidden_states=h if output_hidden_states else None)
