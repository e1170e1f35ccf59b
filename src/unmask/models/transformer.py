"""The built-in MDM: a small bidirectional transformer (nanoGPT-style, no causal mask).

Positions are embedded by *factorised coordinates*: each position has one index
per coordinate table (for sudoku: row, column, box), and the position embedding is
the sum of one learned embedding per table. Tasks provide the tables, so the same
model class serves grids and text.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from unmask.models.base import MaskedDiffusionModel, MDMOutput


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
    def from_dict(cls, data: dict) -> "TransformerConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fields in transformer config: {sorted(unknown)}")
        return cls(**data)


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = nn.Sequential(nn.Linear(cfg.n_embd, 4 * cfg.n_embd), nn.GELU(), nn.Linear(4 * cfg.n_embd, cfg.n_embd))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(D, dim=2)
        q, k, v = (t.view(B, L, self.n_head, D // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        x = x + self.proj(y.transpose(1, 2).reshape(B, L, D))
        return x + self.mlp(self.ln_2(x))


class MaskedTransformer(MaskedDiffusionModel):
    """Bidirectional transformer MDM with factorised position embeddings."""

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
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
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

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> MDMOutput:
        self.check_input(input_ids)
        L = input_ids.shape[1]
        if L != self.config.seq_len:
            raise ValueError(
                f"{self.name}: this built-in model reads sequences of length {self.config.seq_len}, got {L}; "
                "use the task the model was trained for"
            )
        x = self.tok_emb(input_ids)
        for table, emb in zip(self.coords, self.pos_emb):
            x = x + emb(table)
        attn = None if attention_mask is None else attention_mask[:, None, None, :].bool()
        for block in self.blocks:
            x = block(x, attn)
        h = self.ln_f(x)
        return MDMOutput(logits=self.head(h), hidden_states=h if output_hidden_states else None)
