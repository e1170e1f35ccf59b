"""Throughput of GRPO training with several processes on this machine's CPUs (issue 21, docs/distributed.md).

Command (the figures in benchmarks/results/distributed.json):
    .venv/bin/python benchmarks/distributed.py --steps 3

Three runs of the same training, side by side: one process with one thread, one process with two threads, and
two gloo processes with one thread each (``unmask.core.distributed``: each rolls out half of the step's prompt
groups, DDP sums the policy's gradients). Each run trains a Bernoulli policy (Jazbec §3.2, sampled) against
the shipped ``sudoku9-small`` MDM on fresh 9x9 puzzles, ``--prompts`` prompts x ``--generations`` rollouts per
step; the first step is a warm-up. The machine may be shared: each run records the load average around it. Every phase is timed between barriers, so a phase lasts as long as its
slowest process: rollout (sampling phase, UPO Algorithm 2) and update (mu passes of minibatches). In the
two-process run a timer also records the time spent inside the explicit collectives (gathers and
all-reduces of statistics and step lengths: transfer plus waiting for the slower process), and a
microbenchmark times one all-reduce of the policy's whole gradient (what DDP sends after each minibatch) and
one small collective: their latencies times the step's counts are the transfer alone; the rest of the time
inside collectives is waiting for the slower process (its rollouts took longer, or the shared machine ran
something else).

Throughput: rollouts (trajectories) per second for the rollout phase, stored steps per second for the update.
Parallel efficiency of N processes: (one-process time) / (N x N-process time) for the same global batch.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time

from common import command_line, run_info

RUNS = (("1 process x 1 thread", 1, 1), ("1 process x 2 threads", 1, 2), ("2 processes x 1 thread", 2, 1))


def worker(rank: int, world: int, threads: int, port: int, args: argparse.Namespace, results) -> None:
    """One process of a run: train ``args.steps + 1`` steps, put per-phase times (rank 0) on ``results``."""
    os.environ.update(
        OMP_NUM_THREADS=str(threads),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    import torch

    torch.set_num_threads(threads)
    from unmask.core.distributed import Distributed
    from unmask.training.grpo import GRPOConfig, GRPOTrainer

    inside = {"seconds": 0.0, "calls": 0}
    real_collective = Distributed._collective

    def timed(self, fn):
        t0 = time.perf_counter()
        try:
            return real_collective(self, fn)
        finally:
            inside["seconds"] += time.perf_counter() - t0
            inside["calls"] += 1

    cfg = GRPOConfig.from_flat(
        task="sudoku9",
        model="sudoku9-small",
        policy="bernoulli",
        output_dir="/tmp/unused",
        prompts_per_step=args.prompts,
        num_generations=args.generations,
        difficulty=[30],
        minibatch_size=args.minibatch_size,
        eval_size=2,
        seed=0,
    )
    trainer = GRPOTrainer.from_config(cfg, progress=False)
    dist = trainer.dist
    Distributed._collective = timed
    Distributed.backward = lambda self, loss: loss.backward()  # untimed: its all-reduce is microbenchmarked below
    rows = []
    for step in range(args.steps + 1):
        dist.barrier()
        inside.update(seconds=0.0, calls=0)
        t0 = time.perf_counter()
        buf, _ = trainer.rollout(dist.shard_groups(trainer.prompts(step)))
        own = time.perf_counter() - t0 - inside["seconds"]  # this process's rollouts alone, without collectives
        dist.barrier()
        t1 = time.perf_counter()
        roll_comm, roll_calls = inside["seconds"], inside["calls"]
        trainer.update(buf)
        dist.barrier()
        t2 = time.perf_counter()
        comm, calls = inside["seconds"], inside["calls"]
        trainer.step += 1
        stored = int(dist.gather(torch.tensor([len(buf)])).sum())
        owns = dist.gather(torch.tensor([own], dtype=torch.float64))
        rows.append(
            {
                "rollout_s": t1 - t0,
                "update_s": t2 - t1,
                "rollouts": args.prompts * args.generations,
                "rollout_imbalance": float(owns.max() / owns.mean()),
                "stored_steps": stored,
                "backwards": args.iterations * -(-stored // args.minibatch_size),
                "collective_s": comm,
                "collective_calls": calls,
                "rollout_collective_s": roll_comm,
                "rollout_collective_calls": roll_calls,
            }
        )
    Distributed._collective = real_collective
    grad = torch.zeros(sum(p.numel() for p in trainer.policy.parameters()))
    latency = {"grad_allreduce_s": 0.0, "small_collective_s": 0.0}
    if world > 1:
        for key, tensor in (("grad_allreduce_s", grad), ("small_collective_s", torch.zeros(8, dtype=torch.float64))):
            for _ in range(5):
                torch.distributed.all_reduce(tensor)
            t0 = time.perf_counter()
            for _ in range(50):
                torch.distributed.all_reduce(tensor)
            latency[key] = (time.perf_counter() - t0) / 50
    if rank == 0:
        results.put({"steps": rows[1:], "grad_numel": grad.numel(), **latency})


def run(world: int, threads: int, port: int, args: argparse.Namespace) -> dict:
    """One run in fresh processes; with the machine's load average (1 min) before and after it."""
    load = os.getloadavg()[0]
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, world, threads, port, args, results)) for r in range(world)]
    for p in procs:
        p.start()
    out = results.get(timeout=1800)
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"a benchmark process exited with {p.exitcode}")
    return {**out, "load_average": [load, os.getloadavg()[0]]}


def summarise(name: str, world: int, threads: int, raw: dict) -> dict:
    steps = raw["steps"]
    mean = lambda key: sum(s[key] for s in steps) / len(steps)  # noqa: E731
    rollout_s, update_s = mean("rollout_s"), mean("update_s")
    transfer_s = mean("collective_calls") * raw["small_collective_s"] + mean("backwards") * raw["grad_allreduce_s"]
    comm_s = mean("collective_s") + mean("backwards") * raw["grad_allreduce_s"]
    return {
        "run": name,
        "processes": world,
        "threads": threads,
        "rollout_s": rollout_s,
        "update_s": update_s,
        "step_s": rollout_s + update_s,
        "rollouts_per_s": mean("rollouts") / rollout_s,
        "stored_steps_per_s": mean("stored_steps") / update_s,
        "collective_s": mean("collective_s"),
        "collective_calls": mean("collective_calls"),
        "backwards": mean("backwards"),
        "grad_numel": raw["grad_numel"],
        "grad_allreduce_s": raw["grad_allreduce_s"],
        "small_collective_s": raw["small_collective_s"],
        "rollout_imbalance": mean("rollout_imbalance"),
        "communication_s": comm_s,
        "communication_share": comm_s / (rollout_s + update_s),
        "transfer_s": transfer_s,
        "transfer_share": transfer_s / (rollout_s + update_s),
        "load_average_before_after": raw["load_average"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per run (after one warm-up)")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per step (all processes together)")
    parser.add_argument("--generations", type=int, default=4, help="rollouts per prompt (G)")
    parser.add_argument("--minibatch-size", type=int, default=512, help="stored steps per gradient step")
    parser.add_argument("--iterations", type=int, default=2, help="mu: update passes (the trainer's default)")
    parser.add_argument("--port", type=int, default=29650)
    parser.add_argument("--out", default="benchmarks/results/distributed.json")
    args = parser.parse_args()

    from unmask.core.checkpoint import save_json

    rows = [summarise(name, w, t, run(w, t, args.port + i, args)) for i, (name, w, t) in enumerate(RUNS)]
    base = rows[0]
    for r in rows:
        r["speedup"] = base["step_s"] / r["step_s"]
        r["rollout_speedup"], r["update_speedup"] = base["rollout_s"] / r["rollout_s"], base["update_s"] / r["update_s"]
        workers = r["processes"] * r["threads"]
        r["parallel_efficiency"] = r["speedup"] / workers
    two = rows[2]
    parallel = 1 - two["communication_share"]  # the sharded share of a two-process step (waiting counted serial)
    expected = {w: 1 / ((1 - parallel) + parallel / w) for w in (2, 4, 8)}
    print(
        f"{'run':<24} {'rollout s':>9} {'update s':>9} {'rollouts/s':>10} {'steps/s':>9} {'speedup':>8} "
        f"{'efficiency':>10} {'comm share':>10}"
    )
    for r in rows:
        print(
            f"{r['run']:<24} {r['rollout_s']:>9.3f} {r['update_s']:>9.3f} {r['rollouts_per_s']:>10.2f} "
            f"{r['stored_steps_per_s']:>9.0f} {r['speedup']:>8.2f} {r['parallel_efficiency']:>10.2f} "
            f"{r['communication_share']:>10.3f}"
        )
    print(
        f"one gradient all-reduce ({two['grad_numel']} floats, gloo): {1e3 * two['grad_allreduce_s']:.3f} ms, one small "
        f"collective {1e3 * two['small_collective_s']:.3f} ms; time inside the other collectives "
        f"{1e3 * two['collective_s']:.1f} ms per step ({two['collective_calls']:.0f} calls; transfer plus waiting for the "
        f"slower process, rollout imbalance max/mean {two['rollout_imbalance']:.2f}); transfer alone "
        f"{100 * two['transfer_share']:.2f}% of a step"
    )
    print(
        "GPU figures cannot be measured on this machine (no GPUs). Amdahl estimate from the measured split, if "
        "communication kept its CPU share: " + ", ".join(f"{w} GPUs {s:.2f}x" for w, s in expected.items())
    )
    save_json(
        args.out,
        {
            "provenance": [run_info(command_line("benchmarks/distributed.py", args))],
            "results": rows,
            "gpu": {
                "measured": False,
                "reason": "this machine has no GPU; NCCL scaling cannot be measured here",
                "parallel_share_measured": parallel,
                "amdahl_speedup_if_communication_share_stays": expected,
            },
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
