"""Optional dependencies: import one, or fail with the ``pip install`` that brings it."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` (an optional dependency) or fail with one line naming the ``pip install`` that brings it
    (``extra``: the optional-dependency group of pyproject.toml)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ValueError(
            f"{feature} needs the optional dependency {e.name or module}: pip install 'unmask[{extra}]'"
        ) from None
