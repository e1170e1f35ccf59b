"""Cache strategies: how an engine step runs its forwards, and the block-wise key/value caches for
semi-autoregressive decoding (Fast-dLLM, Wu et al. 2025, §3.1-3.2).

A :class:`CacheStrategy` is one small interface: :meth:`~CacheStrategy.prepare` (once per ``generate`` call),
:meth:`~CacheStrategy.forward` (the forwards of one step: their :class:`Window` s), :meth:`~CacheStrategy.assemble`
(after the token rule ran on each window) and :meth:`~CacheStrategy.nbytes`. :data:`CACHES` maps
``SamplingConfig.cache`` to the strategies; a model declares the ones it serves (``MaskedDiffusionModel.cache_modes``).

With blocks decoded left to right, the keys and values of positions outside the current block change
little while the block is decoded, so they can be kept from the block's first step:

- ``prefix`` (:class:`PrefixCache`, Fast-dLLM ``generate_with_prefix_cache``): the block's first step runs the full sequence and
  keeps the keys/values of everything before the block; later steps of the block run the block and
  everything after it against those.
- ``dual`` (:class:`DualCache`, Fast-dLLM ``generate_with_dual_cache``): the first step keeps the keys/values of every position
  outside the block (before and after it); later steps run the block only.
- ``none`` (:class:`NoCache`): every step runs the full sequence.
- ``block`` (:class:`BlockCache`, block-causal models only: LLaDA2.x): a finished block's keys/values never change
  (its positions attend only to their own and earlier blocks), so they are kept as an autoregressive model keeps
  its cache; a step runs the current block, plus whatever is not final yet (at a block's first step, the block
  just finished, whose kept keys/values were computed before its last reveal; at the first step, the prompt),
  against them. Exact, not an approximation: the block's logits are those of a full forward.
- ``encoder`` (:class:`EncoderCache`): encoder-decoder block diffusion (DiffusionGemma), exact; what ``none`` gives a
  model that serves no other mode.

Beyond Fast-dLLM, ``SamplingConfig.cache_refresh`` makes a row's step after one that revealed at least that share
of its block's masked positions a full step too: it runs and keeps everything afresh, as a block's first step.

The window a step runs is ``[start, end)``: ``start`` is the block's first position (one position earlier
for models whose logits at ``i`` predict ``i + 1``, i.e. Dream, so the block's first position gets fresh
logits too); ``end`` is the block's end (``dual``) or the sequence end (``prefix``). Keys always cover the
whole sequence: ``KVWindow.update`` returns the kept keys before and after the window around the window's
fresh ones, the one mechanism behind both modes (:class:`FastDLLMCache`; the modes differ in its ``suffix``).

Rows of a batch may sit in different blocks (the engine lets each row advance on its own): rows at the first
step of their block run one full forward together; the other rows run one forward per distinct block start
(each such forward is one NFE for the rows in it, as in Fast-dLLM's loop run on those rows alone).
Everything is stored per batch row in the strategy, which every ``generate`` call prepares afresh, so nothing
leaks across rows or calls.

Positions outside the window get no new logits or features at a cached step: what a policy sees there
(``StepState.probs``, ``hidden``) are the values of the row's block's first (full) step. Inside the window
(the current block, which holds every position a policy may reveal) everything is fresh.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from unmask.models.kv import KVStore, KVWindow

if TYPE_CHECKING:
    from unmask.models.base import MaskedDiffusionModel


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

    def below(self, b: int) -> Window:
        """The window of its rows below ``b`` only (they come first, rows being ascending; views, no copy)."""
        n = int((self.rows < b).sum())
        if n == len(self.rows):
            return self
        return Window(
            self.rows[:n],
            self.lo,
            self.hi,
            self.logits[:n],
            None if self.hidden is None else self.hidden[:n],
            self.full,
        )


class CacheStrategy:
    """How each engine step runs its forwards; ``generate`` prepares one per call (or takes one, injected).

    A step is :meth:`forward` (one :class:`Window` per forward run), the engine's per-position work on each
    window's outputs (the token rule's ``prepare``: it runs on the window alone), then :meth:`assemble`, which
    gives the per-position values over the whole generation region. ``mode`` is the strategy's
    ``SamplingConfig.cache`` name, the one a model lists in ``cache_modes`` when it serves it.
    """

    mode: str
    partial: bool = False  # later steps of a block run a window against kept keys/values (refine_complete_block)
    keys_to_end: bool = True  # a cached window's keys cover the whole sequence (False: they end at the window's end)

    def prepare(self, model: MaskedDiffusionModel, batch_size: int, gen_start: int, block_length: int) -> None:
        """Start a ``generate`` call: ``batch_size`` rows of ``model`` generating from ``gen_start``, in blocks of
        ``block_length`` (block ``j`` covers generation positions ``[j * block_length, (j + 1) * block_length)``, as
        LLaDA ``generate()``). Whatever an earlier call kept is dropped."""
        self.model, self.batch_size, self.gen_start, self.block_length = model, batch_size, gen_start, block_length

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
        raise NotImplementedError

    def assemble(
        self, rows: torch.Tensor, windows: list[Window], values: list[dict[str, torch.Tensor | None]]
    ) -> dict[str, torch.Tensor | None]:
        """Per-position values over the whole generation region (b, Lg, ...) for the active rows ``rows`` (b,), from
        each window's ``values`` (name -> (g, hi - lo, ...), or None)."""
        raise NotImplementedError

    def nbytes(self) -> int:
        """Memory the strategy holds for the rows' later steps (after a call: the most it held during it)."""
        raise NotImplementedError

    def _window(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        rows: torch.Tensor,
        idx: torch.Tensor,
        span: tuple[int, int, int],
        record: bool,
        output_hidden_states: bool,
    ) -> Window:
        """One forward against ``self.store`` for the step's rows ``idx`` (indices into ``rows``): ``span`` = (run,
        lo, end): positions ``[run, end)`` run, the keys end at ``end`` unless ``record`` (a full forward keeps its
        keys/values), and the window gives fresh outputs from position ``lo`` on."""
        run, lo, end = span
        L = input_ids.shape[1]
        out = self.model(
            input_ids[idx, run:end],
            None if attention_mask is None else attention_mask[idx],
            output_hidden_states=output_hidden_states,
            cache=KVWindow(self.store, self._rows(rows[idx]), run, end, L if self.keys_to_end else end, record),
        )
        hidden = None if out.hidden_states is None else out.hidden_states[:, lo - run :]
        g = self.gen_start
        return Window(idx, lo - g, end - g, out.logits[:, lo - run :], hidden, record)

    def _rows(self, rows: torch.Tensor) -> torch.Tensor | None:
        """``rows``, or None when they are every batch row in order (kept stores are then read and written as views)."""
        whole = len(rows) == self.batch_size and bool((rows == torch.arange(self.batch_size, device=rows.device)).all())
        return None if whole else rows


class NoCache(CacheStrategy):
    """``--cache none``: every step runs the full sequence in one forward; nothing is kept."""

    mode = "none"

    def forward(self, input_ids, attention_mask, rows, block, first, output_hidden_states):
        g = self.gen_start
        b, L = input_ids.shape
        out = self.model(input_ids, attention_mask, output_hidden_states=output_hidden_states)
        hidden = None if out.hidden_states is None else out.hidden_states[:, g:]
        window = Window(torch.arange(b, device=input_ids.device), 0, L - g, out.logits[:, g:], hidden, True)
        return [window], torch.full((b,), L, device=input_ids.device)

    def assemble(self, rows, windows, values):
        """The one full window's values, as they are."""
        (part,) = values
        return dict(part)

    def nbytes(self) -> int:
        return 0


class FastDLLMCache(CacheStrategy):
    """Fast-dLLM's block-wise approximate key/value cache (Wu et al. 2025, §3.1-3.2): a row's full step keeps the
    keys/values of the whole sequence and its per-position values; its later steps of the block run the window
    ``[start, end)`` against them (``end``: the block's end with ``suffix``, else the sequence end)."""

    partial = True
    suffix: bool  # keep the keys/values after the block too (dual): the window ends at the block's end

    def prepare(self, model: MaskedDiffusionModel, batch_size: int, gen_start: int, block_length: int) -> None:
        super().prepare(model, batch_size, gen_start, block_length)
        self.shift = model.logit_shift
        self.store = KVStore(batch_size)
        self.kept: dict[str, torch.Tensor] = {}  # (B, Lg, ...) per-position values of each row's last full step

    def _windows(self, block: torch.Tensor, first: torch.Tensor, L: int) -> list[tuple[torch.Tensor, int, int, bool]]:
        """(indices into the active rows, window start, window end, record) of each forward of this step."""
        groups = []
        if first.any():
            groups.append((first.nonzero().squeeze(1), 0, L, True))
        rest = ~first
        for b in block[rest].unique().tolist():
            start = self.gen_start + b * self.block_length
            end = min(start + self.block_length, L) if self.suffix else L
            groups.append(((rest & (block == b)).nonzero().squeeze(1), start, end, False))
        return groups

    def forward(self, input_ids, attention_mask, rows, block, first, output_hidden_states):
        g = self.gen_start
        b, L = input_ids.shape
        windows = []
        positions = torch.zeros(b, dtype=torch.long, device=input_ids.device)
        for idx, start, end, record in self._windows(block, first, L):
            run = 0 if record else max(start - self.shift, 0)
            span = (run, g if record else start, end)  # fresh outputs: the generation region / the block
            windows.append(self._window(input_ids, attention_mask, rows, idx, span, record, output_hidden_states))
            positions[idx] = end - run
        return windows, positions

    def assemble(self, rows, windows, values):
        """A full window's values are the rows' values and are kept for their later steps; a cached window's are
        written over a copy of the rows' kept ones, which hold their block's first step outside the window."""
        out: dict[str, torch.Tensor | None] = {}
        for window, part in zip(windows, values):
            whole = len(window.rows) == len(rows)  # the window ran every active row, in order
            at = slice(None) if whole else window.rows
            for name, value in part.items():
                if value is None:
                    out[name] = None
                    continue
                if window.full:
                    self._keep(rows[window.rows], name, value)
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

    def _keep(self, rows: torch.Tensor, name: str, value: torch.Tensor) -> None:
        """Keep a full step's per-position ``value`` of ``rows`` for their later steps."""
        target = self._rows(rows)
        if name not in self.kept:
            self.kept[name] = value.new_empty((self.batch_size, *value.shape[1:]))
        self.kept[name][slice(None) if target is None else target] = value

    def nbytes(self) -> int:
        """Kept keys/values plus the first-step per-position values of the generation region (the token rule's
        probabilities, tokens and confidences; features for policies that read them)."""
        outputs = sum(t.numel() * t.element_size() for t in self.kept.values())
        return self.store.nbytes() + outputs


class PrefixCache(FastDLLMCache):
    """``--cache prefix`` (Fast-dLLM ``generate_with_prefix_cache``): later steps run the block and everything after it."""

    mode = "prefix"
    suffix = False


class DualCache(FastDLLMCache):
    """``--cache dual`` (Fast-dLLM ``generate_with_dual_cache``): later steps run the block only."""

    mode = "dual"
    suffix = True


class BlockCache(CacheStrategy):
    """``--cache block``: the exact cache of block-causal models (block diffusion; see the module docstring). Each row
    keeps how far its kept keys/values are final (``final``); a step runs ``[final, end)`` (``end``: its block's
    end) against the kept ones before it, and the keys stop at ``end`` (later blocks are invisible to the block).
    Outside the block a policy sees each position's last computed values (zeros for blocks not yet run)."""

    mode = "block"
    keys_to_end = False  # later blocks are invisible to the current one

    def prepare(self, model: MaskedDiffusionModel, batch_size: int, gen_start: int, block_length: int) -> None:
        super().prepare(model, batch_size, gen_start, block_length)
        self.base = gen_start - gen_start % block_length  # where block 0 starts: blocks count from position 0
        self.store: KVStore | None = None
        self.final = torch.zeros(batch_size, dtype=torch.long)  # per row: kept keys/values final before this
        self.kept: dict[str, torch.Tensor] = {}  # (B, Lg, ...) each position's last computed values

    def forward(self, input_ids, attention_mask, rows, block, first, output_hidden_states):
        g, b, L = self.gen_start, *input_ids.shape
        if self.store is None:
            self.store, self.region = KVStore(self.batch_size, L), L - g
        starts = self.base + block.cpu() * self.block_length
        runs = self.final[rows.cpu()]
        windows, positions = [], torch.zeros(b, dtype=torch.long, device=input_ids.device)
        for start, run in torch.stack([starts, runs], 1).unique(dim=0).tolist():
            idx = ((starts == start) & (runs == run)).nonzero().squeeze(1).to(input_ids.device)
            span = (run, max(start, g), min(start + self.block_length, L))
            windows.append(self._window(input_ids, attention_mask, rows, idx, span, False, output_hidden_states))
            positions[idx] = span[2] - run
            self.final[rows[idx].cpu()] = start  # every block before this one is finished: its keys/values are final
        return windows, positions

    def assemble(self, rows, windows, values):
        """Each window's fresh values written over the rows' kept ones; the rows' kept values over the region."""
        present: dict[str, bool] = {}
        for window, part in zip(windows, values):
            for name, value in part.items():
                present[name] = value is not None
                if value is None:
                    continue
                if name not in self.kept:
                    self.kept[name] = value.new_zeros((self.batch_size, self.region, *value.shape[2:]))
                self.kept[name][rows[window.rows], window.lo : window.hi] = value
        return {name: self.kept[name][rows] if there else None for name, there in present.items()}

    def nbytes(self) -> int:
        kept = sum(t.numel() * t.element_size() for t in self.kept.values())
        return (self.store.nbytes() if self.store is not None else 0) + kept


class EncoderCache(CacheStrategy):
    """``--cache encoder``: encoder-decoder block diffusion (DiffusionGemma, ``MaskedDiffusionModel.canvas`` "uniform").
    The encoder reads the context into a key/value cache once per canvas (the prompt at the first, the previous
    canvas's final tokens at each later one: exact, the encoder being causal); every step runs the decoder on the
    current canvas only, against that cache, conditioned on the row's previous step's tempered logits (kept by
    :meth:`assemble`; none at a canvas's first step), as DiffusionGemma's ``generate()`` does.

    Rows decode their canvases in lockstep (:class:`unmask.engine.canvas.RenoisedCanvas`); the cache holds the rows
    still generating, and a step over some of them reads a row-selected view of it. NFE counts decoder forwards (as
    ``generate()``'s ``decoder_forward_passes``); ``positions_run`` counts the encoded and the denoised positions."""

    mode = "encoder"

    def prepare(self, model: MaskedDiffusionModel, batch_size: int, gen_start: int, block_length: int) -> None:
        super().prepare(model, batch_size, gen_start, block_length)
        self.cache, self.alive = None, None  # the encoder cache, of the rows ``alive`` (ascending)
        self.kept: torch.Tensor | None = None  # (B, C, V) each row's last tempered logits (self-conditioning)
        self.most = 0  # the largest the encoder cache has been (it changes only when a canvas is encoded)

    def forward(self, input_ids, attention_mask, rows, block, first, output_hidden_states):
        b, L = input_ids.shape
        C = self.block_length
        lo = int(block[0]) * C
        start = self.gen_start + lo
        mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        positions = torch.full((b,), C, device=input_ids.device)
        if bool(first[0]):  # a canvas's first step (every row at once): encode what is new in the context
            alive = rows.unique()  # the active rows, ascending (they come first; the rest repeat the first)
            n = len(alive)
            begin = 0 if lo == 0 else start - C
            self._keep_rows(alive)
            if self.cache is None:
                self.cache = self.model.new_cache()
            self.model.encode(input_ids[:n, begin:start], mask[:n, :start], self.cache, begin)
            self.most = max(self.most, self._cache_bytes())
            positions += start - begin
        cache = self._view(rows)
        conditioning = None if bool(first[0]) else self.kept[rows]
        out = self.model.denoise(
            input_ids[:, start : start + C], conditioning, cache, mask[:, : start + C], start, output_hidden_states
        )
        window = Window(torch.arange(b, device=input_ids.device), lo, lo + C, out.logits, out.hidden_states, True)
        return [window], positions

    def _keep_rows(self, alive: torch.Tensor) -> None:
        """Drop the rows that stopped generating from the encoder cache (rows only ever leave)."""
        if self.alive is not None and not torch.equal(self.alive, alive):
            self.cache.batch_select_indices(torch.searchsorted(self.alive, alive))
        self.alive = alive

    def _view(self, rows: torch.Tensor):
        """The encoder cache of ``rows`` (a subset of the alive rows, possibly repeated): the cache itself, or a
        row-selected copy of its layers (the cache is left as it is)."""
        if torch.equal(rows, self.alive):
            return self.cache
        view = copy.copy(self.cache)
        view.layers = [copy.copy(layer) for layer in self.cache.layers]
        view.batch_select_indices(torch.searchsorted(self.alive, rows))
        return view

    def assemble(self, rows, windows, values):
        """The one window's values, as they are; its tempered ``logits`` are kept as the rows' self-conditioning."""
        (part,) = values
        logits = part["logits"].to(self.model.embedding_dtype)
        if self.kept is None:
            self.kept = logits.new_empty((self.batch_size, *logits.shape[1:]))
        self.kept[rows] = logits
        return dict(part)

    def _cache_bytes(self) -> int:
        tensors = (getattr(layer, name, None) for layer in self.cache.layers for name in ("keys", "values"))
        return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))

    def nbytes(self) -> int:
        """The encoder cache and the kept self-conditioning logits (after a call: the most held during it; the
        logits are allocated once, for every row)."""
        kept = 0 if self.kept is None else self.kept.numel() * self.kept.element_size()
        return self.most + kept


CACHES: dict[str, type[CacheStrategy]] = {
    cls.mode: cls for cls in (NoCache, PrefixCache, DualCache, BlockCache, EncoderCache)
}


def cache_strategy(model: MaskedDiffusionModel, mode: str, cache: CacheStrategy | None = None) -> CacheStrategy:
    """The strategy serving ``mode`` (``SamplingConfig.cache``) for ``model``: ``cache`` when given (injected; it
    must be one of ``mode``), else a new one of :data:`CACHES`. One clear error for an unknown mode, a strategy of
    another mode, or a mode ``model`` does not serve (its ``cache_modes``)."""
    if mode not in CACHES:
        raise ValueError(f"unknown cache mode {mode!r}; valid modes: {', '.join(CACHES)}")
    if mode == "none" and "none" not in model.cache_modes:  # "no approximate cache": the model's own exact one
        mode = model.cache_modes[0]
    if cache is None:
        cache = CACHES[mode]()
    elif cache.mode != mode:
        raise ValueError(
            f"the cache strategy given ({type(cache).__name__}) serves cache mode {cache.mode!r}, but the "
            f"sampling config says cache={mode!r}; give SamplingConfig(cache={cache.mode!r})"
        )
    if mode not in model.cache_modes:
        if model.canvas == "uniform":
            reason = (
                "its decoder runs each step on the current canvas against the encoder's exact cache (--cache "
                "encoder, what --cache none gives it)"
            )
        elif model.block_length:
            reason = (
                f"it is block-causal (block diffusion): its finished blocks' keys/values are exact and kept by "
                f"--cache block; Fast-dLLM's approximate {mode!r} cache does not apply"
            )
        elif mode == "block":
            reason = "the block cache is exact only for block-causal models (LLaDA2.x) and this model attends both ways"
        else:
            reason = (
                "it runs no partial forward against kept keys/values (remote-code and generic Hugging Face models "
                "don't; the native LLaDA / Dream backends and the built-in models do)"
            )
        raise ValueError(
            f"{model.name} cannot serve cache mode {mode!r}: {reason}; modes it can use: {', '.join(model.cache_modes)}"
        )
    return cache
