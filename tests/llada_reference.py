"""LLaDA's upstream scripts (shared/reference/llada, read-only test oracles) as modules; tests skip without them."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "llada"


def llada_module(name: str) -> ModuleType:
    """``generate`` or ``get_log_likelihood`` from LLaDA's repository, imported from its file."""
    path = REFERENCE / f"{name}.py"
    if not path.is_file():
        pytest.skip(f"reference file {path} is absent")
    spec = importlib.util.spec_from_file_location(f"llada_reference_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
