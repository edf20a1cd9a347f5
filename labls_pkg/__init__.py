"""labls: a language server for machine-learning experiments."""

__version__ = "0.1.0"
