"""The package version: its one home (pyproject.toml reads it; `swishkernels.__version__` re-exports it)."""
__version__ = "0.1.0"
