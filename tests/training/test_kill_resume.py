"""Kills of both trainers at every file boundary of their checkpoint saves and at random instants resume
bit-exactly: final weights, optimizer and RNG state, best/ and every metrics row equal an uninterrupted run's
(issue 18; the machinery is in tests/kill_harness.py)."""

import random
import shutil

import pytest
import torch
from kill_harness import KINDS, Killed, compare_runs, kill_at, recover, run_with_kills, timed_reference, train


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Reference and killed runs compute alike (and tiny ops run fastest on one thread of a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def references(tmp_path_factory, one_thread):
    """An uninterrupted run of each trainer (moved to ``<root>/ref``: every run of a kind trains in
    ``<root>/run``, the path its config records) and the file operations of its saves, in order."""
    refs = {}
    for kind in KINDS:
        root = tmp_path_factory.mktemp(kind)
        with kill_at(None, root) as ops:
            train(kind, root / "run", resume=False)
        (root / "run").rename(root / "ref")
        refs[kind] = (root, list(ops))
    return refs


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_a_kill_at_every_file_boundary_of_every_save_resumes_exactly(kind, references):
    root, ops = references[kind]
    assert sum(op.startswith("write") for op in ops) >= 10 and any(op.startswith("delete") for op in ops)
    for n in range(1, len(ops) + 1):
        out = root / "run"
        with kill_at(n, root), pytest.raises(Killed):
            train(kind, out, resume=False)
        recover(kind, out)
        compare_runs(root / "ref", out)
        shutil.rmtree(out)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_real_sigkills_at_random_instants_resume_exactly(kind, tmp_path):
    duration = timed_reference(kind, tmp_path / "run")
    (tmp_path / "run").rename(tmp_path / "ref")
    rng = random.Random(f"kills-{kind}")
    kills = trials = 0
    while kills < 4 and trials < 12:  # a run may finish before its random instant comes
        kills += run_with_kills(kind, tmp_path / "run", 2, duration, rng)["kills"]
        compare_runs(tmp_path / "ref", tmp_path / "run")
        shutil.rmtree(tmp_path / "run")
        trials += 1
    assert kills >= 4
