"""Random streams for decoding: where every random number of a decode comes from.

A decode draws through the step's :class:`Draws` (``StepState.draws``), bound to the active rows and the
generation region. Two stream layouts implement it:

* :class:`ExampleStreams`: one generator per example, seeded from ``(seed, example id)``. A row's draws depend
  only on its own history, so results do not depend on batch size, batch order or the number of processes.
* :class:`SharedStream`: one generator for the whole batch with batch-shaped draws, the layout of the upstream
  loops (LLaDA ``add_gumbel_noise`` draws ``rand_like(logits)`` over (B, L, V); Dream's ``Categorical`` and
  ``multinomial`` draw over the masked positions of the batch). With torch's global generator (``None``) its
  draws are the upstream draws, number for number; positional draws span the full row, prompt included.

Draws come in three distributions (``uniform``, ``normal``, ``exponential``; ``torch.multinomial`` with one
sample, or without replacement, is ``argmax`` / ``topk`` of ``p / Exp(1)`` over the same shape) and two
addressings: positional, ``(b, Lg, *tail)``, and at the ``True`` entries of a mask, ``(n, *tail)`` in row-major
order (how upstream indexes ``logits[mask_index]``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

Distribution = Callable[[tuple[int, ...], torch.dtype, torch.device, "torch.Generator | None"], torch.Tensor]
Kind = str | Distribution  # a name in DISTRIBUTIONS, or the draw itself

DISTRIBUTIONS: dict[str, Distribution] = {
    "uniform": lambda shape, dtype, device, g: torch.rand(shape, generator=g, dtype=dtype, device=device),
    "normal": lambda shape, dtype, device, g: torch.randn(shape, generator=g, dtype=dtype, device=device),
    "exponential": lambda shape, dtype, device, g: torch.empty(shape, dtype=dtype, device=device).exponential_(
        generator=g
    ),
}


def _draw(kind: Kind, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, g: torch.Generator | None):
    return (DISTRIBUTIONS[kind] if isinstance(kind, str) else kind)(shape, dtype, device, g)


class Draws:
    """The draws of one engine step for ``rows`` (b,) of the batch over the generation region
    (``length`` positions from ``gen_start``). Subclasses implement :meth:`_positional` and :meth:`_at`."""

    def __init__(self, rows: torch.Tensor, gen_start: int, length: int, device: torch.device) -> None:
        self.rows, self.gen_start, self.length, self.device = rows, gen_start, length, device

    def subset(self, keep: torch.Tensor) -> Draws:
        """The draws of the rows ``keep`` (b,) bool only (rows that draw nothing this step consume nothing)."""
        sub = object.__new__(type(self))
        sub.__dict__.update(self.__dict__, rows=self.rows[keep])
        return sub

    def windows(self) -> WindowDraws:
        """This step's draws split over the forwards of a cached step (:class:`WindowDraws`)."""
        return WindowDraws(self)

    def uniform(self, *tail: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(b, Lg, *tail) draws from U[0, 1)."""
        return self._positional("uniform", tail, dtype)

    def normal(self, *tail: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(b, Lg, *tail) draws from N(0, 1)."""
        return self._positional("normal", tail, dtype)

    def exponential(self, *tail: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(b, Lg, *tail) draws from Exp(1)."""
        return self._positional("exponential", tail, dtype)

    def uniform_rows(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(b, *shape) U[0, 1) draws of any per-row shape (e.g. scores with a STOP column), not tied to positions."""
        return self._rows("uniform", shape, dtype)

    def exponential_rows(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(b, *shape) Exp(1) draws of any per-row shape (e.g. one per position of a row's current block)."""
        return self._rows("exponential", shape, dtype)

    def integers(self, high: int, *shape: int) -> torch.Tensor:
        """(b, *shape) uniform integers in [0, high) (``torch.randint``), not tied to positions (e.g. a canvas of
        random tokens)."""
        return self._rows(
            lambda s, dtype, device, g: torch.randint(0, high, s, generator=g, device=device), shape, None
        )

    def uniform_at(self, where: torch.Tensor, *tail: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(where.sum(), *tail) U[0, 1) draws, one per ``True`` entry of ``where`` (b, Lg), row-major."""
        return self._at("uniform", where, tail, dtype)

    def exponential_at(self, where: torch.Tensor, *tail: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(where.sum(), *tail) Exp(1) draws, one per ``True`` entry of ``where`` (b, Lg), row-major."""
        return self._at("exponential", where, tail, dtype)

    def _positional(self, kind: str, tail: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        raise NotImplementedError

    def _rows(self, kind: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        raise NotImplementedError

    def _at(self, kind: str, where: torch.Tensor, tail: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        raise NotImplementedError


class WindowDraws:
    """A step's positional draws shared out over the forwards it ran (:mod:`unmask.engine.cache`): a forward that gave
    fresh outputs for rows ``idx`` at generation positions ``[lo, hi)`` gets :meth:`part` ``(idx, lo, hi)``, whose
    i-th positional draw is the i-th positional draw of the whole step (every row, every position; drawn once,
    when a part first asks) sliced to those rows and positions. The numbers are therefore those of one draw over
    the step, however its rows split into forwards and whatever window each runs."""

    def __init__(self, step: Draws) -> None:
        self.step, self.drawn = step, []

    def part(self, idx: torch.Tensor, lo: int, hi: int) -> Draws:
        """The draws of the step's rows ``idx`` (ascending indices into them) at positions ``[lo, hi)``."""
        return _WindowPart(self, None if len(idx) == len(self.step.rows) else idx, lo, hi)


class _WindowPart(Draws):
    def __init__(self, shared: WindowDraws, idx: torch.Tensor | None, lo: int, hi: int) -> None:  # idx None: every row
        step = shared.step
        super().__init__(step.rows if idx is None else step.rows[idx], step.gen_start + lo, hi - lo, step.device)
        self.shared, self.idx, self.lo, self.hi, self.calls = shared, idx, lo, hi, 0

    def _positional(self, kind, tail, dtype):
        drawn = self.shared.drawn
        if self.calls == len(drawn):
            drawn.append(self.shared.step._positional(kind, tail, dtype))
        full, self.calls = drawn[self.calls], self.calls + 1
        return (full if self.idx is None else full[self.idx])[:, self.lo : self.hi]

    def _rows(self, *args):
        raise NotImplementedError("a forward's share of the draws is positional only (a token rule's prepare)")

    _at = _rows


class RandomStreams:
    """Where a decode's random numbers come from; :meth:`bind` gives one step's :class:`Draws`."""

    def bind(self, rows: torch.Tensor, gen_start: int, length: int, device: torch.device) -> Draws:
        raise NotImplementedError

    def check(self, batch_size: int, device: torch.device) -> None:
        """Raise when these streams cannot serve a batch of ``batch_size`` rows on ``device``."""


class _SharedDraws(Draws):
    def __init__(self, generator: torch.Generator | None, *args) -> None:
        super().__init__(*args)
        self.generator = generator

    def _positional(self, kind, tail, dtype):
        shape = (len(self.rows), self.gen_start + self.length, *tail)
        return _draw(kind, shape, dtype, self.device, self.generator)[:, self.gen_start :]

    def _rows(self, kind, shape, dtype):
        return _draw(kind, (len(self.rows), *shape), dtype, self.device, self.generator)

    def _at(self, kind, where, tail, dtype):
        return _draw(kind, (int(where.sum()), *tail), dtype, self.device, self.generator)


class SharedStream(RandomStreams):
    """One generator for the whole batch, batch-shaped draws (the upstream loops' layout); ``None`` is torch's
    global generator, so a seeded ``torch.manual_seed`` run reproduces the upstream draws exactly."""

    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator

    def check(self, batch_size: int, device: torch.device) -> None:
        if self.generator is not None and self.generator.device.type != device.type:
            raise ValueError(
                f"the random generator is on {self.generator.device} but the model on {device}; "
                f"create it with torch.Generator(device=model.device)"
            )

    def bind(self, rows, gen_start, length, device):
        return _SharedDraws(self.generator, rows, gen_start, length, device)


class _ExampleDraws(Draws):
    def __init__(self, generators: list[torch.Generator], *args) -> None:
        super().__init__(*args)
        self.generators = generators

    def _positional(self, kind, tail, dtype):
        return self._rows(kind, (self.length, *tail), dtype)

    def _rows(self, kind, shape, dtype):
        if len(self.rows) == 0:
            return torch.empty((0, *shape), dtype=dtype or torch.long, device=self.device)
        return torch.stack([_draw(kind, shape, dtype, self.device, self.generators[r]) for r in self.rows.tolist()])

    def _at(self, kind, where, tail, dtype):
        counts = where.sum(1).tolist()
        parts = [
            _draw(kind, (n, *tail), dtype, self.device, self.generators[r])
            for r, n in zip(self.rows.tolist(), counts)
            if n
        ]
        return torch.cat(parts) if parts else torch.empty((0, *tail), dtype=dtype, device=self.device)


class ExampleStreams(RandomStreams):
    """One generator per example (row ``i`` of the batch is example ``example_ids[i]``), seeded with
    :meth:`seed_of` ``(seed, example_id)``: a row's draws never depend on the other rows."""

    def __init__(
        self, seed: int, example_ids: Sequence[int] | torch.Tensor, device: torch.device | str = "cpu"
    ) -> None:
        ids = [int(i) for i in (example_ids.tolist() if isinstance(example_ids, torch.Tensor) else example_ids)]
        self.seed, self.example_ids = int(seed), ids
        self.generators = [torch.Generator(device=device).manual_seed(self.seed_of(self.seed, i)) for i in ids]
        self.device = torch.device(device)

    @staticmethod
    def seed_of(seed: int, example_id: int) -> int:
        """A 63-bit seed for example ``example_id`` under run seed ``seed`` (numpy SeedSequence: well mixed,
        distinct for distinct pairs, the same on every machine)."""
        if seed < 0 or example_id < 0:
            raise ValueError(f"seed and example id must be >= 0, got seed={seed}, example_id={example_id}")
        return int(np.random.SeedSequence([seed, example_id]).generate_state(1, np.uint64)[0] >> np.uint64(1))

    def check(self, batch_size: int, device: torch.device) -> None:
        if batch_size != len(self.generators):
            raise ValueError(
                f"ExampleStreams holds {len(self.generators)} example streams for a batch of {batch_size} rows; "
                "give one example id per row"
            )
        if self.device.type != device.type:
            raise ValueError(
                f"ExampleStreams live on {self.device} but the model on {device}; pass device=model.device"
            )

    def bind(self, rows, gen_start, length, device):
        return _ExampleDraws(self.generators, rows, gen_start, length, device)


def as_streams(generator: torch.Generator | RandomStreams | None) -> RandomStreams:
    """What ``generate(generator=...)`` accepts: streams as they are, a torch.Generator (or None, torch's global
    generator) as a :class:`SharedStream`."""
    if isinstance(generator, RandomStreams):
        return generator
    if generator is None or isinstance(generator, torch.Generator):
        return SharedStream(generator)
    raise ValueError(f"generator must be a torch.Generator, RandomStreams or None, got {type(generator).__name__}")
