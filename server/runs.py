"""The bridge between the run engine (threads) and the language server (one asyncio loop).

Engine callbacks are handed to the loop with `call_soon_threadsafe`; anything that touches SQLite
or files runs in a worker thread, so requests are answered while runs stream.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from labls.lab.compare import Comparison
from labls.lab.errors import LabError
from labls.lab.params import RunStartParams
from labls.lab.session import LabSession
from labls.sandbox.engine import RunListener
from labls.sandbox.records import RunRecord

from . import diagnostics
from .edits import EditorBuffers

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
        self.session.buffers = EditorBuffers(ls, loop)  # steps and loops keep buffers right
        self.engine = self.session.engine
        self._waiters: dict[str, list[asyncio.Future[RunRecord]]] = {}
        self._tokens: dict[str, str | int] = {}
        self._begun: set[str] = set()
        self._publishing: set[str] = set()  # finished by the engine, diagnostics not yet sent
        self._published: dict[str, dict[str, list[types.Diagnostic]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._logged: dict[str, float] = {}  # runs told as log lines: when the last was sent
        self._own: set[str] = set()  # runs this server started (their end comes by on_finish)

    async def start(self, prm: RunStartParams, token: str | int | None) -> RunRecord:
        if token is None and self._client_creates_progress():
            token = f"labls-run-{uuid.uuid4().hex[:12]}"
            try:
                await self.ls.work_done_progress.create_async(token)
            except Exception:  # the client refused: no progress for this run
                token = None
        text, warnings = await asyncio.to_thread(self._unsaved, prm.script)
        record = await asyncio.to_thread(self.session.start, prm, "labls.run.start", text,
                                         warnings)
        self._own.add(record.run_id)
        if token is not None:
            self._tokens[record.run_id] = token
            self._begin(record)
        else:  # a client without work-done progress (eglot): the run's course as log lines
            self._logged[record.run_id] = 0.0
            self._log(f"labls run {record.run_id} of {record.script}: {record.state}, budget "
                      f"{record.timeout_sec:g} s")
        return record

    def _unsaved(self, script: str) -> tuple[str | None, list[dict[str, Any]]]:
        """The script's open buffer when it differs from the file (`run.unsaved`): its text
        to run ("buffer"), a warning ("warn"), or a refusal ("refuse")."""
        root = self.ls.root
        path = root / script
        document = self.ls.workspace.text_documents.get(path.as_uri())
        if script.startswith("-m ") or document is None:
            return None, []
        try:
            on_disk = path.read_text(encoding="utf-8")
        except (OSError, UnicodeError):
            on_disk = None
        if document.source == on_disk:
            return None, []
        policy = self.ls.config.run.unsaved
        if policy == "refuse":
            raise LabError(f"labls.run.start: {script} has unsaved changes in the editor "
                           "(run.unsaved = \"refuse\"): save it, or set run.unsaved")
        if policy == "buffer":
            return document.source, [{"code": "unsaved-buffer", "message": (
                f"{script} ran as the editor's unsaved buffer (run.unsaved = \"buffer\"); the "
                "file on disk differs")}]
        message = (f"{script} has unsaved changes: this run uses the file on disk "
                   "(run.unsaved = \"buffer\" runs the buffer, \"refuse\" refuses)")
        self.loop.call_soon_threadsafe(self.ls.window_show_message, types.ShowMessageParams(
            type=types.MessageType.Warning, message=f"labls: {message}"))
        return None, [{"code": "unsaved-buffer", "message": message}]

    def run_of_token(self, token: str | int) -> str | None:
        return next((run_id for run_id, t in self._tokens.items() if t == token), None)

    def _log(self, message: str) -> None:
        self.ls.window_log_message(types.LogMessageParams(type=types.MessageType.Info,
                                                          message=message))

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
        elif record.run_id in self._logged and elapsed - self._logged[record.run_id] >= 5.0:
            self._logged[record.run_id] = elapsed  # (a line each 5 s: a log, not a ticker)
            message = f"labls run {record.run_id}: {_progress_message(record, elapsed)}"
            self.loop.call_soon_threadsafe(self._log, message)

    def on_start(self, record: RunRecord) -> None:
        self._own.add(record.run_id)  # (steps and loops start runs too, not only `start`)

    def on_finish(self, record: RunRecord) -> None:
        self._own.add(record.run_id)
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
            title=f"labls run {record.script}", cancellable=True, percentage=0,
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
            token = self._tokens.pop(record.run_id)
            self.ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))
            self.ls.work_done_progress.tokens.pop(token, None)  # (pygls keeps every token)
            self._begun.discard(record.run_id)
        if self._logged.pop(record.run_id, None) is not None:
            self._log(f"labls run {record.run_id}: {record.state}" + (
                f" ({record.error['kind']}: {record.error['message'][:200]})"
                if record.error else f" {record.latest_metrics()}"))
        if _refreshes_lenses(self.ls):
            self.ls.workspace_code_lens_refresh(None)
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

    def watch_soon(self) -> None:
        self._spawn(self.watch_others())

    async def watch_others(self, interval: float = 1.0) -> None:
        """Runs other processes finish in this workspace (`labls run` in a terminal, an agent's
        `labls mcp`) reach the editor: their diagnostics are published and the lenses
        refreshed. The registry is shared; it is queried when its files changed (a stat a
        second), for the rows saved since and the runs that were unfinished."""
        registry = self.engine.registry
        seq, _, pending = await asyncio.to_thread(registry.ended_since, 0, set())
        stamp = _stamp(registry.path)
        while True:
            await asyncio.sleep(interval)
            now = _stamp(registry.path)
            if now == stamp:
                continue
            stamp = now
            try:
                seq, ended, pending = await asyncio.to_thread(registry.ended_since, seq, pending)
                for run_id in ended:
                    if run_id in self._own or self.engine.is_active(run_id):
                        continue
                    record = await asyncio.to_thread(self.engine.get, run_id)
                    if record is not None:
                        comparison = await asyncio.to_thread(self.session.compare, record)
                        self._publish(record, comparison)
                        if _refreshes_lenses(self.ls):
                            self.ls.workspace_code_lens_refresh(None)
            except Exception:  # a registry that went away: try again at its next change
                log.exception("watching the registry for other processes' runs failed")

    async def republish(self, rel: str) -> None:
        """A script's last finished run's diagnostics, from the registry, when the editor
        opens it and this server has published none for it (a restart, a run from the CLI)."""
        if rel in self._published:
            return
        record = await asyncio.to_thread(self.session.last_run_of, rel)
        if record is None or rel in self._published:
            return
        comparison = await asyncio.to_thread(self.session.compare, record)
        self._publish(record, comparison)

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


def _stamp(db: Path) -> tuple[float, ...]:
    """When the registry's files last changed (its WAL takes every commit)."""
    stamps = []
    for path in (db, db.with_name(db.name + "-wal")):
        try:
            stamps.append(path.stat().st_mtime_ns)
        except OSError:
            stamps.append(0)
    return tuple(stamps)


def _refreshes_lenses(ls: LabServer) -> bool:
    caps = ls.client_capabilities
    lens = caps.workspace.code_lens if caps and caps.workspace else None
    return bool(lens and lens.refresh_support)


def _progress_message(record: RunRecord, elapsed: float) -> str:
    shown = record.latest_metrics()
    return f"{elapsed:.0f}/{record.timeout_sec:g} s" + (f" | {shown}" if shown else "")

