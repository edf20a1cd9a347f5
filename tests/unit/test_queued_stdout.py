"""The server's stdout is written by a thread of its own: a client that does not read at once
(or at all) never holds the event loop, and what it reads comes whole and in order."""

from __future__ import annotations

import contextlib
import os
import threading

import pytest

from labls.server.framing import QueuedStdout

BIG = 1 << 20  # far more than a pipe's buffer (64 KiB)


@pytest.fixture
def pipe():
    """A pipe's two ends (a client's stdout reader, the server's writer), closed after."""
    read_fd, write_fd = os.pipe()
    reader, writer = os.fdopen(read_fd, "rb", buffering=0), os.fdopen(write_fd, "wb")
    yield reader, writer
    for end in (reader, writer):
        with contextlib.suppress(OSError):
            end.close()


def returns_within(fn, timeout: float) -> bool:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    thread.join(timeout)
    return not thread.is_alive()


def read_all(reader, n: int) -> bytes:
    data = b""
    while len(data) < n:
        data += reader.read(n - len(data))
    return data


def test_control_a_plain_write_waits_for_the_reader(pipe) -> None:
    reader, writer = pipe
    assert not returns_within(lambda: (writer.write(b"x" * BIG), writer.flush()), 1.0)
    read_all(reader, BIG)  # (lets the blocked write end)


def test_a_queued_write_returns_and_the_reader_gets_every_byte_in_order(pipe) -> None:
    reader, writer = pipe
    out = QueuedStdout(writer)
    messages = [bytes([65 + i]) * (BIG // 4 + i) for i in range(8)]
    assert returns_within(lambda: [out.write(m) for m in messages], 1.0)
    assert read_all(reader, sum(map(len, messages))) == b"".join(messages)
    assert out.drain(5.0)
    out.close()


def test_a_client_that_reads_nothing_bounds_the_queue_and_a_gone_one_is_an_error(pipe) -> None:
    reader, writer = pipe
    out = QueuedStdout(writer, max_queued=BIG)
    out.write(b"x" * BIG)  # the pipe takes 64 KiB of it; the rest is queued: the limit
    assert not returns_within(lambda: out.write(b"y"), 0.5)  # waits for the reader
    reader.close()  # the client goes away: the waiting write and those after it fail
    assert out.drain(5.0)
    with pytest.raises(BrokenPipeError):
        out.write(b"z")
    out.close()
