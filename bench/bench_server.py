"""Server latency: spawn → `initialize` answered (labls vs a bare pygls server), and the
`labls.prompt.render` / `labls.datasets.list` round trips. Writes bench/out/server.json.

    .venv/bin/python bench/bench_server.py [--spawns 15] [--requests 300]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import summary_ms, write_results

from tools.rpc_client import LspClient

HERE = Path(__file__).resolve().parent


def spawn_to_initialize(command: list[str], workspace: Path, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        client = LspClient(workspace, command=command)
        client.initialize()
        times.append(time.perf_counter() - t0)
        client.close()
    return times


def round_trips(client: LspClient, name: str, args: dict, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.command(name, args)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spawns", type=int, default=15)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        labls_cmd = [str(Path(sys.executable).with_name("labls")), "serve"]
        bare_cmd = [sys.executable, str(HERE / "bare_pygls_server.py")]
        # interleave so that machine noise hits both alike
        labls_t, bare_t = [], []
        for _ in range(args.spawns):
            labls_t += spawn_to_initialize(labls_cmd, ws, 1)
            bare_t += spawn_to_initialize(bare_cmd, ws, 1)
        with LspClient(ws) as client:
            client.initialize()
            round_trips(client, "labls.prompt.render", {"template": "experiment"}, 20)  # warm
            render = round_trips(client, "labls.prompt.render",
                                 {"template": "network_disabled_guidance"}, args.requests)
            listing = round_trips(client, "labls.datasets.list", {}, args.requests)
    results = {"spawn_to_initialize_labls": summary_ms(labls_t),
               "spawn_to_initialize_bare_pygls": summary_ms(bare_t),
               "prompt_render_round_trip": summary_ms(render),
               "datasets_list_round_trip": summary_ms(listing)}
    write_results("server", results)
    for name, s in results.items():
        print(f"{name:<34} median {s['median_ms']:7.2f} ms   p99 {s['p99_ms']:7.2f} ms"
              f"   n={s['n']}")


if __name__ == "__main__":
    main()
