"""unmask: learning where to unmask in masked diffusion language models."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``unmask.generate`` (:func:`unmask.integrations.upstream.generate`), imported on first use so ``import unmask`` stays light."""
    if name == "generate":
        from unmask.integrations.upstream import generate

        return generate
    raise AttributeError(f"module 'unmask' has no attribute {name!r}")
