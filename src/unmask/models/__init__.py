"""MDM backends and the model registry (built-in names or checkpoint paths)."""

from __future__ import annotations

from pathlib import Path

from unmask.core.checkpoint import CONFIG, LAST, WEIGHTS, load_json
from unmask.core.hub import HF_SCHEME
from unmask.models.base import MaskedDiffusionModel, MDMOutput, resolve_device
from unmask.models.transformer import MaskedTransformer, TransformerConfig

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "assets" / "models"


def builtin_models() -> list[str]:
    """Names of the MDMs shipped with the package."""
    return sorted(p.name for p in BUILTIN_DIR.glob("*") if (p / CONFIG).is_file())


def resolve_model_path(name_or_path: str) -> Path:
    if name_or_path.startswith(HF_SCHEME):  # a built-in-format MDM on the Hugging Face Hub
        from unmask.core.hub import resolve_hf_spec

        _, path, options = resolve_hf_spec(name_or_path)
        if options:
            raise ValueError(f"model {name_or_path!r}: a model spec takes no ':options'")
        return path
    path = Path(name_or_path)
    if (path / CONFIG).is_file():
        return path
    if (path / LAST / CONFIG).is_file():  # a run directory of `unmask train-mdm`: its latest checkpoint
        return path / LAST
    if (BUILTIN_DIR / name_or_path / CONFIG).is_file():
        return BUILTIN_DIR / name_or_path
    raise ValueError(
        f"unknown model {name_or_path!r}: not a checkpoint directory (with {CONFIG} and {WEIGHTS}) "
        f"and not a built-in model; built-in models: {', '.join(builtin_models()) or '(none installed)'}"
    )


def is_transformers_name(name_or_path: str) -> bool:
    """``hf:NAME_OR_PATH``: a ``transformers`` dLLM (``hf://OWNER/NAME`` is an unmask checkpoint on the hub)."""
    return name_or_path.startswith("hf:") and not name_or_path.startswith(HF_SCHEME)


def recorded_task_options(name_or_path: str | None, task: str) -> dict:
    """The task options a built-in MDM or ``unmask train-mdm`` checkpoint was trained with (its config.json
    ``train.task_options``) when it was trained for ``task``; {} for other models (``hf:``, unknown names)."""
    if not name_or_path or is_transformers_name(name_or_path):
        return {}
    try:
        path = resolve_model_path(name_or_path)
    except ValueError:
        return {}
    train = load_json(path / CONFIG).get("train", {})
    return dict(train.get("task_options") or {}) if train.get("task") == task else {}


def load_model(name_or_path: str, **options) -> MaskedDiffusionModel:
    """Load a built-in MDM by name, a checkpoint directory written by ``unmask train-mdm`` (or one on the
    Hugging Face Hub, ``hf://OWNER/NAME[@REV]``), or a Hugging Face dLLM as ``hf:NAME_OR_PATH`` (``options``: see :func:`unmask.models.hf.load_hf_model`).
    Every model takes ``device`` (default cuda when available, else cpu)."""
    if not name_or_path:
        raise ValueError("no model given; pass --model (a built-in model, a checkpoint directory or hf:NAME_OR_PATH)")
    if is_transformers_name(name_or_path):
        from unmask.models.hf import load_hf_model

        return load_hf_model(name_or_path[3:], **options)
    device = resolve_device(options.pop("device", None))
    if options:
        raise ValueError(
            f"model options {', '.join(sorted(options))} apply to Hugging Face models (hf:NAME) only, not {name_or_path!r}"
        )
    return MaskedTransformer.load_checkpoint(resolve_model_path(name_or_path)).to(device)


__all__ = [
    "BUILTIN_DIR",
    "MDMOutput",
    "MaskedDiffusionModel",
    "MaskedTransformer",
    "TransformerConfig",
    "builtin_models",
    "load_model",
    "recorded_task_options",
    "resolve_model_path",
]
