"""What every benchmark shares: percentiles and writing its results to bench/out/."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "out"
# the repository's own tools (the JSON-RPC client) for a bench run as `python bench/x.py`
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def summary_ms(samples: list[float]) -> dict[str, float]:
    """Seconds in, milliseconds out."""
    return {"n": len(samples), "median_ms": statistics.median(samples) * 1e3,
            "p95_ms": percentile(samples, 0.95) * 1e3, "p99_ms": percentile(samples, 0.99) * 1e3,
            "min_ms": min(samples) * 1e3, "max_ms": max(samples) * 1e3}


def write_results(name: str, results: dict[str, Any]) -> None:
    OUT.mkdir(exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(results, indent=2))
