"""The masked diffusion model (MDM) interface every backend implements.

An MDM maps a partially masked sequence ``x_n`` (B, L) to per-position token
logits (B, L, V) for ``p_theta(x_0 | x_n)`` (UPO §2, Eq. 2) and, on request, the
hidden features ``H_n`` (B, L, D) that learned policies read (UPO App. B.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def resolve_device(device: str | None) -> torch.device:
    """``device`` ("cpu", "cuda", "cuda:1", ...) as a torch.device; None: cuda when available, else cpu."""
    try:
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as e:
        raise ValueError(f"invalid device {device!r} ({e}); e.g. cpu, cuda, cuda:1") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: no CUDA GPU is visible to PyTorch; use --device cpu")
    return dev


@dataclass
class MDMOutput:
    """Result of one MDM forward (one NFE)."""

    logits: torch.Tensor
    hidden_states: torch.Tensor | None = None


class MaskedDiffusionModel(nn.Module):
    """Base class of all MDM backends (built-in transformers, Hugging Face dLLMs).

    Subclasses set ``mask_id``, ``vocab_size`` and ``hidden_size`` and implement
    :meth:`forward`. Positions holding ``mask_id`` are the ones still to generate;
    every other position (prompt, clues, revealed tokens) is fixed.
    """

    mask_id: int
    vocab_size: int
    hidden_size: int
    name: str = "mdm"
    # 1: logits at position i predict token i + 1 (Dream), realigned by the backend; the engine reads it to pick
    # Dream's sampler (SamplingConfig.sampler "auto") and to start a cached window one position early.
    logit_shift: int = 0
    # The engine's cache strategies it serves (SamplingConfig.cache, unmask.engine.cache.CACHES); any mode but
    # "none" needs a forward that takes cache= a unmask.models.kv.KVWindow.
    cache_modes: tuple[str, ...] = ("none",)
    # Block-causal models (block diffusion: LLaDA2.x): the block length their attention is causal across, blocks
    # counted from position 0; the engine then decodes in these blocks (SamplingConfig.sampler "block").
    block_length: int | None = None
    # What the positions to generate hold while decoding (unmask.engine.loop picks the decode state from it):
    # "masked": mask_id until revealed, a revealed token final (LLaDA, Dream); "uniform": uniform random tokens,
    # every position of the current canvas re-decided each step and the rest renoised (DiffusionGemma; the model
    # then implements encode / denoise, and mask_id only marks the positions to generate in the input).
    canvas: str = "masked"

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> MDMOutput:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        """Where the model's weights live (inputs and random generators go there too)."""
        for t in self.parameters():
            return t.device
        return torch.device("cpu")

    def check_input(self, input_ids: torch.Tensor) -> None:
        """Raise a clear error for inputs this model cannot read."""
        if input_ids.dim() != 2:
            raise ValueError(f"{self.name}: input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
        if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
            raise ValueError(
                f"{self.name}: input_ids must hold integer token ids (torch.long), got dtype "
                f"{input_ids.dtype}; build them with dtype=torch.long (or .long())"
            )
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= self.vocab_size):
            raise ValueError(
                f"{self.name}: token ids must lie in [0, {self.vocab_size}), got range "
                f"[{int(input_ids.min())}, {int(input_ids.max())}]; was the input encoded for another model?"
            )
