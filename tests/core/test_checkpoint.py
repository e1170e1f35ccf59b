"""unmask.core.checkpoint: whole-directory atomic saves, manifest verification, resume's fallback (issue 18)."""

import json
from pathlib import Path

import pytest
import torch

import unmask.core.checkpoint as ck
from unmask.core.checkpoint import (
    MANIFEST,
    TrainingState,
    check_new_run,
    check_resume_settings,
    load_training_checkpoint,
    resumable_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)


def module(seed: int) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(3, 2)


def training_state(m: torch.nn.Module, step: int) -> TrainingState:
    opt = torch.optim.AdamW(m.parameters(), lr=0.1)
    m(torch.ones(1, 3)).sum().backward()
    opt.step()
    return TrainingState(opt, {"torch": torch.get_rng_state()}, {"step": step})


def save_run(run, seed: int, step: int) -> torch.nn.Module:
    m = module(seed)
    save_checkpoint(run / "last", m, {"step": step}, training_state(m, step))
    return m


def test_a_save_writes_every_file_with_a_manifest_and_keeps_the_previous_resumable_one(tmp_path):
    save_run(tmp_path, 0, 1)
    save_run(tmp_path, 1, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last", "last.prev"]  # no staging directory left
    assert sorted(p.name for p in (tmp_path / "last").iterdir()) == [
        "config.json",
        MANIFEST,
        "model.safetensors",
        "optimizer.safetensors",
        "trainer_state.json",
    ]
    assert verify_checkpoint(tmp_path / "last")["step"] == 2
    assert verify_checkpoint(tmp_path / "last.prev")["step"] == 1
    save_checkpoint(tmp_path / "best", module(0), {})  # a plain checkpoint keeps no predecessor
    save_checkpoint(tmp_path / "best", module(1), {})
    assert not (tmp_path / "best.prev").exists() and verify_checkpoint(tmp_path / "best")["step"] is None


def test_a_killed_save_leaves_a_staging_directory_that_the_next_save_removes(tmp_path):
    (tmp_path / ".last.abc123.tmp").mkdir()
    (tmp_path / ".last.abc123.tmp" / "model.safetensors").write_bytes(b"half")
    save_run(tmp_path, 0, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_a_failed_save_leaves_the_old_checkpoint_whole(tmp_path, monkeypatch):
    save_run(tmp_path, 0, 1)
    before = {p.name: p.read_bytes() for p in (tmp_path / "last").iterdir()}

    def disk_full(path, data):
        raise OSError("No space left on device")

    monkeypatch.setattr(ck, "_write_bytes", disk_full)
    with pytest.raises(OSError):
        save_run(tmp_path, 1, 2)
    assert {p.name: p.read_bytes() for p in (tmp_path / "last").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_saving_refuses_to_replace_a_directory_with_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="it holds notes.txt, which a checkpoint does not"):
        save_checkpoint(tmp_path, module(0), {})
    with pytest.raises(ValueError, match="it is a file"):
        save_checkpoint(tmp_path / "notes.txt", module(0), {})
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "damage,message",
    [
        ("mix", "mixed or corrupt: model.safetensors"),
        ("remove", "partial: optimizer.safetensors is missing"),
        ("manifest", "has no manifest.json"),
    ],
)
def test_resume_refuses_a_mixed_or_partial_checkpoint_and_falls_back_to_the_previous(tmp_path, damage, message):
    first = save_run(tmp_path, 0, 1)
    save_run(tmp_path, 1, 2)
    last = tmp_path / "last"
    if damage == "mix":  # new weights beside the old optimizer / step: what a file-by-file save left
        (last / "model.safetensors").write_bytes((tmp_path / "last.prev" / "model.safetensors").read_bytes())
    else:
        (last / ("optimizer.safetensors" if damage == "remove" else MANIFEST)).unlink()
    with pytest.raises(ValueError, match=message):
        verify_checkpoint(last)
    with pytest.warns(
        UserWarning, match=f"{message}.*resuming from the previous complete checkpoint .*last.prev .step 1"
    ):
        chosen = resumable_checkpoint(tmp_path)
    assert chosen == tmp_path / "last.prev"
    m = module(5)
    rng, counters = load_training_checkpoint(chosen, m, torch.optim.AdamW(m.parameters(), lr=0.1))
    assert counters == {"step": 1} and torch.equal(m.weight, first.weight) and "torch" in rng


def test_resume_without_any_complete_checkpoint_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint in .*last; start without --resume"):
        resumable_checkpoint(tmp_path)
    save_run(tmp_path, 0, 1)
    (tmp_path / "last" / "config.json").write_text("{}")
    with pytest.raises(
        ValueError,
        match=r"no complete checkpoint in .*mixed or corrupt: config.json.*last.prev is "
        r"missing\); start over without --resume",
    ):
        resumable_checkpoint(tmp_path)
    save_checkpoint(tmp_path / "plain", module(0), {})  # weights only: not resumable
    with pytest.raises(ValueError, match="not a resumable checkpoint: it has no optimizer.safetensors"):
        verify_checkpoint(tmp_path / "plain", ck.RESUMABLE)


def test_a_fresh_run_refuses_a_directory_that_holds_a_run(tmp_path):
    check_new_run(tmp_path)  # empty: fine
    (tmp_path / "metrics.csv").write_text("step\n0\n")
    check_new_run(tmp_path)  # killed before its first checkpoint: nothing to resume, start again
    save_run(tmp_path, 0, 1)
    with pytest.raises(
        ValueError, match="already holds a training run .*pass --resume to continue it, or choose another --output-dir"
    ):
        check_new_run(tmp_path)


def test_changed_settings_are_listed(tmp_path):
    def saved(train: dict) -> Path:
        (tmp_path / "config.json").write_text(json.dumps({"train": train}))
        (tmp_path / "trainer_state.json").write_text(json.dumps({"step": 2}))
        return tmp_path

    check_resume_settings(saved({"lr": 1, "max_steps": 2}), {"lr": 1, "max_steps": 2}, True)
    with pytest.raises(ValueError, match=r"settings differ .*'lr': \(1, 2\).*'old': \(3, None\)"):
        check_resume_settings(saved({"lr": 1, "max_steps": 2, "old": 3}), {"lr": 2, "max_steps": 2}, True)


def test_the_manifest_lists_sizes_and_hashes(tmp_path):
    save_checkpoint(tmp_path / "c", module(0), {"a": 1})
    manifest = json.loads((tmp_path / "c" / MANIFEST).read_text())
    assert set(manifest["files"]) == {"model.safetensors", "config.json"}
    assert manifest["files"]["config.json"]["bytes"] == (tmp_path / "c" / "config.json").stat().st_size
