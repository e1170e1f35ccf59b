"""Upstream reference scripts (shared/reference, read-only test oracles) imported from their files; tests skip
without them."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


def load_reference(name: str, path: Path, stubs: dict[str, types.ModuleType] | None = None) -> types.ModuleType:
    """The script at ``path`` as module ``name`` (imported once), with ``stubs`` standing in for its imports
    while it loads."""
    if name in sys.modules:
        return sys.modules[name]
    saved = {k: sys.modules.get(k) for k in (stubs or {})}
    sys.modules.update(stubs or {})
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    sys.modules[name] = module
    return module


def llada_module(name: str) -> types.ModuleType:
    """``generate`` or ``get_log_likelihood`` from LLaDA's repository, imported from its file."""
    path = REFERENCE / "llada" / f"{name}.py"
    if not path.is_file():
        pytest.skip(f"reference file {path} is absent")
    return load_reference(f"llada_reference_{name}", path)
