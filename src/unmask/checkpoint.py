"""Checkpoints: safetensors weights + a JSON config, written atomically.

A checkpoint is a directory holding ``model.safetensors`` and ``config.json``
(and, for training runs, extra named safetensors/JSON files such as the
optimizer state). Every file is written to a temporary name in the same
directory, flushed to disk and renamed into place, so an interrupted save never
leaves a half-written file under the final name.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, flush it, then rename it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_json(path: str | Path, data: Any) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")

    atomic_write(Path(path), write)


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(Path(path), lambda tmp: save_file(contiguous, tmp, metadata=metadata))


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


def save_checkpoint(directory: str | Path, module: torch.nn.Module, config: dict) -> None:
    """Write ``module``'s weights and ``config`` into ``directory`` (weights first, config last)."""
    directory = Path(directory)
    save_tensors(directory / WEIGHTS, module.state_dict())
    save_json(directory / CONFIG, config)


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
                "shape mismatch " + ", ".join(f"{k}: {tuple(tensors[k].shape)} vs {tuple(expected[k].shape)}" for k in wrong[:5])
            )
        raise ValueError(
            f"weights in {source} do not match their config.json ({'; '.join(details)}); "
            "the files come from different checkpoints — copy both from the same save"
        )
    module.load_state_dict(tensors)


OPTIMIZER = "optimizer.safetensors"
TRAINER_STATE = "trainer_state.json"


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


def save_training_state(
    directory: str | Path, optimizer: torch.optim.Optimizer, rng: dict[str, torch.Tensor], state: dict
) -> None:
    """Everything beyond the weights that exact resumption needs: optimizer moments, RNG states, counters."""
    directory = Path(directory)
    opt_tensors, opt_meta = optimizer_tensors(optimizer)
    save_tensors(directory / OPTIMIZER, {**{f"opt.{k}": v for k, v in opt_tensors.items()}, **{f"rng.{k}": v for k, v in rng.items()}})
    save_json(directory / TRAINER_STATE, {**state, "optimizer": opt_meta})


def load_training_state(directory: str | Path, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Restore the optimizer in place; return (rng tensors, trainer state)."""
    directory = Path(directory)
    tensors = load_tensors(directory / OPTIMIZER)
    state = load_json(directory / TRAINER_STATE)
    restore_optimizer(optimizer, {k[4:]: v for k, v in tensors.items() if k.startswith("opt.")}, state.pop("optimizer"))
    return {k[4:]: v for k, v in tensors.items() if k.startswith("rng.")}, state
