"""A run's output: written by the run straight into `log.txt`, followed by the engine.

The run's stdout and stderr are the log file itself (opened `O_APPEND`), so a run printing at full
speed writes at page-cache speed and never waits on labls. A follower thread reads the file as it
grows (like `tail -f`), keeps a bounded tail and parses metric lines incrementally, so progress
can show them live; after the run's processes are gone it drains the file to the end.

Nothing is held whole: memory is bounded by the read size, the tail buffer and the longest line
kept (64 KiB; the rest of a longer line stays in the log only). Invalid UTF-8 stays as bytes in
the log and becomes U+FFFD in the tail and the parser.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from .metrics import MetricSet
from .stdout_metrics import parse_chunk

CHUNK = 4 << 20
MAX_LINE = 64 * 1024
TAIL_BYTES = 256 * 1024
TAIL_LINE_CHARS = 2000
IDLE_POLL_SEC = 0.05


class OutputPump:
    def __init__(self, log_path: Path,
                 on_metrics: Callable[[MetricSet], None] | None = None,
                 parsed: MetricSet | None = None,
                 on_diverged: Callable[[str, str], None] | None = None) -> None:
        self.log_path = log_path
        self.parsed = parsed if parsed is not None else MetricSet()
        self._on_diverged = on_diverged
        self.bytes_total = 0
        self._recent = b""  # the last TAIL_BYTES of complete lines
        self._carry = b""  # the current incomplete line (bounded by MAX_LINE)
        self._skipping = False  # inside an over-long line: drop until the next newline
        self._on_metrics = on_metrics
        self._writers_gone = threading.Event()
        self._thread = threading.Thread(target=self._run, name="labls-follow", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def finish(self, timeout: float | None = None) -> bool:
        """No more writers: read to the end of the log, then stop. True once drained."""
        self._writers_gone.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def tail(self, lines: int = 50) -> str:
        chosen = self._recent.split(b"\n")[:-1][-lines:]
        if self._carry:
            chosen.append(self._carry)
        return "\n".join(_clip(b) for b in chosen)

    def _run(self) -> None:
        last_notify = 0.0
        with open(self.log_path, "rb", buffering=0) as log:
            while True:
                chunk = log.read(CHUNK)
                if not chunk:
                    if self._writers_gone.is_set():
                        # one last read: the writers may have written just before going
                        chunk = log.read(CHUNK)
                        if not chunk:
                            break
                    else:
                        self._writers_gone.wait(IDLE_POLL_SEC)
                        continue
                self.bytes_total += len(chunk)
                if self._feed(chunk) and self._on_metrics:
                    now = time.monotonic()
                    if now - last_notify > 0.2:  # at most 5 progress updates a second
                        last_notify = now
                        self._on_metrics(self.parsed)
                if len(chunk) < CHUNK:  # caught up with the writer: let output pile up, so a
                    self._writers_gone.wait(IDLE_POLL_SEC)  # flood is read in big chunks
        if self._carry and not self._skipping:
            self._feed(b"\n")
        if self._on_metrics:
            self._on_metrics(self.parsed)

    def _feed(self, chunk: bytes) -> bool:
        """Split into lines (bounded), remember the tail, parse metrics. True if any found."""
        end = chunk.rfind(b"\n")
        if end < 0:
            self._extend_carry(chunk)
            return False
        head, rest = chunk[: end + 1], chunk[end + 1 :]
        if self._skipping:
            head = head[head.find(b"\n") + 1 :]
            self._skipping = False
        block = self._carry + head if self._carry else head
        self._carry = b""
        self._recent = (self._recent + block[-TAIL_BYTES:])[-TAIL_BYTES:]
        self._extend_carry(rest)
        found = parse_chunk(block, self.parsed) > 0
        if self.parsed.diverged and self._on_diverged:  # told once: the run is being stopped
            self._on_diverged(*self.parsed.diverged)
            self._on_diverged = None
        return found

    def _extend_carry(self, data: bytes) -> None:
        if self._skipping or not data:
            return
        self._carry += data
        if len(self._carry) > MAX_LINE:  # a line longer than we keep: keep its head only
            self._recent = (self._recent + self._carry[: TAIL_LINE_CHARS + 1] + b"\n")[
                -TAIL_BYTES:]
            self._carry = b""
            self._skipping = True


def _clip(line: bytes) -> str:
    text = line[:TAIL_LINE_CHARS].decode("utf-8", "replace")
    return text + " [...]" if len(line) > TAIL_LINE_CHARS else text

