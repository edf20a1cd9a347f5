"""Experiment logic with no LSP in it: edits, baseline comparison, the git ledger, the loop."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version


def version() -> str:
    """labls's version, from the installed package's metadata (pyproject.toml's)."""
    try:
        return _version("labls")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"
