"""Block-wise key/value caches for semi-autoregressive decoding (Fast-dLLM, Wu et al. 2025, §3.1-3.2).

With blocks decoded left to right, the keys and values of positions outside the current block change
little while the block is decoded, so they can be kept from the block's first step:

- ``prefix`` (Fast-dLLM ``generate_with_prefix_cache``): the block's first step runs the full sequence and
  keeps the keys/values of everything before the block; later steps of the block run the block and
  everything after it against those.
- ``dual`` (Fast-dLLM ``generate_with_dual_cache``): the first step keeps the keys/values of every position
  outside the block (before and after it); later steps run the block only.
- ``none``: every step runs the full sequence.

Beyond Fast-dLLM, ``SamplingConfig.cache_refresh`` makes a row's step after one that revealed at least that share
of its block's masked positions a full step too: it runs and keeps everything afresh, as a block's first step.

The window a step runs is ``[start, end)``: ``start`` is the block's first position (one position earlier
for models whose logits at ``i`` predict ``i + 1``, i.e. Dream, so the block's first position gets fresh
logits too); ``end`` is the block's end (``dual``) or the sequence end (``prefix``). Keys always cover the
whole sequence: ``KVWindow.update`` returns the kept keys before and after the window around the window's
fresh ones, the one mechanism behind both modes.

Rows of a batch may sit in different blocks (the engine lets each row advance on its own): rows at the first
step of their block run one full forward together; the other rows run one forward per distinct block start
(each such forward is one NFE for the rows in it, as in Fast-dLLM's loop run on those rows alone).
Everything is stored per batch row and lives in one :class:`BlockCache`, made afresh by every ``generate``
call, so nothing leaks across rows or calls.

Positions outside the window get no new logits or features at a cached step: what a policy sees there
(``StepState.probs``, ``hidden``) are the values of the row's block's first (full) step. Inside the window
(the current block, which holds every position a policy may reveal) everything is fresh.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from unmask.models.kv import CACHE_MODES, KVStore, KVWindow

if TYPE_CHECKING:
    from unmask.models.base import MaskedDiffusionModel

def check_cache_mode(mode: str, model: MaskedDiffusionModel | None = None) -> None:
    """Raise one clear error for an unknown mode, or a mode ``model`` cannot serve (its ``cache_modes``)."""
    if mode not in CACHE_MODES:
        raise ValueError(f"unknown cache mode {mode!r}; valid modes: {', '.join(CACHE_MODES)}")
    if model is None:
        return
    modes = tuple(getattr(model, "cache_modes", ("none",)))
    if mode not in modes:
        raise ValueError(
            f"{model.name} cannot serve cache mode {mode!r}: it runs no partial forward against kept keys/values "
            f"(remote-code and generic Hugging Face models don't; the native LLaDA / Dream backends and the "
            f"built-in models do); modes it can use: {', '.join(modes)}"
        )


@dataclass
class Window:
    """One forward of an engine step: the active rows it ran (``rows``, indices into the step's batch, ascending),
    the generation positions ``[lo, hi)`` it gives fresh outputs for and those outputs. ``full``: it ran the whole
    sequence and keeps its keys/values (a block's first step, or a refresh)."""

    rows: torch.Tensor
    lo: int
    hi: int
    logits: torch.Tensor  # (g, hi - lo, V)
    hidden: torch.Tensor | None  # (g, hi - lo, D)
    full: bool

    def below(self, b: int) -> "Window":
        """The window of its rows below ``b`` only (they come first, rows being ascending; views, no copy)."""
        n = int((self.rows < b).sum())
        if n == len(self.rows):
            return self
        return Window(self.rows[:n], self.lo, self.hi, self.logits[:n], None if self.hidden is None else self.hidden[:n],
                      self.full)


class BlockCache:
    """Runs each engine step's forward under a cache mode; one per ``generate`` call.

    ``block_length`` and ``gen_start`` fix the blocks as the engine does (LLaDA ``generate()``): block ``j``
    covers generation positions ``[j * block_length, (j + 1) * block_length)``.

    A step is :meth:`forward` (one :class:`Window` per forward run), the engine's per-position work on each
    window's outputs (the token sampler's ``prepare``: it runs on the window alone), then :meth:`assemble`, which
    keeps a full window's per-position values for the rows' later steps and fills the positions outside a cached
    window from them.
    """

    def __init__(self, model: MaskedDiffusionModel, mode: str, batch_size: int, gen_start: int, block_length: int) -> None:
        check_cache_mode(mode, model)
        self.model, self.mode, self.gen_start, self.block_length = model, mode, gen_start, block_length
        self.shift = int(getattr(model, "logit_shift", 0))
        self.store = KVStore(batch_size)
        self.batch_size = batch_size
        self.kept: dict[str, torch.Tensor] = {}  # (B, Lg, ...) per-position values of each row's last full step

    def _windows(self, block: torch.Tensor, first: torch.Tensor, L: int) -> list[tuple[torch.Tensor, int, int, bool]]:
        """(indices into the active rows, window start, window end, record) of each forward of this step."""
        groups = []
        if first.any():
            groups.append((first.nonzero().squeeze(1), 0, L, True))
        rest = ~first
        for b in block[rest].unique().tolist():
            start = self.gen_start + b * self.block_length
            end = L if self.mode == "prefix" else min(start + self.block_length, L)
            groups.append(((rest & (block == b)).nonzero().squeeze(1), start, end, False))
        return groups

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        rows: torch.Tensor,
        block: torch.Tensor,
        first: torch.Tensor,
        output_hidden_states: bool,
    ) -> tuple[list[Window], torch.Tensor]:
        """The forwards of one step for the active rows ``rows`` (their full sequences ``input_ids``, b x L), each
        in its current block ``block`` (b,), ``first`` (b,) marking rows whose step runs the full sequence and keeps
        its keys/values (a block's first step, or a refresh): (their windows, positions run per row (b,))."""
        g = self.gen_start
        b, L = input_ids.shape
        if self.mode == "none":
            out = self.model(input_ids, attention_mask, output_hidden_states=output_hidden_states)
            hidden = None if out.hidden_states is None else out.hidden_states[:, g:]
            window = Window(torch.arange(b, device=input_ids.device), 0, L - g, out.logits[:, g:], hidden, True)
            return [window], torch.full((b,), L, device=input_ids.device)
        windows = []
        positions = torch.zeros(b, dtype=torch.long, device=input_ids.device)
        for idx, start, end, record in self._windows(block, first, L):
            run = 0 if record else max(start - self.shift, 0)
            window = KVWindow(self.store, self._rows(rows[idx]), run, end, L, record)
            out = self.model(
                input_ids[idx, run:end], None if attention_mask is None else attention_mask[idx],
                output_hidden_states=output_hidden_states, cache=window,
            )
            positions[idx] = end - run
            drop = (g if record else start) - run  # positions before the generation region / before the block
            hidden = None if out.hidden_states is None else out.hidden_states[:, drop:]
            windows.append(Window(idx, (0 if record else start - g), end - g, out.logits[:, drop:], hidden, record))
        return windows, positions

    def _rows(self, rows: torch.Tensor) -> torch.Tensor | None:
        """``rows``, or None when they are every batch row in order (the stores are then read and written as views)."""
        whole = len(rows) == self.batch_size and bool((rows == torch.arange(self.batch_size, device=rows.device)).all())
        return None if whole else rows

    def assemble(self, rows: torch.Tensor, windows: list[Window],
                 values: list[dict[str, torch.Tensor | None]]) -> dict[str, torch.Tensor | None]:
        """Per-position values over the whole generation region (b, Lg, ...) for the active rows ``rows``
        (b,), from each window's ``values`` (name -> (g, hi - lo, ...), or None): a full window's are the rows'
        values and are kept for their later steps (``prefix`` / ``dual``); a cached window's are written over a
        copy of the rows' kept ones, which hold their block's first step outside the window."""
        out: dict[str, torch.Tensor | None] = {}
        for window, part in zip(windows, values):
            whole = len(window.rows) == len(rows)  # the window ran every active row, in order
            at = slice(None) if whole else window.rows
            for name, value in part.items():
                if value is None:
                    out[name] = None
                    continue
                if window.full:
                    self._keep(rows[window.rows], {name: value})
                    region = value
                else:
                    store = self.kept[name]
                    target = self._rows(rows[window.rows])
                    region = store.clone() if target is None else store[target]
                    region[:, window.lo : window.hi] = value
                if whole:
                    out[name] = region
                    continue
                if out.get(name) is None:
                    out[name] = region.new_empty((len(rows), *region.shape[1:]))
                out[name][at] = region
        return out

    def _keep(self, rows: torch.Tensor, values: dict[str, torch.Tensor | None]) -> None:
        """Keep a full step's per-position values of ``rows`` for their later steps (nothing under ``none``)."""
        if self.mode == "none":
            return
        target = self._rows(rows)
        for name, value in values.items():
            if value is None:
                continue
            if name not in self.kept:
                self.kept[name] = value.new_empty((self.batch_size, *value.shape[1:]))
            self.kept[name][slice(None) if target is None else target] = value

    def nbytes(self) -> int:
        """Memory the cache holds: kept keys/values plus the first-step per-position values of the generation
        region (the token sampler's probabilities, tokens and confidences; features for policies that read them)."""
        outputs = sum(t.numel() * t.element_size() for t in self.kept.values())
        return self.store.nbytes() + outputs
