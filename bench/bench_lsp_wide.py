"""The language server while a run of 10^6 metric keys ends: is anyone else kept waiting?

`labls serve` over stdio (the project's own client). A run prints N metric keys; meanwhile, and
until its `labls/runFinished` has arrived, `labls.run.list` is asked back to back and each
answer timed: its latencies (p50, p99, max) are how long the server's event loop was blocked at
worst. Also the size of the `runFinished` notification and the total bytes the server wrote.
Writes bench/out/lsp_wide.json.

    .venv/bin/python bench/bench_lsp_wide.py [--keys 1000000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench_wide import SCRIPT  # the same run of N keys
from common import percentile, write_results

from tools.rpc_client import LspClient


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="labls-bench-lspwide-") as tmp:
        ws = Path(tmp)
        (ws / "wide.py").write_text(SCRIPT.format(keys=args.keys))
        with LspClient(ws) as client:
            client.initialize({"datasetCacheRoot": str(ws / "none")})
            run_id = client.command("labls.run.start", {"script": "wide.py",
                                                         "timeoutSec": 600})["runId"]
            latencies: list[float] = []
            t0 = time.monotonic()

            def finished() -> dict | None:
                return next((n for n in client.notifications
                             if n.get("method") == "labls/runFinished"
                             and n["params"]["run"]["runId"] == run_id), None)

            while (note := finished()) is None and time.monotonic() - t0 < 600:
                s = time.perf_counter()
                client.command("labls.run.list", {"limit": 5})
                latencies.append(time.perf_counter() - s)
            assert note is not None, "no runFinished"
            for _ in range(20):  # and a little after, while diagnostics settle
                s = time.perf_counter()
                client.command("labls.run.list", {"limit": 5})
                latencies.append(time.perf_counter() - s)
            s = time.perf_counter()
            whole = client.command("labls.run.get", {"runId": run_id})
            get_sec = time.perf_counter() - s
    result = {"keys": args.keys, "requests": len(latencies),
              "run_list_p50_ms": percentile(latencies, 0.5) * 1e3,
              "run_list_p99_ms": percentile(latencies, 0.99) * 1e3,
              "run_list_max_ms": max(latencies) * 1e3,
              "run_finished_bytes": len(json.dumps(note)),
              "run_get_whole_sec": get_sec, "run_get_metrics": len(whole["metrics"])}
    write_results("lsp_wide", result)


if __name__ == "__main__":
    main()
