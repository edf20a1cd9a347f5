"""labls's changes to pygls's protocol: an answer encoded by the worker thread reaches the
client as pygls would have framed it; a command's finished task is not kept."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol

from labls.server.app import Encoded, LabProtocol, LabServer


class Captured:
    def __init__(self, expect: int = 0) -> None:
        self.frames: list[bytes] = []
        self.expect = expect
        self.all_written = asyncio.Event() if expect else None

    def write(self, data: bytes) -> None:
        self.frames.append(data)
        if self.all_written is not None and len(self.frames) == self.expect:
            self.all_written.set()

    def close(self) -> None:
        pass


def unframe(frame: bytes) -> tuple[dict[str, str], Any]:
    head, _, body = frame.partition(b"\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
    assert int(headers["Content-Length"]) == len(body)  # bytes, not characters
    return headers, json.loads(body)


def sent(result: Any) -> tuple[dict[str, str], Any]:
    protocol = LabServer().protocol
    writer = Captured()
    protocol.set_writer(writer, include_headers=True)
    protocol._send_response("req-7", result=result)
    assert len(writer.frames) == 1
    return unframe(writer.frames[0])


def test_an_encoded_answer_is_the_same_message_as_pygls_sends():
    value = {"runId": "r1", "metrics": {"loss": 0.25, "λ-grad 😀": float("nan")},
             "error": {"message": "héllo\n\"quoted\"\t"}, "n": [1, None, True]}
    plain_headers, plain = sent(value)  # pygls's own encoding: the control
    headers, encoded = sent(Encoded(value))
    assert headers == plain_headers
    assert encoded.keys() == plain.keys() == {"id", "jsonrpc", "result"}
    assert encoded["id"] == plain["id"] == "req-7" and encoded["jsonrpc"] == "2.0"
    assert math.isnan(encoded["result"]["metrics"].pop("λ-grad 😀"))
    assert math.isnan(plain["result"]["metrics"].pop("λ-grad 😀"))
    assert encoded == plain


def test_errors_and_other_messages_still_go_through_pygls():
    protocol = LabServer().protocol
    writer = Captured()
    protocol.set_writer(writer, include_headers=True)
    protocol.notify("labls/runFinished", {"run": {"runId": "r1"}})
    protocol._send_response("req-8", error=types.ResponseError(
        code=types.ErrorCodes.InvalidParams, message="labls.run.get: no run 'x'"))
    _, note = unframe(writer.frames[0])
    assert note["method"] == "labls/runFinished" and note["params"] == {"run": {"runId": "r1"}}
    _, error = unframe(writer.frames[1])
    assert error["id"] == "req-8" and "result" not in error
    assert error["error"] == {"code": -32602, "message": "labls.run.get: no run 'x'"}


def commands_answered(protocol_cls: type[LanguageServerProtocol], n: int) -> dict[Any, Any]:
    """`n` executeCommand requests handled by a server of that protocol: what it still holds
    in `_request_futures` once all are answered."""
    server = LanguageServer("t", "0", protocol_cls=protocol_cls)

    @server.command("t.page")
    async def page(ls: LanguageServer, *args: Any) -> dict[str, Any]:
        return {"metrics": {f"k{i}": i for i in range(100)}}

    async def go() -> None:
        writer = Captured(expect=n)
        server.protocol.set_writer(writer, include_headers=True)
        for i in range(n):
            server.protocol.handle_message(server.protocol.structure_message({
                "jsonrpc": "2.0", "id": i, "method": "workspace/executeCommand",
                "params": {"command": "t.page", "arguments": []}}))
        assert writer.all_written is not None
        await asyncio.wait_for(writer.all_written.wait(), 10)
        answers = [unframe(f)[1] for f in writer.frames]
        assert sorted(a["id"] for a in answers) == list(range(n))
        assert all(len(a["result"]["metrics"]) == 100 for a in answers)

    asyncio.run(go())
    return server.protocol._request_futures


def test_a_commands_finished_task_is_not_kept():
    kept = commands_answered(LanguageServerProtocol, 50)  # the control: pygls keeps each
    assert len(kept) == 50 and all(f.done() for f in kept.values())
    assert commands_answered(LabProtocol, 50) == {}
