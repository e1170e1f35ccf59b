"""The package's layers: a module imports only from its own layer and the layers below it (no circles, no
reaching up), lazy and type-checking imports included. The order is the architecture of docs/index.md."""

from __future__ import annotations

import ast
from pathlib import Path

import unmask

PACKAGE = Path(unmask.__file__).parent
LAYERS = ["core", "models", "tasks", "engine", "policies", "evaluation", "training", "integrations", "api", "cli"]
RANK = {
    "core": 0,
    "models": 1,
    "tasks": 2,
    "engine": 2,
    "policies": 3,
    "evaluation": 4,
    "training": 5,
    "integrations": 6,
    "api": 7,
    "cli": 8,
}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "unmask" or len(parts) < 2:
        return None
    return parts[1]


def imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
    return out


def test_every_module_belongs_to_a_layer():
    strays = [
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.glob("*.py")
        if p.stem not in ("__init__", "__main__") and p.stem not in RANK
    ]
    assert not strays, f"modules outside the layers: {strays}"
    folders = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert set(folders) <= set(RANK), folders


def test_no_module_imports_a_higher_layer():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if own not in RANK:  # unmask/__init__.py and __main__.py sit above everything
            continue
        for line, module in imports(path):
            other = layer_of(module)
            if other is not None and other in RANK and RANK[other] > RANK[own]:
                bad.append(f"{path.relative_to(PACKAGE)}:{line} ({own}) imports {module} ({other})")
            if other is not None and other != own and RANK.get(other) == RANK[own]:
                bad.append(f"{path.relative_to(PACKAGE)}:{line} ({own}) imports its sibling layer {module}")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_an_upward_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from unmask.training.grpo import GRPOTrainer\n")
    assert imports(module) == [(2, "unmask.training.grpo")]
