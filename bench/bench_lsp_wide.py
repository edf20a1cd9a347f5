"""The language server while a run of 10^6 metric keys ends: is anyone else kept waiting?

`labls serve` over stdio (the project's own client). A run prints N metric keys; meanwhile, and
until its `labls/runFinished` has arrived, `labls.run.list` is asked back to back and each
answer timed (p50, p99, max): what a client waits. Then `labls.run.get` of pages of that run's
metrics (the first and random ones), and of all of them page by page. How long the server's
own event loop was blocked is measured inside it (`lagged_serve.py`: the lateness of a timer
due every 5 ms).
Also the size of the `runFinished` notification and the server's resident memory at the end.
Writes bench/out/lsp_wide.json.

    .venv/bin/python bench/bench_lsp_wide.py [--keys 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from bench_wide import SCRIPT  # the same run of N keys
from common import percentile, write_results

from tools.rpc_client import LspClient


def resident_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(ln for ln in status.splitlines() if ln.startswith("VmRSS:")).split()[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="labls-bench-lspwide-") as tmp:
        ws = Path(tmp)
        (ws / "wide.py").write_text(SCRIPT.format(keys=args.keys))
        lag_file = ws.parent / f"{ws.name}-lag.json"
        env = {**os.environ, "LABLS_BENCH_LAG_FILE": str(lag_file)}
        serve = [sys.executable, str(Path(__file__).with_name("lagged_serve.py"))]
        with LspClient(ws, command=serve, env=env) as client:
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
            finished_at = time.monotonic()
            for _ in range(20):  # and a little after, while diagnostics settle
                s = time.perf_counter()
                client.command("labls.run.list", {"limit": 5})
                latencies.append(time.perf_counter() - s)
            gets: list[float] = []  # pages of the run's metrics, first and anywhere
            for offset in [0] * 20 + [random.randrange(args.keys) for _ in range(80)]:
                s = time.perf_counter()
                client.command("labls.run.get", {"runId": run_id, "metricsOffset": offset})
                gets.append(time.perf_counter() - s)
            s = time.perf_counter()
            whole, offset = 0, 0  # the whole set, page by page
            while offset is not None:
                page = client.command("labls.run.get", {"runId": run_id,
                                                        "metricsOffset": offset})
                whole += len(page["metrics"])
                offset = page["metricsNext"]
            get_sec = time.perf_counter() - s
            measured_to = time.monotonic()  # (the server's clock too: one system-wide clock)
            rss_mb = resident_mb(client.proc.pid)  # after ~3,700 answers, 201 of them pages
        lag = json.loads(lag_file.read_text())
        lag_file.unlink()
        # the window measured: from the start to the last page of the whole set
        lags = [late for at, late in lag["lags"] if at < measured_to]
        worst = sorted((late, at) for at, late in lag["lags"] if at < measured_to)[-10:]
        stalls = [s for s in lag["stalls"] if s["at"] < measured_to]
        collections = [c for c in lag["gc"] if c[0] < measured_to]
    result = {"keys": args.keys, "requests": len(latencies),
              "run_list_p50_ms": percentile(latencies, 0.5) * 1e3,
              "run_list_p99_ms": percentile(latencies, 0.99) * 1e3,
              "run_list_max_ms": max(latencies) * 1e3,
              "loop_lag_p99_ms": percentile(lags, 0.99) * 1e3,
              "loop_lag_max_ms": max(lags) * 1e3, "loop_lags_over_100ms": sum(
                  x > 0.1 for x in lags),
              "loop_worst_lags": [{"ms": round(late * 1e3, 1),
                                   "sec_from_run_start": round(at - t0, 2),
                                   "sec_from_run_finished": round(at - finished_at, 2)}
                                  for late, at in reversed(worst)],
              "gc_over_10ms": [{"generation": g, "ms": round(took * 1e3, 1),
                                "sec_from_run_start": round(at - t0, 2)}
                               for at, g, took in collections],
              "stalls": [{**s, "at": round(s["at"] - t0, 2),
                          "since_tick": round(s["since_tick"] * 1e3, 1)} for s in stalls],
              "run_finished_bytes": len(json.dumps(note)),
              "run_get_page_p50_ms": percentile(gets, 0.5) * 1e3,
              "run_get_page_p99_ms": percentile(gets, 0.99) * 1e3,
              "run_get_page_max_ms": max(gets) * 1e3,
              "run_get_all_pages_sec": get_sec, "run_get_metrics": whole,
              "server_rss_mb_at_end": rss_mb}
    write_results("lsp_wide", result)


if __name__ == "__main__":
    main()
