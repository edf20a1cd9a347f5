"""LSP responsiveness while runs go. Writes bench/out/lsp.json.

1. `labls.run.get` round trips (sequential, one client) while a run prints at full speed.
2. Run end → diagnostics received: the script prints its own exit time as its last line; the
   client notes when the `publishDiagnostics` for the script arrives.

    .venv/bin/python bench/bench_lsp.py [--requests 1000] [--ends 20]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import summary_ms, write_results

from tools.rpc_client import LspClient

FLOOD = """
import sys, time
line = "step 123 loss 0.123456 lr 0.001 throughput 12345 tok/s" + "\\n"
block = line * 2000
t0 = time.time()
while time.time() - t0 < 120:
    sys.stdout.write(block)
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--ends", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        (ws / "flood.py").write_text(FLOOD)
        (ws / "labls.toml").write_text("[run]\nmax_concurrent = 2\nkill_grace_sec = 1\n")
        (ws / "ends.py").write_text("import time\nprint('val_bpb: 1.0')\n"
                                    "print(f'exit_at: {time.time():.6f}')\n")
        uri = (ws / "ends.py").resolve().as_uri()
        with LspClient(ws) as client:
            client.initialize()
            run_id = client.command("labls.run.start", {"script": "flood.py"})["runId"]
            time.sleep(1.0)
            lat = []
            for _ in range(args.requests):
                t0 = time.perf_counter()
                state = client.command("labls.run.get", {"runId": run_id})["state"]
                lat.append(time.perf_counter() - t0)
                assert state == "running"
            log_bytes = Path(client.command("labls.run.get", {"runId": run_id})["logPath"]
                             ).stat().st_size
            client.command("labls.run.cancel", {"runId": run_id})
            ends = []
            for _ in range(args.ends):
                rid = client.command("labls.run.start", {"script": "ends.py"})["runId"]
                msg = client.wait_for(lambda n, rid=rid: n.get("method") ==
                                      "textDocument/publishDiagnostics"
                                      and n["params"]["uri"] == uri
                                      and any(d.get("data", {}).get("runId") == rid
                                              for d in n["params"]["diagnostics"]), timeout=60)
                received = time.time()
                record = client.command("labls.run.get", {"runId": rid})
                ends.append(received - record["metrics"]["exit_at"])
                del msg
    results = {
        "run_get_while_flooding": {**summary_ms(lat), "log_mb_written_meanwhile":
                                   log_bytes / 2**20},
        "run_end_to_diagnostics": summary_ms(ends),
    }
    write_results("lsp", results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
