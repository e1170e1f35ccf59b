"""Several processes for one training run or evaluation (``accelerate launch`` / ``torchrun``).

The MDM is frozen and the policy is tiny, so every process holds a copy of both (data parallel, as in the
d1 / diffu-GRPO and UPO trainers that run under ``accelerate launch``): each one rolls out its share of a
step's prompt groups or decodes its share of the evaluation examples, and only the policy's gradients
travel, all-reduced by :class:`torch.nn.parallel.DistributedDataParallel`. accelerate's
:class:`accelerate.PartialState` reads the launcher's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
...) and starts :mod:`torch.distributed` (gloo on CPU, NCCL on GPU; one GPU per process).

Without a launcher the world is one process and every method here is the identity, so the single-process
code path is the distributed one with ``world_size == 1``.

Shards are contiguous and in order (rank r holds items ``[lo_r, hi_r)``), so gathering concatenates in rank
order and gives back the single-process order. Training groups must split evenly (:meth:`Distributed.shard_groups`);
evaluation examples may not (:meth:`Distributed.shard`: the first ``n % world_size`` ranks hold one more), and
no example is ever decoded twice or counted twice.
"""

from __future__ import annotations

import atexit
import datetime
import os
import pickle
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")
MPI_SIZES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")  # world sizes mpirun / mpiexec set


class RankFailure(RuntimeError):
    """Another process of the run stopped (an error, a kill, a lost node); this one stops too."""


def launched() -> bool:
    """Whether a launcher started this process as one of several (accelerate launch, torchrun, srun + torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def check_single_launch() -> None:
    """One clear error when a launcher was asked for several processes but this one runs alone (no ``WORLD_SIZE``):
    ``accelerate launch`` on the CPU starts one plain process (accelerate 1.x runs several CPU processes only
    through mpirun, whose ranks would each run the whole job), which must not pass for a multi-process run."""
    mpi = next((int(os.environ[k]) for k in MPI_SIZES if os.environ.get(k, "").isdigit()), 1)
    accelerate = "ACCELERATE_MIXED_PRECISION" in os.environ and "MASTER_PORT" in os.environ  # --num_processes > 1
    if mpi > 1 or accelerate:
        asked = f"{mpi} processes through mpirun" if mpi > 1 else "several processes through accelerate launch"
        raise ValueError(
            f"asked for {asked}, but this process was started alone (no WORLD_SIZE; accelerate launch "
            "starts one process on the CPU): launch CPU processes with `torchrun --nproc_per_node N -m "
            "unmask -- COMMAND ...`, or run without a launcher for one process"
        )


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run: ``rank`` of ``world_size``; ``device`` is its accelerator (or CPU)."""

    rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def main(self) -> bool:
        """Rank 0: the only process that prints, writes checkpoints, ``metrics.csv``, TensorBoard and JSON."""
        return self.rank == 0

    # ----- sharding -----
    def bounds(self, n: int, rank: int | None = None) -> tuple[int, int]:
        """Items ``[lo, hi)`` of ``n`` held by ``rank`` (default: this one): contiguous, sizes differ by at most one."""
        r = self.rank if rank is None else rank
        base, extra = divmod(n, self.world_size)
        lo = r * base + min(r, extra)
        return lo, lo + base + (r < extra)

    def shard(self, items: Sequence[T], what: str = "examples") -> Sequence[T]:
        """This rank's contiguous share of ``items`` (evaluation examples); uneven shares are fine."""
        if len(items) < self.world_size:
            raise ValueError(
                f"{len(items)} {what} cannot be shared by {self.world_size} processes (each needs at "
                f"least one): give at least {self.world_size} or launch fewer processes"
            )
        lo, hi = self.bounds(len(items))
        return items[lo:hi]

    def shard_groups(self, items: Sequence[T], what: str = "--prompts-per-step") -> Sequence[T]:
        """This rank's share of a step's prompts; each prompt is one group of rollouts, so a group never spans
        two ranks and every rank's advantages are the single-process ones."""
        self.check_divides(len(items), what)
        return self.shard(items)

    def check_divides(self, n: int, what: str = "--prompts-per-step") -> None:
        """One clear error when ``n`` prompts cannot be split evenly over the processes."""
        if n % self.world_size:
            lower, upper = (n // self.world_size) * self.world_size, -(-n // self.world_size) * self.world_size
            fits = [w for w in range(1, n + 1) if n % w == 0]
            raise ValueError(
                f"{what} {n} does not split evenly over {self.world_size} processes (a prompt's group of rollouts "
                f"stays on one process, and every process must hold as many): use {what} "
                f"{' or '.join(str(v) for v in dict.fromkeys([lower, upper]) if v > 0)}, or launch "
                f"{', '.join(map(str, fits))} processes"
            )

    def local(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a tensor drawn for all ranks (e.g. one alpha per prompt of the whole step)."""
        lo, hi = self.bounds(len(x))
        return x[lo:hi]

    # ----- collectives -----
    def gather(self, x: T) -> T:
        """Concatenate every rank's ``x`` (a tensor, a numpy array or a dict of them) in rank order: the
        single-process result when each rank held its :meth:`shard`. Shapes may differ along dim 0."""
        if self.world_size == 1:
            return x
        if isinstance(x, dict):
            return {k: self.gather(v) for k, v in x.items()}
        parts = self._all_gather_object(x.cpu() if isinstance(x, torch.Tensor) else x)
        if isinstance(x, torch.Tensor):
            return torch.cat(parts).to(x.device)
        return np.concatenate(parts)

    def mean(self, stats: dict[str, float], summed: Sequence[str] = ()) -> dict[str, float]:
        """Average scalars over ranks (each rank's value is a mean over equally many items), keys in ``summed``
        added instead. Every rank must pass the same keys."""
        if self.world_size == 1:
            return stats
        keys = list(stats)  # the same order on every rank
        total = self._all_reduce(torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64))
        return {k: float(v) if k in summed else float(v) / self.world_size for k, v in zip(keys, total.tolist())}

    def weighted(
        self, rows: list[tuple[int, dict[str, float]]], summed: Sequence[str] = (), same: Sequence[str] = ()
    ) -> list[dict[str, float]]:
        """Per-minibatch statistics over ranks: ``rows`` holds (local items, local means) per minibatch, in the
        same order on every rank; each mean becomes the mean over all ranks' items, keys in ``summed`` are
        added, keys in ``same`` (equal on every rank, e.g. the all-reduced gradient norm) are kept."""
        if self.world_size == 1 or not rows:
            return [stats for _, stats in rows]
        keys = list(rows[0][1])
        local = torch.tensor(
            [
                [n] + [stats[k] if k in summed or k in same else stats[k] * n if n else 0.0 for k in keys]
                for n, stats in rows
            ],
            dtype=torch.float64,
        )
        total = self._all_reduce(local)
        out = []
        for row in total.tolist():
            n, values = row[0], row[1:]
            out.append(
                {
                    k: v if k in summed else v / self.world_size if k in same else v / max(n, 1)
                    for k, v in zip(keys, values)
                }
            )
        return out

    def all_finite(self, value: torch.Tensor) -> bool:
        """Whether ``value`` is finite on every rank (so all of them skip the same update)."""
        flag = torch.tensor([float(torch.isfinite(value).all())], dtype=torch.float64)
        return bool(self._all_reduce(flag, torch.distributed.ReduceOp.MIN if self.world_size > 1 else None) > 0)

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` holds on some rank (so that all ranks take the same branch, e.g. stop at one step)."""
        return bool(self._all_reduce(torch.tensor([float(flag)], dtype=torch.float64)) > 0)

    def barrier(self) -> None:
        """Wait for every rank (e.g. before reading what rank 0 wrote)."""
        if self.world_size > 1:
            self._collective(lambda: torch.distributed.barrier())

    def step_positions(self, lengths: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Where this rank's stored steps stand among all ranks' steps, and how many there are in all.

        A rollout buffer stores steps step-major (engine step t, then trajectory), as one process decoding every
        group would; from every rank's trajectory ``lengths`` (NFE), the step t of trajectory g (global index)
        sits at ``#{steps of all trajectories before t} + #{trajectories g' < g still running at t}``. The
        trainer shuffles these global positions with its generator, identical on every rank, so each minibatch
        holds the steps the single-process run would put in it (UPO Algorithm 2, update phase)."""
        if self.world_size == 1:
            return torch.arange(int(lengths.sum()), device=lengths.device), int(lengths.sum())
        every = self.gather(lengths)
        steps = torch.arange(int(every.max()), device=lengths.device)
        alive = every[None, :] > steps[:, None]  # (T, N): trajectory g still decoding at step t
        before = alive.sum(1).cumsum(0) - alive.sum(1)
        position = before[:, None] + alive.cumsum(1) - 1
        lo = self.rank * len(lengths)
        mine = alive[:, lo : lo + len(lengths)]
        return position[:, lo : lo + len(lengths)][mine], int(alive.sum())

    def wrap(self, module: torch.nn.Module, objective: Callable) -> Callable:
        """``objective(module, *args)`` with the gradients of ``module``'s parameters summed over ranks in the
        backward pass (DDP: bucketed all-reduce overlapping the backward; the objective runs as the wrapper's
        forward so DDP sees the graph). One process: the plain call."""
        if self.world_size == 1:
            return lambda *args: objective(module, *args)
        ddp = torch.nn.parallel.DistributedDataParallel(_Objective(module, objective), forward_sync_buffers=False)
        ddp.register_comm_hook(None, _sum_hook)
        return ddp

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``; through a :meth:`wrap` objective it all-reduces the gradients, so a peer that died
        turns into a :class:`RankFailure` here."""
        if self.world_size == 1:
            loss.backward()
        else:
            self._collective(loss.backward)

    def _all_reduce(self, t: torch.Tensor, op=None) -> torch.Tensor:
        if self.world_size == 1:
            return t
        device = self.device if torch.distributed.get_backend() == "nccl" else "cpu"
        t = t.to(device)
        self._collective(lambda: torch.distributed.all_reduce(t, op or torch.distributed.ReduceOp.SUM))
        return t.cpu()

    def _all_gather_object(self, x):
        out = [None] * self.world_size
        self._collective(lambda: torch.distributed.all_gather_object(out, x))
        return out

    def _collective(self, fn: Callable[[], T]) -> T:
        """Run a collective; a peer that died turns into one :class:`RankFailure` naming this rank."""
        try:
            return fn()
        except (RuntimeError, pickle.UnpicklingError) as e:
            if isinstance(e, RankFailure):
                raise
            raise RankFailure(
                f"process {self.rank} of {self.world_size}: another process of this run stopped "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); stopping too. Its "
                "own error is printed above by the launcher; checkpoints are only written whole by "
                "rank 0, so --resume continues from the last complete one"
            ) from e


def _sum_hook(group, bucket):  # no annotations: DDP checks them against the unresolved strings
    """DDP communication hook: all-reduce a gradient bucket as a sum (DDP's default divides by the world size;
    the trainer's objective is already the sum of the processes' parts)."""
    work = torch.distributed.all_reduce(bucket.buffer(), group=group, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])


class _Objective(torch.nn.Module):
    """``objective(module, *args)`` as a forward, the call DDP needs to see (Distributed.wrap)."""

    def __init__(self, module: torch.nn.Module, objective: Callable) -> None:
        super().__init__()
        self.module = module
        self.objective = objective

    def forward(self, *args):
        return self.objective(self.module, *args)


_CURRENT: Distributed | None = None


def _leave() -> None:
    """Close this process's side of the process group at exit (left open, gloo's threads abort the process)."""
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def current(timeout_minutes: float = 30.0) -> Distributed:
    """This process's :class:`Distributed`; the first call under a launcher starts the process group through
    accelerate (``PartialState``: gloo on CPU or with ``accelerate launch --cpu``, NCCL on GPU, each process on
    ``cuda:LOCAL_RANK``), and rank 0 says how many processes run. Without a launcher: one process (an error when a
    launcher was asked for several and started one, :func:`check_single_launch`)."""
    global _CURRENT
    if _CURRENT is not None:
        return _CURRENT
    if not launched() and not torch.distributed.is_initialized():
        check_single_launch()
        _CURRENT = Distributed()
        return _CURRENT
    try:
        from accelerate import PartialState
    except ImportError:
        raise ValueError(
            "launched as several processes, which needs accelerate: pip install 'unmask[distributed]'"
        ) from None
    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    state = PartialState(
        cpu=cpu, backend="gloo" if cpu else "nccl", timeout=datetime.timedelta(minutes=timeout_minutes)
    )
    atexit.register(_leave)
    device = str(state.device) if state.device.type == "cuda" else "cpu"
    if device != "cpu":
        torch.cuda.set_device(state.device)
    _CURRENT = Distributed(rank=state.process_index, world_size=state.num_processes, device=device)
    if _CURRENT.main:
        print(
            f"unmask: {_CURRENT.world_size} processes ({torch.distributed.get_backend()}, "
            f"{'CPU' if device == 'cpu' else 'one GPU each'})",
            file=sys.stderr,
            flush=True,
        )
    return _CURRENT
