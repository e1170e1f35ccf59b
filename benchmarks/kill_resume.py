"""Kills survived bit-exactly / kills, for both trainers (issue 18, docs/checkpoints.md).

Every run is a tiny sudoku4 one (tests/kill_harness.py: train-mdm 4 steps saving every 2; train-policy 2 GRPO
steps of a bernoulli policy on the shipped sudoku4 MDM, checkpointing every step). Two kinds of kill:
- file boundary: in-process, just before each file operation of every save of a run (each file written, each
  rename, each delete), once each;
- random instant: a real SIGKILL of a child training process at a uniform instant of its run (train-mdm here
  8 steps saving every step), up to ``--chain`` kills in a row, recovering after each (``--resume`` if a
  checkpoint exists, else start again).
A kill is survived bit-exactly when the recovered run's last/ and best/ equal an uninterrupted run's byte for
byte and its metrics.csv rows equal the uninterrupted rows (all columns but wall-clock seconds).

    .venv/bin/python benchmarks/kill_resume.py --random-kills 20
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import pytest  # noqa: E402  (kill_harness simulates kills with pytest's monkeypatch)
from common import command_line, run_info  # noqa: E402
from kill_harness import KINDS, Killed, compare_runs, kill_at, recover, run_with_kills, timed_reference, train  # noqa: E402

from unmask.core.checkpoint import save_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "kill_resume.json"


def exact(reference: Path, run: Path) -> bool:
    try:
        compare_runs(reference, run)
        return True
    except AssertionError:
        return False


def boundary_kills(kind: str, root: Path) -> dict:
    """A kill before every file operation of an uninterrupted run's saves."""
    with kill_at(None, root) as ops:
        train(kind, root / "run", resume=False)
    (root / "run").rename(root / "ref")
    survived = 0
    for n in range(1, len(ops) + 1):
        with kill_at(n, root), pytest.raises(Killed):
            train(kind, root / "run", resume=False)
        recover(kind, root / "run")
        survived += exact(root / "ref", root / "run")
        shutil.rmtree(root / "run")
    return {"kills": len(ops), "survived": survived, "inside_save": len(ops)}


def random_kills(kind: str, root: Path, kills: int, chain: int, seed: int) -> dict:
    """Real SIGKILLs at random instants until ``kills`` have landed (train-mdm saving every step, so that
    saves take a fair share of its run)."""
    settings = {"max_steps": 8, "save_steps": 1} if kind == "mdm" else {}
    duration = timed_reference(kind, root / "run", settings)
    (root / "run").rename(root / "ref")
    rng = random.Random(f"{seed}-{kind}")
    total = {"kills": 0, "survived": 0, "inside_save": 0}
    while total["kills"] < kills:
        got = run_with_kills(kind, root / "run", min(chain, kills - total["kills"]), duration, rng, settings)
        total["kills"] += got["kills"]
        total["inside_save"] += got["inside_save"]
        total["survived"] += got["kills"] * exact(root / "ref", root / "run")
        shutil.rmtree(root / "run")
    return {**total, "run_seconds": round(duration, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--random-kills", type=int, default=20, help="real SIGKILLs per trainer")
    parser.add_argument("--chain", type=int, default=3, help="kills of one run before it may finish")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the child processes: one thread, the fastest for tiny runs on a busy machine
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in KINDS:
            trainer = {"mdm": "train-mdm", "policy": "train-policy"}[kind]
            rows.append({"trainer": trainer, "kill": "file boundary", **boundary_kills(kind, Path(tmp) / kind / "b")})
            rows.append(
                {
                    "trainer": trainer,
                    "kill": "random SIGKILL",
                    **random_kills(kind, Path(tmp) / kind / "r", args.random_kills, args.chain, args.seed),
                }
            )
    print(f"{'trainer':<13} {'kill':<15} {'survived/kills':>15} {'inside a save':>14}")
    for r in rows:
        print(f"{r['trainer']:<13} {r['kill']:<15} {r['survived']:>7}/{r['kills']:<7} {r['inside_save']:>14}")
    kills, survived = sum(r["kills"] for r in rows), sum(r["survived"] for r in rows)
    print(f"total: {survived}/{kills} kills survived bit-exactly")
    save_json(
        args.out,
        {
            "provenance": [run_info(command_line("benchmarks/kill_resume.py", args))],
            "kills": kills,
            "survived": survived,
            "results": rows,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
