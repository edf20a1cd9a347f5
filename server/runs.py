"""The bridge between the run engine (threads) and the language server (one asyncio loop).

Engine callbacks are handed to the loop with `call_soon_threadsafe`; anything that touches SQLite
or files runs in a worker thread, so requests are answered while runs stream.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from labls.lab.compare import Comparison
from labls.lab.params import RunStartParams
from labls.lab.session import LabSession
from labls.sandbox.engine import RunListener
from labls.sandbox.records import RunRecord

from . import diagnostics

if TYPE_CHECKING:
    from .app import LabServer

log = logging.getLogger("labls.runs")


class RunService(RunListener):
    """The lab session of the server's workspace, and what the language server adds to it:
    progress for each run, diagnostics once it ends, `labls/runFinished`."""

    def __init__(self, ls: LabServer, loop: asyncio.AbstractEventLoop) -> None:
        self.ls = ls
        self.loop = loop
        self.session = LabSession(ls.root, ls.config, self)
        self.engine = self.session.engine
        self._waiters: dict[str, list[asyncio.Future[RunRecord]]] = {}
        self._tokens: dict[str, str | int] = {}
        self._begun: set[str] = set()
        self._publishing: set[str] = set()  # finished by the engine, diagnostics not yet sent
        self._published: dict[str, dict[str, list[types.Diagnostic]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, prm: RunStartParams, token: str | int | None) -> RunRecord:
        if token is None and self._client_creates_progress():
            token = f"labls-run-{uuid.uuid4().hex[:12]}"
            try:
                await self.ls.work_done_progress.create_async(token)
            except Exception:  # the client refused: no progress for this run
                token = None
        record = await asyncio.to_thread(self.session.start, prm, "labls.run.start")
        if token is not None:
            self._tokens[record.run_id] = token
            self._begin(record)
        return record

    async def wait(self, run_id: str) -> RunRecord:
        """The final record, once its diagnostics are published (or at once for an old run)."""
        future: asyncio.Future[RunRecord] = self.loop.create_future()
        self._waiters.setdefault(run_id, []).append(future)
        current = await asyncio.to_thread(self.engine.get, run_id)
        if current is not None and current.final and not self.engine.is_active(run_id) and (
                run_id not in self._publishing):
            self._waiters[run_id].remove(future)
            return current
        return await future

    def stop_all(self) -> None:
        self.session.close()

    # --- engine callbacks (run threads) ---------------------------------------------------------
    def on_progress(self, record: RunRecord, elapsed: float) -> None:
        if record.run_id in self._tokens:
            message = _progress_message(record, elapsed)
            pct = min(100, int(elapsed / record.timeout_sec * 100))
            self.loop.call_soon_threadsafe(self._report, record.run_id, message, pct)

    def on_finish(self, record: RunRecord) -> None:
        snapshot = replace(record)  # final: nothing in it changes any more
        self._publishing.add(record.run_id)
        self.loop.call_soon_threadsafe(self._spawn, self._finished(snapshot))

    # --- on the loop ----------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _client_creates_progress(self) -> bool:
        caps = self.ls.client_capabilities
        return bool(caps and caps.window and caps.window.work_done_progress)

    def _begin(self, record: RunRecord) -> None:
        if record.run_id in self._begun or record.run_id not in self._tokens:
            return
        self._begun.add(record.run_id)
        self.ls.work_done_progress.begin(self._tokens[record.run_id], types.WorkDoneProgressBegin(
            title=f"labls run {record.script}", cancellable=False, percentage=0,
            message=f"{record.run_id}: {record.state}, budget {record.timeout_sec:g} s"))

    def _report(self, run_id: str, message: str, pct: int) -> None:
        if run_id in self._begun:
            self.ls.work_done_progress.report(
                self._tokens[run_id], types.WorkDoneProgressReport(message=message,
                                                                   percentage=pct))

    async def _finished(self, record: RunRecord) -> None:
        try:
            comparison = await asyncio.to_thread(self.session.compare, record)
            self._publish(record, comparison)
        except Exception:  # diagnostics must never take the server down
            log.exception("publishing diagnostics for %s failed", record.run_id)
        if record.run_id in self._tokens:
            self._begin(record)
            message = f"{record.run_id}: {record.state}" + (
                f" ({record.error['kind']}: {record.error['message'][:200]})"
                if record.error else "")
            self.ls.work_done_progress.end(self._tokens.pop(record.run_id),
                                           types.WorkDoneProgressEnd(message=message))
            self._begun.discard(record.run_id)
        self.ls.protocol.notify("labls/runFinished", {  # bounded; the whole record: run.get
            "run": record.summary(self.ls.config.metric.name).to_wire()})
        self._publishing.discard(record.run_id)
        for future in self._waiters.pop(record.run_id, []):
            if not future.done():
                future.set_result(record)

    def _publish(self, record: RunRecord, comparison: Comparison | None) -> None:
        root = self.ls.root
        built = diagnostics.build(record, comparison, self._lines, root)
        new = {(root / path).as_uri(): diags for path, diags in built.items()}
        old = self._published.get(record.script, {})
        self._published[record.script] = new
        for uri in set(old) | set(new):
            merged = [d for per_script in self._published.values() for d in per_script.get(uri, [])]
            self.ls.text_document_publish_diagnostics(
                types.PublishDiagnosticsParams(uri=uri, diagnostics=merged))

    def _lines(self, rel: str) -> list[str] | None:
        """A workspace file's lines: the editor's buffer if open, else the file on disk."""
        root = self.ls.root
        path = (root / rel).resolve()
        if not path.is_relative_to(root):
            return None
        uri = path.as_uri()
        document = self.ls.workspace.text_documents.get(uri)
        if document is not None:
            return list(document.lines)
        try:
            return path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return None


def _progress_message(record: RunRecord, elapsed: float) -> str:
    shown = record.latest_metrics()
    return f"{elapsed:.0f}/{record.timeout_sec:g} s" + (f" | {shown}" if shown else "")

