"""unmask: learning where to unmask in masked diffusion language models."""

__version__ = "0.1.0"
