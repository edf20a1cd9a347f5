"""Stream a run's output to its log as it comes, keep a bounded tail, parse metrics on the fly.

One thread per run reads the pipe in 1 MiB chunks (`os.read` releases the GIL), appends them to
`log.txt` unchanged, and hands complete lines to the metric parser. Nothing is ever held whole:
memory is bounded by the chunk size, the tail and the longest line kept (64 KiB; the rest of a
longer line goes to the log only). Invalid UTF-8 is kept as bytes in the log and replaced with
U+FFFD in the tail and the parser.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from .metrics import MetricSet, parse_chunk

CHUNK = 1 << 20
MAX_LINE = 64 * 1024
TAIL_LINES = 200
TAIL_LINE_CHARS = 2000


class OutputPump:
    def __init__(self, fd: int, log_path: Path,
                 on_metrics: Callable[[MetricSet], None] | None = None) -> None:
        self.fd = fd
        self.log_path = log_path
        self.parsed = MetricSet()
        self.bytes_total = 0
        self.lines_total = 0
        self._tail: deque[bytes] = deque(maxlen=TAIL_LINES)
        self._carry = b""
        self._skipping = False  # inside an over-long line: drop until the next newline
        self._on_metrics = on_metrics
        self._thread = threading.Thread(target=self._run, name="labls-pump", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def tail(self, lines: int = 50) -> str:
        chosen = list(self._tail)[-lines:]
        if self._carry:
            chosen.append(self._carry[:TAIL_LINE_CHARS])
        return "\n".join(_clip(b) for b in chosen)

    def _run(self) -> None:
        with open(self.log_path, "ab", buffering=0) as log:
            last_notify = 0.0
            while True:
                try:
                    chunk = os.read(self.fd, CHUNK)
                except OSError:
                    break
                if not chunk:
                    break
                log.write(chunk)
                self.bytes_total += len(chunk)
                if self._feed(chunk) and self._on_metrics:
                    now = time.monotonic()
                    if now - last_notify > 0.2:  # at most 5 progress updates a second
                        last_notify = now
                        self._on_metrics(self.parsed)
            if self._carry and not self._skipping:
                self._feed(b"\n")
        os.close(self.fd)
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
            first_nl = head.find(b"\n")
            head = head[first_nl + 1 :]
            self._skipping = False
        block = self._carry + head if self._carry else head
        self._carry = b""
        self._extend_carry(rest)
        lines = block.count(b"\n")
        self.lines_total += lines
        self._tail.extend(block[-(TAIL_LINES * 256) :].split(b"\n")[-TAIL_LINES - 1 : -1])
        return parse_chunk(block, self.parsed) > 0

    def _extend_carry(self, data: bytes) -> None:
        if self._skipping or not data:
            return
        self._carry += data
        if len(self._carry) > MAX_LINE:  # a line longer than we keep: keep its head only
            self._tail.append(self._carry[: TAIL_LINE_CHARS + 1])
            self.lines_total += 1
            self._carry = b""
            self._skipping = True


def _clip(line: bytes) -> str:
    text = line[:TAIL_LINE_CHARS].decode("utf-8", "replace")
    return text + " [...]" if len(line) > TAIL_LINE_CHARS else text
