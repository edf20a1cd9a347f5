"""Files the engine puts on every run's PYTHONPATH (stdlib only: they run inside the sandbox)."""

from pathlib import Path

HARNESS_DIR = Path(__file__).resolve().parent
