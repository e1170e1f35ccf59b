"""Training-free unmasking baselines from recent papers, each as its paper (and official code) defines it:
KLASS (Kim et al. 2025), PC-Sampler (Huang et al. 2025) and the dilated unmasking scheduler DUS (Luxembourg et
al. 2025). docs/policies.md says where each applies to the built-in tasks."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch

from unmask.engine.policy import Policy
from unmask.engine.state import StepState
from unmask.policies.base import ScorePolicy, top_k_mask
from unmask.policies.heuristics import _check_number


class KLASSPolicy(Policy):
    """KL-Adaptive Stability Sampling (KLASS; Kim et al. 2025, arXiv 2511.05664; the official
    LLaDA loop ``stable_confident_decode``): a masked position is *ready* when its confidence exceeds ``conf_threshold`` and
    the KL divergence between its predicted distributions at consecutive steps,

        d_t^i = KL(p_t^i || p_{t-1}^i) = sum_v p_t^i(v) (log(p_t^i(v) + 1e-12) - log(p_{t-1}^i(v) + 1e-12)),

    stayed below ``kl_threshold`` at each of the last ``history_length`` steps (none is ready in a block's first
    ``history_length - 1`` steps, nor before a row has that many distributions). A step reveals every ready
    candidate; when none is, the schedule's count (at least one) of the most confident (LLaDA's top-k fallback).

    The previous distributions and KL history live in the step's row memory (``StepState.recall`` /
    ``remember``), one per row of the generate() call, so rows leaving the batch and new batches need nothing
    from the policy object. Defaults are the official function's; its LLaDA GSM8K script uses
    ``conf_threshold=0.6:kl_threshold=0.015``, its Dream one ``0.9:0.001``."""

    name = "klass"

    def __init__(self, conf_threshold: float = 0.9, kl_threshold: float = 0.01, history_length: int = 2) -> None:
        _check_number("klass", "conf_threshold", conf_threshold, 0, 1)
        _check_number("klass", "kl_threshold", kl_threshold, 0, low_open=True)
        _check_number("klass", "history_length", history_length, 1, integer=True)
        self.conf_threshold, self.kl_threshold, self.history_length = (
            float(conf_threshold),
            float(kl_threshold),
            int(history_length),
        )
        self.name = f"klass:conf_threshold={self.conf_threshold:g}:kl_threshold={self.kl_threshold:g}:history_length={self.history_length}"

    def select(self, state: StepState) -> torch.Tensor:
        p = state.probs.double()
        previous = state.recall("probs")
        if previous is None:
            kl = torch.full(p.shape[:-1], float("inf"), dtype=p.dtype, device=p.device)
        else:
            kl = (p * ((p + 1e-12).log() - (previous.double() + 1e-12).log())).sum(-1)
        history = state.recall("kl")
        if history is None:
            history = kl.new_full((*kl.shape, self.history_length), float("inf"))
        history = torch.cat([history[..., 1:], kl[..., None]], -1)
        seen = state.recall("candidates")
        entered = (
            state.candidates if seen is None else state.candidates & ~seen
        )  # a block's positions enter at its start
        steps = state.recall("block_step")
        block_step = torch.where(entered.any(1), 0, (0 if steps is None else steps) + 1)
        for name, value in (
            ("probs", state.probs),
            ("kl", history),
            ("candidates", state.candidates),
            ("block_step", block_step),
        ):
            state.remember(name, value)
        stable = (history < self.kl_threshold).all(-1) & (block_step >= self.history_length - 1)[:, None]
        ready = stable & (state.confidence > self.conf_threshold) & state.candidates
        fallback = top_k_mask(state.confidence, state.candidates, state.num_transfer.clamp(min=1), state.offset)
        return torch.where(ready.any(1, keepdim=True), ready, fallback)


class PCSamplerPolicy(ScorePolicy):
    """PC-Sampler (Huang et al. 2025, arXiv 2508.13021; the official
    ``pc_sampler_function``): reveal the
    schedule's count of candidates with the highest

        score_i = exp(-lambd * i) * min(alpha, -p_i * log(f(x_i) + 1e-9)),

    the position-aware weight (i: the position within the block) times the content-aware calibrated confidence
    (p_i: the confidence of the token x_i drawn for position i, f: the token's frequency in a background corpus).
    ``background``: a JSON file in the official ``P_baseline.json`` layout (``{"num_token": N,
    "p_baseline_dict": {token_id: count}}``; absent tokens count 1); none: the uniform f = 1/V, so the
    calibration is p_i log V. The weight is taken from the row's first candidate, not the block start: a factor
    common to the row, so the ranking is the paper's. Defaults are the paper's (its sudoku runs use lambd=0)."""

    name = "pc_sampler"

    def __init__(self, lambd: float = 0.25, alpha: float = 10.0, background: str | None = None) -> None:
        super().__init__()
        _check_number("pc_sampler", "lambd", lambd, 0)
        _check_number("pc_sampler", "alpha", alpha, 0, low_open=True)
        self.lambd, self.alpha = float(lambd), float(alpha)
        self.counts: dict[int, float] | None = None
        self.total = 1.0
        self.frequencies: dict[tuple[int, str], torch.Tensor] = {}  # f by (vocabulary size, device), built once
        if background is not None:
            path = Path(str(background))
            try:
                data = json.loads(path.read_text())
                self.total = float(data["num_token"])
                self.counts = {int(k): float(v) for k, v in data["p_baseline_dict"].items()}
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise ValueError(
                    f"pc_sampler: background must be a JSON file {{'num_token': N, 'p_baseline_dict': "
                    f"{{token_id: count}}}} (PC-Sampler's P_baseline.json); {path} gave {e!r}"
                ) from e
        self.name = f"pc_sampler:lambd={self.lambd:g}:alpha={self.alpha:g}" + (
            f":background={background}" if background else ""
        )

    def frequency(self, vocab_size: int, device: torch.device) -> torch.Tensor:
        """(V,) f(v): the background frequency of each token (uniform without a background file)."""
        key = (vocab_size, str(device))
        if key not in self.frequencies:
            if self.counts is None:
                f = torch.full((vocab_size,), 1.0 / vocab_size, dtype=torch.float64, device=device)
            else:
                f = torch.full((vocab_size,), 1.0 / self.total, dtype=torch.float64, device=device)
                ids = [k for k in self.counts if 0 <= k < vocab_size]
                values = torch.tensor([self.counts[k] / self.total for k in ids], dtype=torch.float64, device=device)
                f = f.index_put((torch.tensor(ids, dtype=torch.long, device=device),), values)
            self.frequencies[key] = f
        return self.frequencies[key]

    def score(self, state: StepState) -> torch.Tensor:
        f = self.frequency(state.probs.shape[-1], state.probs.device)[state.tokens]
        calibrated = (-state.confidence.double() * torch.log(f + 1e-9)).clamp(max=self.alpha)
        i = torch.arange(state.candidates.shape[1], device=f.device, dtype=torch.float64)
        first = state.candidates.long().argmax(1, keepdim=True)
        return torch.exp(-self.lambd * (i - first)) * calibrated


@lru_cache(maxsize=64)
def dilated_levels(length: int, base: int = 2, base_skip: int = 1) -> tuple[int, ...]:
    """DUS's coarse-to-fine groups of the offsets 0..length-1 of one block (Luxembourg et al. 2025, arXiv 2506.19037;
    official ``dilated_unmask_levels`` + ``merge_last_level``), as each offset's group index: the offsets that
    are multiples of the stride s = length // base^base_skip come first, then the new multiples of s // base, and
    so on down to stride 1 (empty rounds take no index); a last group smaller than the one before joins it."""
    level = [-1] * length
    stride, k = (length // base**base_skip if base > 1 else 0), 0
    while stride >= 1:
        new = [j for j in range(0, length, stride) if level[j] < 0]
        for j in new:
            level[j] = k
        k += bool(new)
        stride //= base
    level = [k if v < 0 else v for v in level]
    sizes = [level.count(g) for g in range(max(level) + 1)]
    if len(sizes) >= 2 and sizes[-1] < sizes[-2]:
        level = [min(v, len(sizes) - 2) for v in level]
    return tuple(level)


class DilatedPolicy(Policy):
    """Dilated Unmasking Scheduler (DUS; Luxembourg et al. 2025, arXiv 2506.19037; official
    ``generate_scheduled(scheduler="dilated")``): the generation region is cut into blocks of ``block_length``
    positions (none: one block), each block's offsets into the dilated groups of :func:`dilated_levels`
    (about log_base(B) of them, the positions of a group far apart), and each step reveals the masked
    positions of the next group of the leftmost unfinished block, whatever the model's confidence.

    Groups with no masked position (all given, e.g. sudoku clues) are skipped rather than spent on a forward
    that reveals nothing, which at temperature 0 gives the same tokens with fewer NFE. The official script's
    optional remasking of revealed tokens below a confidence threshold is not reproduced: the engine's reveals
    are final. The groups are spread over *sequence* positions (the paper's first-order Markov assumption on
    text); on grid tasks that order carries no such meaning."""

    name = "dus"

    def __init__(self, block_length: int | None = None, base: int = 2, base_skip: int = 1) -> None:
        if block_length is not None:
            _check_number("dus", "block_length", block_length, 1, integer=True)
        _check_number("dus", "base", base, 1, integer=True)
        _check_number("dus", "base_skip", base_skip, 1, integer=True)
        self.block_length = None if block_length is None else int(block_length)
        self.base, self.base_skip = int(base), int(base_skip)
        self.name = f"dus:block_length={self.block_length}:base={self.base}:base_skip={self.base_skip}".replace(
            "block_length=None:", ""
        )

    def groups(self, length: int, device: torch.device) -> torch.Tensor:
        """(length,) the order in which each generation position's group is revealed: block, then group."""
        size = self.block_length or length
        rank, start = [], 0
        while start < length:
            n = min(size, length - start)
            rank += [start * length + g for g in dilated_levels(n, self.base, self.base_skip)]
            start += n
        return torch.tensor(rank, dtype=torch.long, device=device)

    def select(self, state: StepState) -> torch.Tensor:
        rank = self.groups(state.candidates.shape[1], state.candidates.device).expand(state.candidates.shape)
        big = torch.iinfo(torch.long).max
        first = rank.masked_fill(~state.candidates, big).min(1, keepdim=True).values
        return state.candidates & (rank == first)
