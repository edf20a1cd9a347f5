"""`labls serve` with a probe of its event loop: how late the loop runs a timer that is due.

A timer due every 5 ms; its lateness is how long the loop was kept from running anything, by a
callback of its own or by waiting for the interpreter lock. Every tick's time and lateness are
written to the JSON file named by `LABLS_BENCH_LAG_FILE` once a second and at exit, with what
explains the late ones: the cyclic GC's collections over 10 ms, and for each stall of the loop
over `STALL` the innermost frames of every thread, taken by a watchdog thread as soon as it
gets the interpreter (so at, or just after, what held it). For benchmarks only: the probe is
installed from outside, the server is unchanged.

    LABLS_BENCH_LAG_FILE=lag.json python bench/lagged_serve.py
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

PERIOD = 0.005
STALL = 0.06  # a loop not ticking for this long gets its threads' stacks taken


class LagProbe:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.lags: list[tuple[float, float]] = []  # (time.monotonic(), lateness in seconds)
        self.written = time.monotonic()
        self.ticked = time.monotonic()
        self.collections: list[tuple[float, int, float]] = []  # (at, generation, seconds)
        self.stalls: list[dict[str, Any]] = []
        self._gc_started = 0.0
        self.main = threading.get_ident()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        due = loop.time() + PERIOD
        loop.call_at(due, self.tick, loop, due)

    def tick(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        now = loop.time()
        late = now - due
        self.ticked = time.monotonic()
        self.lags.append((self.ticked, late))
        if now - self.written > 1.0:
            self.write()
        loop.call_at(now + PERIOD, self.tick, loop, now + PERIOD)

    def write(self) -> None:
        self.written = time.monotonic()
        self.out.write_text(json.dumps({"lags": self.lags, "gc": self.collections,
                                        "stalls": self.stalls}))

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif (took := time.perf_counter() - self._gc_started) > 0.01:
            self.collections.append((time.monotonic(), info["generation"], took))

    def watch(self) -> None:
        """A thread: each stall of the loop gets one sample of every thread's stack."""
        sampled_for = 0.0
        while True:
            time.sleep(0.01)
            ticked = self.ticked
            if time.monotonic() - ticked < STALL or sampled_for == ticked:
                continue
            sampled_for = ticked
            stacks = {("loop" if ident == self.main else str(ident)): [
                f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno} {f.name}"
                for f in traceback.extract_stack(frame) if "importlib" not in f.filename][-14:]
                for ident, frame in sys._current_frames().items()
                if ident != threading.get_ident()}
            self.stalls.append({"at": time.monotonic(), "since_tick": time.monotonic() - ticked,
                                "stacks": stacks})


def main() -> None:
    probe = LagProbe(Path(os.environ["LABLS_BENCH_LAG_FILE"]))
    atexit.register(probe.write)
    gc.callbacks.append(probe.on_gc)
    threading.Thread(target=probe.watch, name="lag-watchdog", daemon=True).start()
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
