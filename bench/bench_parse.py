"""The stdout parser's throughput: MB/s through `parse_chunk`, as the output pump feeds it.

    .venv/bin/python bench/bench_parse.py [--against COMMIT]
Two logs: a training log where every line holds a colon (the worst case: each is looked at)
and 1 % carry metrics, and a flood of plain text (the pre-filter's case). `--against` loads the
parser of an older commit (its `sandbox/metrics.py`, from git) and measures it the same way.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

from common import write_results

from labls.sandbox import stdout_metrics
from labls.sandbox.metrics import MetricSet

ROOT = Path(__file__).resolve().parent.parent


def training_log(lines: int = 200_000) -> bytes:
    out = []
    for i in range(lines):
        out.append(f"step {i}: training, lr schedule at warmup {i % 7} done")
        out.append("some plain log text without anything of interest at all here")
        if i % 100 == 0:
            out.append(f"val_loss: {1 / (i + 1)}")
        if i % 50 == 0:
            out.append(f"INFO:root:epoch={i} ok")
    return ("\n".join(out) + "\n").encode()


def old_parser(commit: str) -> tuple[Any, Any]:
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:sandbox/metrics.py"],
                            capture_output=True, text=True, check=True).stdout
    module = types.ModuleType("labls_old_metrics")
    sys.modules[module.__name__] = module
    exec(compile(source.replace("from . import", "from labls.sandbox import"), commit, "exec"),
         module.__dict__)
    return module.parse_chunk, module.MetricSet


def best_of(parse: Any, make: Any, block: bytes, reps: int = 3) -> dict[str, float]:
    best = float("inf")
    for _ in range(reps):
        into = make()
        start = time.perf_counter()
        used = parse(block, into)
        best = min(best, time.perf_counter() - start)
    return {"mb": len(block) / 1e6, "ms": best * 1e3, "mb_per_s": len(block) / 1e6 / best,
            "lines_used": used}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--against", help="an older commit whose parser to measure too")
    args = parser.parse_args()
    logs = {"training_log": training_log(),
            "plain_flood": b"plain text flood without separators\n" * 500_000}
    parsers = {"labls": (stdout_metrics.parse_chunk, MetricSet)}
    if args.against:
        parsers[args.against] = old_parser(args.against)
    results = {name: {log: best_of(parse, make, block) for log, block in logs.items()}
               for name, (parse, make) in parsers.items()}
    write_results("parse", results)
    for name, by_log in results.items():
        for log, r in by_log.items():
            sys.stdout.write(f"{name:<10} {log:<13} {r['mb']:5.1f} MB {r['ms']:7.1f} ms "
                             f"{r['mb_per_s']:6.0f} MB/s  {r['lines_used']} lines\n")


if __name__ == "__main__":
    main()
