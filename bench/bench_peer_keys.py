"""How many of the metric keys a peer's own parser extracts labls extracts too, same values.

The peer is AutoResearchClaw, from a checkout the user gives (it is not in this repository):
    git clone https://github.com/aiming-lab/AutoResearchClaw /tmp/arc
    .venv/bin/python bench/bench_peer_keys.py --peer /tmp/arc
The replayed output is every printed-metric line found in the peer's own text: the string
literals of its Python files (its prompts, which tell generated code what to print, its test
fixtures and its fallback scripts) that hold a line a stdout parser of the peer reads. Each
literal is one run's output; both parsers read it; a peer key counts when labls has the same
key with the same value (to 1e-9). Also reported: literals where the peer found metrics and
labls none (a run labls would call `noMetrics`).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import math
import sys
from pathlib import Path
from typing import Any

from common import write_results

from labls.sandbox.metrics import MetricSet
from labls.sandbox.stdout_metrics import parse_chunk


def literals(root: Path) -> list[str]:
    """The string literals of the peer's Python files that span at least one line."""
    found = []
    for path in sorted(root.rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value:
                found.append(node.value)
    return found


def labls_keys(text: str) -> dict[str, float]:
    out = MetricSet()
    data = text.encode()
    parse_chunk(data if data.endswith(b"\n") else data + b"\n", out)
    return {k: v for k, v in out.values.items() if math.isfinite(v)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--peer", type=Path, required=True, help="an AutoResearchClaw checkout")
    args = parser.parse_args()
    sys.path.insert(0, str(args.peer))
    sandbox = importlib.import_module("researchclaw.experiment.sandbox")
    helpers = importlib.import_module("researchclaw.pipeline._helpers")
    peers: dict[str, Any] = {
        "experiment.sandbox.parse_metrics": sandbox.parse_metrics,  # the run's metrics
        "pipeline._helpers._parse_metrics_from_stdout": helpers._parse_metrics_from_stdout,
    }
    texts = literals(args.peer)
    results: dict[str, Any] = {}
    for name, parse in peers.items():
        results[name] = compare(texts, parse)
        sys.stdout.write(f"{name}:\n")
        for key, value in results[name].items():
            if key != "most_missed_lines":
                sys.stdout.write(f"  {key}: {value}\n")
        for line, count in results[name]["most_missed_lines"]:
            sys.stdout.write(f"    missed x{count}: {line}\n")
    write_results("peer_keys", results)


def compare(texts: list[str], parse: Any) -> dict[str, Any]:
    total = same = outputs = lost_runs = 0
    missed: dict[str, int] = {}
    for text in texts:
        expected = {k: float(v) for k, v in parse(text).items()
                    if isinstance(v, int | float) and math.isfinite(v)}
        if not expected:
            continue
        outputs += 1
        got = labls_keys(text)
        lost_runs += not got
        for key, value in expected.items():
            total += 1
            if key in got and abs(got[key] - value) <= 1e-9 * max(1.0, abs(value)):
                same += 1
                continue
            line = next((ln for ln in text.splitlines() if key.split("/")[-1] in ln), key)
            missed[line.strip()[:120]] = missed.get(line.strip()[:120], 0) + 1
    return {"outputs": outputs, "peer_keys": total, "same_in_labls": same,
            "share": round(same / total, 4) if total else None,
            "outputs_labls_found_nothing_in": lost_runs,
            "most_missed_lines": sorted(missed.items(), key=lambda kv: -kv[1])[:15]}


if __name__ == "__main__":
    main()
