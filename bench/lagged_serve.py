"""`labls serve` with a probe of its event loop: how late the loop runs a timer that is due.

A timer due every 5 ms; its lateness is how long the loop was kept from running anything, by a
callback of its own or by waiting for the interpreter lock. Every tick's time and lateness are
written to the JSON file named by `LABLS_BENCH_LAG_FILE` once a second and at exit. For
benchmarks only: the probe is installed from outside, the server is unchanged.

    LABLS_BENCH_LAG_FILE=lag.json python bench/lagged_serve.py
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import sys
import time
from pathlib import Path

PERIOD = 0.005


class LagProbe:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.lags: list[tuple[float, float]] = []  # (time.monotonic(), lateness in seconds)
        self.written = time.monotonic()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        due = loop.time() + PERIOD
        loop.call_at(due, self.tick, loop, due)

    def tick(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        now = loop.time()
        late = now - due
        self.lags.append((time.monotonic(), late))
        if now - self.written > 1.0:
            self.write()
        loop.call_at(now + PERIOD, self.tick, loop, now + PERIOD)

    def write(self) -> None:
        self.written = time.monotonic()
        self.out.write_text(json.dumps({"lags": self.lags}))


def main() -> None:
    probe = LagProbe(Path(os.environ["LABLS_BENCH_LAG_FILE"]))
    atexit.register(probe.write)
    original = asyncio.BaseEventLoop.run_forever

    def run_forever(self: asyncio.BaseEventLoop) -> None:
        probe.start(self)
        original(self)

    asyncio.BaseEventLoop.run_forever = run_forever  # type: ignore[method-assign]
    from labls.server.cli import console

    sys.argv = ["labls", "serve"]
    console()


if __name__ == "__main__":
    main()
