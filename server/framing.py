"""Bounded framing of the JSON-RPC stream: what pygls's stdio loop reads through, and the
queue its messages are written through (`QueuedStdout`: the loop never waits on the client).

pygls reads a header line with `readline()` and a body with `read(Content-Length)`. Unbounded,
a `Content-Length` of 10^12 asks for a terabyte at once (a `MemoryError` ends the loop, and with
it the server), a header line without a newline grows without end, and a message whose length
is negative or missing is read as headers, swallowing the header of the message after it.

`BoundedStdin` keeps each of those to the one message at fault:
- a header line is at most `MAX_HEADER_LINE` bytes; a longer one is skipped to its newline;
- a body larger than `MAX_BODY` is not read: the stream is resynchronised at the next
  `Content-Length:` header and the dropped message becomes a no-op notification;
- a header line holding `Content-Length:` after other bytes (the previous message's body with
  no valid length, then the next header) is cut at the header.
Each problem is reported through `on_problem` (the server shows it to the user) and logged.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import BinaryIO

MAX_BODY = 64 << 20
MAX_HEADER_LINE = 8 << 10
HEADER = b"Content-Length:"
DROPPED = b'{"jsonrpc": "2.0", "method": "$/labls/dropped"}'

log = logging.getLogger("labls.framing")


class BoundedStdin:
    def __init__(self, raw: BinaryIO, on_problem: Callable[[str], None] | None = None,
                 max_body: int = MAX_BODY) -> None:
        self._raw = raw
        self._pending: bytes | None = None
        self._max_body = max_body
        self.on_problem = on_problem

    def _problem(self, message: str) -> None:
        log.warning("%s", message)
        if self.on_problem is not None:
            self.on_problem(message)

    def readline(self) -> bytes:
        if self._pending is not None:
            line, self._pending = self._pending, None
            return line
        line = self._raw.readline(MAX_HEADER_LINE + 1)
        if len(line) > MAX_HEADER_LINE and not line.endswith(b"\n"):
            self._problem(f"dropped a header line of more than {MAX_HEADER_LINE} bytes: "
                          "not JSON-RPC framing")
            self._resync(line)
            return b"X-Labls-Dropped: 1\r\n"
        at = line.find(HEADER)
        if at > 0:  # garbage, then the next message's header: serve that message
            self._problem(f"dropped {at} bytes that were not a framed message (a missing or "
                          "invalid Content-Length)")
            return line[at:]
        return line

    def read(self, n: int) -> bytes:
        if n <= self._max_body:
            return self._raw.read(n)
        self._problem(f"dropped a message announcing Content-Length {n}, more than the "
                      f"{self._max_body} bytes labls accepts")
        self._resync(b"")
        return DROPPED

    def _resync(self, chunk: bytes) -> None:
        """Skip input up to the next `Content-Length:` header, kept for the next readline."""
        while True:
            if (at := chunk.find(HEADER)) >= 0:
                rest = chunk[at:]
                while not rest.endswith(b"\n") and len(rest) <= MAX_HEADER_LINE:
                    more = self._raw.readline(MAX_HEADER_LINE)
                    if not more:
                        break
                    rest += more
                self._pending = rest
                return
            chunk = self._raw.readline(MAX_HEADER_LINE)
            if not chunk:
                self._pending = b""
                return


class QueuedStdout:
    """The server's stdout, written by a thread of its own, in order.

    pygls writes each message on the event loop and flushes it there, so a message bigger than
    the pipe's buffer (64 KiB; a page of 10^4 metrics is 460 KB) held the loop until the client
    had read it all: 100-200 ms for a Python client, for ever for one that stops reading. Here
    `write` queues the bytes and returns; the loop waits only when `max_queued` bytes are
    still unread (a client that reads nothing cannot make the server grow without end)."""

    def __init__(self, raw: BinaryIO, max_queued: int = MAX_BODY) -> None:
        self._raw = raw
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._max_queued = max_queued
        self._changed = threading.Condition()
        self._closing = False
        self._broken = False
        self._thread = threading.Thread(target=self._pump, name="labls-stdout", daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> int:
        with self._changed:
            if self._broken:
                raise BrokenPipeError("the client closed its end of the stream")
            self._changed.wait_for(lambda: self._queued < self._max_queued or self._broken)
            self._queue.append(bytes(data))
            self._queued += len(data)
            self._changed.notify_all()
        return len(data)

    def flush(self) -> None:
        """Nothing: the thread writes and flushes each message (`drain` waits for it)."""

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queued byte is written (or the stream broke); False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._queued or self._broken, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """What is queued is written (for up to `timeout`), then the stream closed."""
        self.drain(timeout)
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._thread.join(timeout)
        with contextlib.suppress(OSError):
            self._raw.close()

    def _pump(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._queue or self._closing)
                if not self._queue:
                    return
                data = self._queue[0]
            try:
                self._raw.write(data)
                self._raw.flush()
            except (OSError, ValueError) as exc:  # the client went away
                log.warning("the client's end of stdout is gone: %s", exc)
                with self._changed:
                    self._broken = True
                    self._queue.clear()
                    self._queued = 0
                    self._changed.notify_all()
                return
            with self._changed:
                self._queue.popleft()
                self._queued -= len(data)
                self._changed.notify_all()
