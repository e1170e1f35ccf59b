"""Registration in SGLang: the interface unmask relies on, checked, and the one-line module that registers it.

SGLang finds dLLM algorithms by importing every module of its package ``sglang.srt.dllm.algorithm`` and keeping
each one's ``Algorithm`` attribute under the class's name (``import_algorithms``: no entry points), so a module
outside that package is never seen. :func:`install` writes :data:`SHIM` into the installed package: one line that
imports :class:`unmask.integrations.sglang.algorithm.UnmaskPolicy`, after checking the installed SGLang against
:data:`INTERFACE` from its source, without importing it (SGLang's imports need its GPU serving stack). The adapter
checks the same interface on the imported classes when SGLang loads it (:func:`check_class`), so a SGLang upgrade
that changed it fails with the same message instead of a wrong decode.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
from pathlib import Path

SHIM = "unmask_policy.py"  # the module install writes into sglang/srt/dllm/algorithm/
SHIM_LINE = "from unmask.integrations.sglang.algorithm import UnmaskPolicy as Algorithm  # unmask sglang install\n"
TESTED = "0.5.23"  # the SGLang release the equivalence test runs (pyproject's sglang-test extra)
# DllmAlgorithm's methods unmask overrides or calls, with their parameters (SGLang 0.5.23)
INTERFACE = {
    "__init__": ("self", "config"),
    "init_step_state": ("self", "forward_batch"),
    "max_steps": ("self", "block_size"),
    "step": ("self", "forward_batch", "full_logits", "states"),
}


def algorithm_package() -> Path:
    """The installed SGLang's algorithm package folder (found without importing SGLang)."""
    spec = importlib.util.find_spec("sglang")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "SGLang is not installed in this Python environment: install it (pip install sglang, on a GPU machine: "
            "docs/deploy.md), then run unmask sglang install with the same Python"
        )
    package = Path(next(iter(spec.submodule_search_locations))) / "srt" / "dllm" / "algorithm"
    if not (package / "base.py").is_file():
        raise ValueError(
            f"the installed SGLang ({package.parents[2]}) has no dLLM algorithm package (srt/dllm/algorithm/base.py): "
            f"unmask serves policies through it since SGLang {TESTED}; upgrade SGLang"
        )
    return package


def check_source(package: Path) -> None:
    """Raise when ``package`` (sglang/srt/dllm/algorithm) does not have the interface unmask relies on: SGLang's
    scan for ``Algorithm`` attributes and :data:`INTERFACE` on ``DllmAlgorithm``."""
    init = ast.parse((package / "__init__.py").read_text(encoding="utf-8"))
    scans = any(isinstance(n, ast.Attribute) and n.attr == "Algorithm" for n in ast.walk(init))
    if not scans:
        _refuse(package, "its __init__.py no longer collects the modules' Algorithm attribute")
    base = ast.parse((package / "base.py").read_text(encoding="utf-8"))
    cls = next((n for n in base.body if isinstance(n, ast.ClassDef) and n.name == "DllmAlgorithm"), None)
    if cls is None:
        _refuse(package, "base.py defines no DllmAlgorithm class")
    methods = {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}
    _check_methods({name: tuple(a.arg for a in f.args.args) for name, f in methods.items()}, package)


def check_class(base: type) -> None:
    """Raise when the imported ``DllmAlgorithm`` does not have :data:`INTERFACE`."""
    found = {
        name: tuple(inspect.signature(getattr(base, name)).parameters) for name in INTERFACE if hasattr(base, name)
    }
    _check_methods(found, Path(inspect.getfile(base)).parent)


def _check_methods(found: dict[str, tuple[str, ...]], package: Path) -> None:
    for name, parameters in INTERFACE.items():
        if name not in found:
            _refuse(package, f"DllmAlgorithm has no {name}()")
        if found[name] != parameters:
            _refuse(package, f"DllmAlgorithm.{name}{found[name]} is not {name}{parameters}".replace("'", ""))


def _refuse(package: Path, what: str) -> None:
    raise ValueError(
        f"the installed SGLang's dLLM algorithm interface changed ({package}): {what}; unmask's adapter is written "
        f"for SGLang {TESTED}: install that (pip install sglang=={TESTED}) or an unmask release that supports yours"
    )


def install(package: Path | None = None) -> Path:
    """Write :data:`SHIM` into SGLang's algorithm package (``package``; default: the installed SGLang's) after
    checking its interface; the path written. Then ``--dllm-algorithm UnmaskPolicy`` selects unmask."""
    package = package or algorithm_package()
    check_source(package)
    path = package / SHIM
    try:
        path.write_text(SHIM_LINE, encoding="utf-8")
    except OSError as e:
        raise ValueError(
            f"cannot write {path} ({e.strerror}): run unmask sglang install as the user who installed SGLang"
        ) from None
    return path


def uninstall(package: Path | None = None) -> Path | None:
    """Remove :data:`SHIM` from SGLang's algorithm package; the path removed (None: it was not installed)."""
    path = (package or algorithm_package()) / SHIM
    if not path.is_file():
        return None
    if path.read_text(encoding="utf-8") != SHIM_LINE:
        raise ValueError(f"{path} was not written by unmask sglang install (its content differs): left as it is")
    path.unlink()
    return path
