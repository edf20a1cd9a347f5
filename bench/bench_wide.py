"""A run that prints 10^6 metric keys: what it costs to end, list and announce it.

Engine-level (no LSP): the run's own end (its last line's timestamp) → final record, then with
that run in the registry: `recent()` (what `labls.run.list` and `labls runs` read) and `get()`
(the whole record, `labls.run.get`), medians of 20; the sizes of the summary (what
`labls/runFinished`, `run.list` and diagnostics carry) and of the whole record on the wire.
Writes bench/out/wide.json.

    .venv/bin/python bench/bench_wide.py [--keys 1000000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from common import write_results

SCRIPT = """
import sys, time
n = {keys}
for start in range(0, n, 10000):
    sys.stdout.write("".join(f"key{{i}}: {{i}}.5\\n" for i in range(start, min(n, start + 10000))))
print("val_bpb: 0.5")
sys.stdout.flush()
print(f"END {{time.time()!r}}", flush=True)
"""


def timed(fn, n: int = 20) -> float:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=1_000_000)
    args = parser.parse_args()
    from labls.sandbox.config import Config
    from labls.sandbox.engine import Engine, RunRequest

    with tempfile.TemporaryDirectory(prefix="labls-bench-wide-") as tmp:
        ws = Path(tmp)
        (ws / "wide.py").write_text(SCRIPT.format(keys=args.keys))
        engine = Engine(ws, Config(dataset_cache_root=str(ws / "none")))
        try:
            record = engine.wait(engine.start(RunRequest("wide.py", timeout_sec=600)).run_id)
            done = time.time()
            assert record is not None and record.state == "succeeded", record.error
            end_line = next(ln for ln in Path(record.log_path).read_text().splitlines()[-3:]
                            if ln.startswith("END "))
            run_end_to_record = done - float(end_line.split()[1])
            registry = engine.registry
            result = {
                "keys": len(record.metrics),
                "run_end_to_record_sec": run_end_to_record,
                "recent_ms": timed(lambda: registry.recent(20)),
                "get_ms": timed(lambda: registry.get(record.run_id), 3),
                "summary_wire_bytes": len(json.dumps(record.summary("val_bpb").to_wire())),
                "whole_wire_bytes": len(json.dumps(record.to_wire())),
                "to_wire_ms": timed(lambda: record.to_wire(), 5),
                "summary_ms": timed(lambda: record.summary("val_bpb").to_wire(), 5),
            }
        finally:
            engine.close()
    write_results("wide", result)


if __name__ == "__main__":
    main()
