"""The server survives its own input: bad framing costs the one message, the next is served.

A raw client over the real `labls serve` stdio (pytest-lsp frames every message correctly, so
it cannot send these)."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import SERVER_COMMAND

BARE_SERVER = [sys.executable, str(Path(__file__).parents[2] / "bench" / "bare_pygls_server.py")]


class RawClient:
    def __init__(self, workspace: Path, command: list[str] = SERVER_COMMAND) -> None:
        self.proc = subprocess.Popen(command, cwd=workspace, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            header = b""
            while not header.endswith(b"\r\n\r\n"):
                byte = self.proc.stdout.read(1)
                if not byte:
                    return
                header += byte
            length = int(header.split(b"Content-Length:")[1].split(b"\r\n")[0])
            self.messages.put(json.loads(self.proc.stdout.read(length)))

    def raw(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, message: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        self.raw(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def _wait(self, wanted: Any, timeout: float) -> dict[str, Any]:
        """The first message (seen before or arriving within `timeout`) that `wanted` takes."""
        while True:
            found = next((m for m in self.seen if wanted(m)), None)
            if found is not None:
                return found
            self.seen.append(self.messages.get(timeout=timeout))

    def answer(self, request_id: int, timeout: float = 20) -> dict[str, Any]:
        return self._wait(lambda m: m.get("id") == request_id and "method" not in m, timeout)

    def shown(self, text: str, timeout: float = 20) -> dict[str, Any]:
        return self._wait(lambda m: m.get("method") == "window/showMessage" and text in (
            m["params"]["message"]), timeout)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


def _started(workspace: Path, command: list[str] = SERVER_COMMAND) -> RawClient:
    client = RawClient(workspace, command)
    client.send({"id": 1, "method": "initialize", "params": {
        "processId": None, "rootUri": workspace.as_uri(), "capabilities": {}}})
    assert "result" in client.answer(1)
    client.send({"method": "initialized", "params": {}})
    return client


@pytest.fixture
def raw(tmp_path: Path):
    client = _started(tmp_path)
    yield client
    client.close()


def _list_runs(client: RawClient, request_id: int) -> dict[str, Any]:
    client.send({"id": request_id, "method": "workspace/executeCommand",
                 "params": {"command": "labls.run.list", "arguments": [{}]}})
    return client.answer(request_id)


def test_a_terabyte_content_length_is_dropped_and_the_next_request_served(raw) -> None:
    raw.raw(b"Content-Length: 1000000000000\r\n\r\n{\"jsonrpc\": \"2.0\", \"id\": 7}")
    assert "result" in _list_runs(raw, 2)
    assert "Content-Length 1000000000000" in raw.shown("dropped a message")["params"]["message"]
    assert raw.proc.poll() is None


def test_control_a_bare_pygls_server_does_not_survive_a_terabyte_length(tmp_path: Path) -> None:
    bare = _started(tmp_path, BARE_SERVER)
    try:
        bare.raw(b"Content-Length: 1000000000000\r\n\r\n{}")
        bare.send({"id": 2, "method": "shutdown"})
        with pytest.raises(queue.Empty):
            bare.answer(2, timeout=3)
    finally:
        bare.close()


def test_negative_and_missing_lengths_are_dropped(raw) -> None:
    raw.raw(b"Content-Length: -5\r\n\r\n{\"jsonrpc\": \"2.0\", \"id\": 8, \"method\": \"x\"}")
    assert "result" in _list_runs(raw, 3)
    raw.raw(b"\r\n{\"jsonrpc\": \"2.0\", \"id\": 9, \"method\": \"x\"}")
    assert "result" in _list_runs(raw, 4)
    raw.shown("not a framed message")


def test_a_header_line_without_end_is_dropped(raw) -> None:
    raw.raw(b"X-Junk: " + b"a" * 200_000)
    assert "result" in _list_runs(raw, 5)
    raw.shown("header line of more than")


def test_an_oversized_body_is_refused_without_reading_it(raw) -> None:
    body = b"{\"jsonrpc\": \"2.0\", \"id\": 10, \"method\": \"x\", \"params\": \"" + (
        b"a" * (65 << 20)) + b"\"}"
    raw.raw(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert "result" in _list_runs(raw, 6)
    raw.shown("dropped a message")
