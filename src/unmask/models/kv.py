"""The cache a model's forward takes (the model side of the engine's block caches, :mod:`unmask.engine.cache`).

A backend that serves cached decoding accepts ``cache=`` a :class:`KVWindow` in its forward: it runs only the
window's positions and its attention layers call :meth:`KVWindow.update` (transformers' ``Cache.update``
signature) to get the keys/values of the whole sequence. :class:`KVStore` holds them per batch row. The
model declares the cache modes it serves (``MaskedDiffusionModel.cache_modes``).
"""

from __future__ import annotations

import torch

CACHE_MODES = ("none", "prefix", "dual")  # what a bidirectional model may declare it serves (unmask.engine.cache)
BLOCK_CACHE_MODES = ("none", "block")  # what a block-causal one serves: its finished blocks' keys/values are final


class KVStore:
    """Keys and values of every layer for every batch row: a row's last full forward wrote them, and each later
    step of its block writes its window's fresh ones over them (Fast-dLLM ``replace_position``).

    ``rows``: batch indices, or None for every row in order (then reads are views, no copy). ``length``: the
    positions to hold (default: those of the first write)."""

    def __init__(self, batch_size: int, length: int | None = None) -> None:
        self.batch_size, self.length = batch_size, length
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}

    def write(
        self, layer: int, rows: torch.Tensor | None, start: int, end: int, k: torch.Tensor, v: torch.Tensor
    ) -> None:
        """Store ``k``, ``v`` (b, heads, end - start, head_dim) at positions ``[start, end)`` of ``rows``."""
        if layer not in self.keys:
            length = self.length or k.shape[2]
            self.keys[layer] = k.new_empty((self.batch_size, k.shape[1], length, k.shape[3]))
            self.values[layer] = v.new_empty((self.batch_size, v.shape[1], length, v.shape[3]))
        target = slice(None) if rows is None else rows
        self.keys[layer][target, :, start:end] = k
        self.values[layer][target, :, start:end] = v

    def read(self, layer: int, rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of ``rows`` over the whole sequence."""
        keys, values = self.keys[layer], self.values[layer]
        return (keys, values) if rows is None else (keys[rows], values[rows])

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for d in (self.keys, self.values) for t in d.values())


class KVWindow:
    """What a model's forward sees of the cache: the window ``[start, end)`` of a sequence of ``length``
    that ``input_ids`` holds, and :meth:`update` (transformers' ``Cache.update`` signature), called by
    every attention layer with the window's keys/values (b, heads, W, head_dim), after RoPE. The keys are the
    store's first ``length`` positions (the block cache runs a block-causal model on the sequence up to the
    current block's end).

    ``record``: a full forward (``start = 0, end = length``) whose keys/values are kept for later steps.
    """

    def __init__(
        self, store: KVStore, rows: torch.Tensor | None, start: int, end: int, length: int, record: bool
    ) -> None:
        self.store, self.rows, self.start, self.end, self.length, self.record = store, rows, start, end, length, record

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys/values of the whole sequence (b, heads, length, head_dim): the kept ones outside the window
        (Fast-dLLM's ``past_key_values``), the given ones inside, written over the kept ones in place as Fast-dLLM's
        ``replace_position`` does (a row's window is the same at every later step of its block, and the next
        block's first step rewrites the whole row, so no later step reads what is overwritten)."""
        self.store.write(layer_idx, self.rows, self.start, self.end, key_states, value_states)
        if self.record:
            return key_states, value_states
        keys, values = self.store.read(layer_idx, self.rows)
        return keys[:, :, : self.length], values[:, :, : self.length]

    # The sizes transformers' mask and position helpers ask a Cache for (masking_utils, BidirectionalLM.forward).
    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Positions whose keys/values come from the cache."""
        return 0 if self.record else self.length - (self.end - self.start)

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        """(key length, key offset): keys always cover the whole sequence."""
        return self.length, 0

    def get_query_offset(self, layer_idx: int = 0) -> int:
        return self.start
