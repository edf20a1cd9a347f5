"""A small JSON-RPC client for `labls serve` over stdio, as an agent script would write one.

Used by `make demo` and the benchmarks. Standard library only: it frames messages with
`Content-Length` headers, answers the server's requests (progress tokens, applyEdit), and keeps
every notification it receives so the caller can inspect diagnostics and progress.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any


class RpcError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.code = error.get("code")
        self.message = error.get("message", "")


class LspClient:
    def __init__(self, workspace: Path, command: list[str] | None = None,
                 env: dict[str, str] | None = None, stderr: Any = subprocess.DEVNULL) -> None:
        self.workspace = workspace
        cmd = command or [sys.executable, "-m", "labls.server.cli", "serve"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=stderr, cwd=workspace, env=env or os.environ.copy())
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[threading.Event, list[Any]]] = {}
        self._closed = False
        self._lock = threading.Lock()
        self.notifications: list[dict[str, Any]] = []
        self._notified = threading.Condition()
        self.on_request: dict[str, Callable[[Any], Any]] = {
            "window/workDoneProgress/create": lambda params: None,
            "workspace/applyEdit": lambda params: {"applied": False},
        }
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    # --- wire -------------------------------------------------------------------------------
    def _send(self, message: dict[str, Any]) -> None:
        body = json.dumps(message).encode()
        assert self.proc.stdin is not None
        with self._lock:
            self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
            self.proc.stdin.flush()

    def _read_message(self) -> dict[str, Any] | None:
        stream = self.proc.stdout
        assert stream is not None
        length = 0
        while True:
            try:
                line = stream.readline()
            except (OSError, ValueError):
                return None
            if not line:
                return None
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.decode("ascii").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return json.loads(stream.read(length))

    def _read_loop(self) -> None:
        try:
            self._dispatch()
        finally:  # the server is gone: every pending request fails now, not at its timeout
            self._closed = True
            for event, box in list(self._pending.values()):
                box.append({"error": {"code": -32099, "message": "the server exited"}})
                event.set()
            self._pending.clear()

    def _dispatch(self) -> None:
        while (msg := self._read_message()) is not None:
            if "id" in msg and "method" in msg:  # a request from the server
                handler = self.on_request.get(msg["method"], lambda params: None)
                result = handler(msg.get("params"))
                self._send({"jsonrpc": "2.0", "id": msg["id"], "result": result})
            elif "id" in msg:
                event, box = self._pending.pop(msg["id"], (None, None))
                if event is not None and box is not None:
                    box.append(msg)
                    event.set()
            else:
                with self._notified:
                    self.notifications.append(msg)
                    self._notified.notify_all()

    # --- API --------------------------------------------------------------------------------
    def request(self, method: str, params: Any = None, timeout: float = 600) -> Any:
        if self._closed:
            raise RpcError({"code": -32099, "message": "the server exited"})
        msg_id = next(self._ids)
        event, box = threading.Event(), list[Any]()
        self._pending[msg_id] = (event, box)
        self._send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        if not event.wait(timeout):
            raise TimeoutError(f"{method}: no answer in {timeout} s")
        reply = box[0]
        if "error" in reply:
            raise RpcError(reply["error"])
        return reply.get("result")

    def notify(self, method: str, params: Any = None) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params})

    def command(self, name: str, args: dict[str, Any] | None = None, timeout: float = 600,
                token: str | None = None) -> Any:
        params: dict[str, Any] = {"command": name, "arguments": [args or {}]}
        if token:
            params["workDoneToken"] = token
        return self.request("workspace/executeCommand", params, timeout)

    def initialize(self, options: dict[str, Any] | None = None,
                   capabilities: dict[str, Any] | None = None) -> Any:
        uri = self.workspace.resolve().as_uri()
        result = self.request("initialize", {
            "processId": os.getpid(), "rootUri": uri,
            "workspaceFolders": [{"uri": uri, "name": self.workspace.name}],
            "capabilities": capabilities or {"window": {"workDoneProgress": True}},
            "initializationOptions": options or {},
        })
        self.notify("initialized", {})
        return result

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool],
                 timeout: float = 30) -> dict[str, Any]:
        """The first notification (already received or yet to come) matching `predicate`."""
        with self._notified:
            ok = self._notified.wait_for(
                lambda: any(predicate(n) for n in self.notifications), timeout
            )
            if not ok:
                raise TimeoutError("no matching notification arrived")
            return next(n for n in self.notifications if predicate(n))

    def diagnostics(self, uri: str) -> list[dict[str, Any]]:
        """The latest diagnostics published for `uri`."""
        published = [n["params"]["diagnostics"] for n in self.notifications
                     if n.get("method") == "textDocument/publishDiagnostics"
                     and n["params"]["uri"] == uri]
        return published[-1] if published else []

    def close(self) -> None:
        try:
            self.request("shutdown", None, timeout=30)
            self.notify("exit")
        except (OSError, TimeoutError, RpcError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.release()

    def release(self) -> None:
        """Close our ends of the pipes once the server has exited."""
        self._reader.join(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None and not stream.closed:
                with contextlib.suppress(OSError):
                    stream.close()

    def __enter__(self) -> LspClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
