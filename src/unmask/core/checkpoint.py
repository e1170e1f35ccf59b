"""Checkpoints: safetensors weights + a JSON config, each directory written atomically as a whole.

A checkpoint is a directory holding ``model.safetensors`` and ``config.json`` (and, for a resumable
training checkpoint, ``optimizer.safetensors`` and ``trainer_state.json``) plus ``manifest.json``: the
SHA-256 and size of every other file and the training step. :func:`save_checkpoint` is the one function
that writes a checkpoint directory. It writes every file into a hidden staging directory beside the
target, fsyncs them, and then swaps the staging directory in with renames (the previous checkpoint is
kept as ``<name>.prev`` for resumable checkpoints). A kill at any instant therefore leaves each of
``<name>`` and ``<name>.prev`` either complete or absent, never a mix of two saves; the stale staging
directory a kill leaves is removed by the next save. :func:`resumable_checkpoint` verifies the manifest
and falls back to ``<name>.prev`` when ``<name>`` is missing or does not match it.
See docs/checkpoints.md for the layout and the guarantees.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
OPTIMIZER = "optimizer.safetensors"
TRAINER_STATE = "trainer_state.json"
MANIFEST = "manifest.json"
LAST = "last"  # the resumable checkpoint inside a run directory (train-policy, train-mdm)
PREVIOUS = ".prev"  # suffix of the checkpoint a resumable save replaced: the fallback of resume
RESUMABLE = (WEIGHTS, CONFIG, OPTIMIZER, TRAINER_STATE)  # the files of a resumable checkpoint
CARD = "README.md"  # a model card that may sit beside a checkpoint (save_pretrained writes it after the save)
CHECKPOINT_FILES = (*RESUMABLE, MANIFEST, CARD)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _fsync_directory(path: Path) -> None:
    """Make renames inside ``path`` durable (POSIX; other systems cannot open a directory)."""
    if os.name == "posix":
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, flush it, then rename it onto ``path``. An
    error names ``path``, never the hidden temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = ""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if e.errno is None:  # no file named in it
            raise
        raise type(e)(e.errno, e.strerror, str(path)) from None
    finally:
        if tmp and os.path.exists(tmp):
            os.remove(tmp)


def json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def tensor_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    return safetensors_bytes({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)


def save_json(path: str | Path, data: Any) -> None:
    """Write one JSON file atomically (reports, results)."""
    atomic_write(Path(path), lambda tmp: Path(tmp).write_bytes(json_bytes(data)))


def load_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing file {path}: is this a checkpoint directory written by unmask?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); the checkpoint is corrupt, re-save or re-train it") from e


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing file {path}: is this a checkpoint directory written by unmask?")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"cannot read {path} as safetensors ({e}); the checkpoint is corrupt") from e


@dataclass
class TrainingState:
    """Everything beyond the weights that exact resumption needs: optimizer moments, RNG states, counters
    (``counters["step"]`` is the training step the checkpoint was taken after)."""

    optimizer: torch.optim.Optimizer
    rng: dict[str, torch.Tensor]
    counters: dict


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into flat tensors (safetensors) and JSON-able rest."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def checkpoint_files(module: torch.nn.Module, config: dict, training: TrainingState | None) -> dict[str, bytes]:
    """The serialised files of one checkpoint (all but the manifest)."""
    files = {WEIGHTS: tensor_bytes(module.state_dict()), CONFIG: json_bytes(config)}
    if training is not None:
        opt_tensors, opt_meta = optimizer_tensors(training.optimizer)
        files[OPTIMIZER] = tensor_bytes(
            {**{f"opt.{k}": v for k, v in opt_tensors.items()}, **{f"rng.{k}": v for k, v in training.rng.items()}}
        )
        files[TRAINER_STATE] = json_bytes({**training.counters, "optimizer": opt_meta})
    return files


def _write_bytes(path: Path, data: bytes) -> None:
    """One file of a staging directory, flushed to disk."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o666 & ~_umask())


def _check_replaceable(directory: Path) -> None:
    """Saving replaces ``directory`` whole: refuse when it holds anything but checkpoint files."""
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"cannot save a checkpoint to {directory}: it is a file; choose a directory path")
    if directory.is_dir():
        foreign = sorted(p.name for p in directory.iterdir() if p.name not in CHECKPOINT_FILES)
        if foreign:
            raise ValueError(
                f"cannot save a checkpoint to {directory}: it holds {', '.join(foreign[:5])}, which a "
                "checkpoint does not; saving replaces the whole directory, so choose a new or empty one"
            )


def remove_stale_staging(directory: Path) -> None:
    """Delete what a killed save of ``directory`` left behind (its hidden staging directories)."""
    for stale in directory.parent.glob(f".{directory.name}.*.tmp"):
        if stale.is_dir():  # (a file's atomic_write temporaries are files)
            shutil.rmtree(stale, ignore_errors=True)


def save_checkpoint(
    directory: str | Path, module: torch.nn.Module, config: dict, training: TrainingState | None = None
) -> None:
    """Write ``module``'s weights, ``config`` and (resumable checkpoints) the ``training`` state as the
    checkpoint ``directory``, atomically as a whole: every file and the manifest go into a staging
    directory beside it, which then replaces ``directory`` by rename. A resumable save keeps the checkpoint
    it replaces as ``<directory>.prev`` (the fallback of :func:`resumable_checkpoint`); a plain one deletes
    it. The single writer of checkpoint directories (multi-process training calls it on one rank only)."""
    directory = Path(directory)
    _check_replaceable(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(directory)
    files = checkpoint_files(module, config, training)
    manifest = {
        "step": None if training is None else training.counters.get("step"),
        "files": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)} for name, data in files.items()
        },
    }
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".tmp"))
    previous = directory.with_name(directory.name + PREVIOUS)
    try:
        for name, data in {**files, MANIFEST: json_bytes(manifest)}.items():
            _write_bytes(staging / name, data)
        os.chmod(staging, 0o777 & ~_umask())
        _fsync_directory(staging)
        if previous.exists():
            shutil.rmtree(previous)
        if directory.exists():
            os.replace(directory, previous)
        os.replace(staging, directory)
        _fsync_directory(directory.parent)
    except (Exception, KeyboardInterrupt):  # a SIGKILL skips this: the next save removes the staging directory
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if training is None and previous.exists():
        shutil.rmtree(previous)


def verify_checkpoint(directory: str | Path, required: tuple[str, ...] = (WEIGHTS, CONFIG)) -> dict:
    """The manifest of ``directory`` after checking that every file it lists is there with its size and
    SHA-256, and that it lists ``required``; ValueError naming the first problem otherwise."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"{directory} is missing")
    if not (directory / MANIFEST).is_file():
        raise ValueError(f"{directory} has no {MANIFEST} (an incomplete copy, or written by an older unmask)")
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        listed = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"{directory / MANIFEST} is corrupt") from None
    for name in required:
        if name not in listed:
            raise ValueError(f"{directory} is not a resumable checkpoint: it has no {name}")
    for name, entry in listed.items():
        path = directory / name
        if not path.is_file():
            raise ValueError(f"{directory} is partial: {name} is missing")
        data = path.read_bytes()
        if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise ValueError(f"{directory} is mixed or corrupt: {name} is not the file its manifest lists")
    return manifest


def resumable_checkpoint(run_dir: str | Path) -> Path:
    """The complete checkpoint to resume the run in ``run_dir`` from: ``last/``, or ``last.prev/`` (with a
    warning) when ``last/`` is missing, partial or mixed. One clear error when neither is complete."""
    run_dir = Path(run_dir)
    last = run_dir / LAST
    previous = last.with_name(LAST + PREVIOUS)
    if not last.exists() and not previous.exists():
        raise FileNotFoundError(f"--resume: no checkpoint in {last}; start without --resume")
    problems = []
    for candidate in (last, previous):
        try:
            manifest = verify_checkpoint(candidate, RESUMABLE)
        except ValueError as e:
            problems.append(str(e))
            continue
        if candidate == previous:
            warnings.warn(
                f"--resume: {problems[0]}; resuming from the previous complete checkpoint {previous} "
                f"(step {manifest['step']})",
                stacklevel=2,
            )
        return candidate
    raise ValueError(
        f"--resume: no complete checkpoint in {run_dir} ({'; '.join(problems)}); "
        f"start over without --resume in a new --output-dir (or delete {run_dir})"
    )


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a resumable checkpoint (complete or not) that a fresh run would replace."""
    last = Path(run_dir) / LAST
    return last.exists() or last.with_name(LAST + PREVIOUS).exists()


def check_new_run(run_dir: str | Path) -> None:
    """A run started without ``--resume`` must not replace an earlier run's checkpoints."""
    if has_checkpoint(run_dir):
        raise ValueError(
            f"{run_dir} already holds a training run (a checkpoint in {Path(run_dir) / LAST}); pass "
            "--resume to continue it, or choose another --output-dir (delete the directory to start over)"
        )


def interrupted_message(command: list[str], run_dir: str | Path) -> str:
    """What an interrupted training command (``command``: its arguments after ``unmask``) tells the user:
    the exact command that continues it from its latest checkpoint in ``run_dir``."""
    if not has_checkpoint(run_dir):
        return f"interrupted before the first checkpoint in {run_dir}: nothing to resume, run the same command again"
    again = command if "--resume" in command else [*command, "--resume"]
    return f"interrupted; continue from the checkpoint in {Path(run_dir) / LAST} with:\n  unmask {shlex.join(again)}"


NOT_RESULTS = ("report_to", "output_dir")  # where the run and its metrics live, not what they are


def check_resume_settings(checkpoint: Path, given: dict, schedule_uses_max_steps: bool) -> None:
    """Resuming is exact only with the settings the run started with (``checkpoint``'s ``config.json``
    ``train``), apart from :data:`NOT_RESULTS` (so a run resumes whatever its directory is called now: a relative
    path, a moved or copied run) and ``max_steps``, which may grow to extend a run past the checkpoint's step.
    ``schedule_uses_max_steps``: the learning rate of the steps still to come depends on ``max_steps`` (a cosine
    schedule), so changing it warns."""
    step = load_json(checkpoint / TRAINER_STATE)["step"]
    saved, given = (
        {k: v for k, v in d.items() if k not in NOT_RESULTS} for d in (load_json(checkpoint / CONFIG)["train"], given)
    )
    if given["max_steps"] < step:
        raise ValueError(
            f"--resume: the checkpoint is at step {step}, past --max-steps {given['max_steps']}; "
            f"give --max-steps {step} or more to continue it"
        )
    if given["max_steps"] != saved.get("max_steps") and schedule_uses_max_steps:
        warnings.warn(
            f"--resume: --max-steps {saved.get('max_steps')} -> {given['max_steps']} changes the learning "
            f"rate schedule from step {step} on (it runs over --max-steps)",
            stacklevel=2,
        )
    saved = {**saved, "max_steps": given["max_steps"]}
    if saved != given:
        diff = {k: (saved.get(k), v) for k, v in given.items() if saved.get(k) != v}
        diff.update({k: (v, None) for k, v in saved.items() if k not in given})
        raise ValueError(f"--resume: settings differ from the checkpoint's (saved, given): {diff}")


def load_state_into(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load ``tensors`` into ``module``, failing with a clear message when they do not match its config."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"missing {missing[:5]}")
        if unexpected:
            details.append(f"unexpected {unexpected[:5]}")
        if wrong:
            details.append(
                "shape mismatch "
                + ", ".join(f"{k}: {tuple(tensors[k].shape)} vs {tuple(expected[k].shape)}" for k in wrong[:5])
            )
        raise ValueError(
            f"weights in {source} do not match their config.json ({'; '.join(details)}); "
            "the files come from different checkpoints — copy both from the same save"
        )
    module.load_state_dict(tensors)


def load_training_checkpoint(
    directory: str | Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict]:
    """Load a resumable checkpoint (see :func:`resumable_checkpoint`) into ``module`` and ``optimizer`` in
    place; return (rng tensors, counters)."""
    directory = Path(directory)
    load_state_into(module, load_tensors(directory / WEIGHTS), directory)
    tensors = load_tensors(directory / OPTIMIZER)
    state = load_json(directory / TRAINER_STATE)
    restore_optimizer(optimizer, {k[4:]: v for k, v in tensors.items() if k.startswith("opt.")}, state.pop("optimizer"))
    return {k[4:]: v for k, v in tensors.items() if k.startswith("rng.")}, state
