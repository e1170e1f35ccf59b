"""MDM backends and the model registry (built-in names or checkpoint paths)."""

from __future__ import annotations

from pathlib import Path

from unmask.checkpoint import CONFIG, WEIGHTS, load_json, load_state_into, load_tensors
from unmask.models.base import MaskedDiffusionModel, MDMOutput, resolve_device
from unmask.models.transformer import MaskedTransformer, TransformerConfig

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "assets" / "models"


def builtin_models() -> list[str]:
    """Names of the MDMs shipped with the package."""
    return sorted(p.name for p in BUILTIN_DIR.glob("*") if (p / CONFIG).is_file())


def resolve_model_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if (path / CONFIG).is_file():
        return path
    if (BUILTIN_DIR / name_or_path / CONFIG).is_file():
        return BUILTIN_DIR / name_or_path
    raise ValueError(
        f"unknown model {name_or_path!r}: not a checkpoint directory (with {CONFIG} and {WEIGHTS}) "
        f"and not a built-in model; built-in models: {', '.join(builtin_models()) or '(none installed)'}"
    )


def load_model(name_or_path: str, **options) -> MaskedDiffusionModel:
    """Load a built-in MDM by name, a checkpoint directory written by ``unmask train-mdm``, or a
    Hugging Face dLLM as ``hf:NAME_OR_PATH`` (``options``: see :func:`unmask.models.hf.load_hf_model`).
    Every model takes ``device`` (default cuda when available, else cpu)."""
    if not name_or_path:
        raise ValueError("no model given; pass --model (a built-in model, a checkpoint directory or hf:NAME_OR_PATH)")
    if name_or_path.startswith("hf:"):
        from unmask.models.hf import load_hf_model

        return load_hf_model(name_or_path[3:], **options)
    device = resolve_device(options.pop("device", None))
    if options:
        raise ValueError(f"model options {', '.join(sorted(options))} apply to Hugging Face models (hf:NAME) only, not {name_or_path!r}")
    path = resolve_model_path(name_or_path)
    meta = load_json(path / CONFIG)
    if "model" not in meta:
        raise ValueError(f"{path / CONFIG} has no 'model' section: this is not an MDM checkpoint (a policy checkpoint?)")
    model = MaskedTransformer(TransformerConfig.from_dict(meta["model"]))
    load_state_into(model, load_tensors(path / WEIGHTS), path)
    model.name = meta.get("name", path.name)
    return model.to(device).eval().requires_grad_(False)


__all__ = [
    "BUILTIN_DIR",
    "MDMOutput",
    "MaskedDiffusionModel",
    "MaskedTransformer",
    "TransformerConfig",
    "builtin_models",
    "load_model",
    "resolve_model_path",
]
