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

from labls.lab.compare import Comparison, compare
from labls.sandbox.engine import Engine, RunListener, RunRequest
from labls.sandbox.records import RunRecord

from . import diagnostics

if TYPE_CHECKING:
    from .app import LabServer

log = logging.getLogger("labls.runs")


class RunService(RunListener):
    def __init__(self, ls: LabServer, loop: asyncio.AbstractEventLoop) -> None:
        self.ls = ls
        self.loop = loop
        self.engine = Engine(ls.root, ls.config, self)
        self._waiters: dict[str, list[asyncio.Future[RunRecord]]] = {}
        self._tokens: dict[str, str | int] = {}
        self._begun: set[str] = set()
        self._publishing: set[str] = set()  # finished by the engine, diagnostics not yet sent
        self._published: dict[str, dict[str, list[types.Diagnostic]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._step_lock = asyncio.Lock()
        self._loops: dict[str, Any] = {}
        if self.engine.registry.interrupted:
            log.info("runs interrupted by an earlier stop: %s", self.engine.registry.interrupted)

    # --- commands -----------------------------------------------------------------------------
    async def start(self, request: RunRequest, token: str | int | None) -> RunRecord:
        if token is None and self._client_creates_progress():
            token = f"labls-run-{uuid.uuid4().hex[:12]}"
            try:
                await self.ls.work_done_progress.create_async(token)
            except Exception:  # the client refused: no progress for this run
                token = None
        record = await asyncio.to_thread(self.engine.start, request)
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

    async def get(self, run_id: str) -> RunRecord | None:
        return await asyncio.to_thread(self.engine.get, run_id)

    async def cancel(self, run_id: str) -> RunRecord | None:
        return await asyncio.to_thread(self.engine.cancel, run_id, 30)

    async def recent(self, limit: int, state: str | None) -> list[RunRecord]:
        return await asyncio.to_thread(self.engine.recent, limit, state)

    def baseline_for(self, record: RunRecord, baseline_id: str | None) -> RunRecord | None:
        registry = self.engine.registry
        if baseline_id:
            return registry.get(baseline_id)
        kept = registry.last_kept()
        if kept is not None and kept[0].run_id != record.run_id:
            return kept[0]
        return registry.previous_success(record.script, record.run_id, self.ls.config.metric.name)

    def compare(self, record: RunRecord, baseline_id: str | None = None) -> Comparison:
        metric = self.ls.config.metric
        baseline = self.baseline_for(record, baseline_id)
        return compare(record, baseline, metric.name, metric.goal, metric.min_delta)

    async def step(self, hypothesis: str, edit: dict[str, Any], script: str,
                   timeout_sec: float | None, args: list[str]) -> Any:
        """One experiment step; steps never overlap (they share the git working tree)."""
        async with self._step_lock:
            return await asyncio.to_thread(self._experiment().step, hypothesis, edit, script,
                                           timeout_sec, args)

    # --- autonomous loops -----------------------------------------------------------------------
    def loop_start(self, spec: Any, proposer: Any = None) -> Any:
        from labls.lab.loop import AutoLoop, LoopState, aider_proposer, new_loop_id

        state = spec if isinstance(spec, LoopState) else LoopState(new_loop_id(), spec)
        experiment = self._experiment()
        loop = AutoLoop(experiment, state, proposer or aider_proposer(state.spec.model),
                        self._save_loop)
        self._loops[state.loop_id] = loop
        loop.start()
        return state

    def loop_get(self, loop_id: str) -> dict[str, Any] | None:
        from labls.lab.loop import state_from_json

        if loop_id in self._loops:
            return self._loops[loop_id].state.wire()
        data = self.engine.registry.get_loop(loop_id)
        return state_from_json(data).wire() if data else None

    def loop_stop(self, loop_id: str) -> dict[str, Any] | None:
        loop = self._loops.get(loop_id)
        if loop is not None:
            loop.stop(timeout=60)
        return self.loop_get(loop_id)

    def _resume_loops(self) -> None:
        from labls.lab.loop import state_from_json

        for data in self.engine.registry.orphan_loops():
            state = state_from_json(data)
            log.info("resuming loop %s at iteration %d", state.loop_id,
                     len(state.iterations) + 1)
            self.loop_start(state)

    def _save_loop(self, state: Any) -> None:
        from labls.lab.loop import state_to_json

        self.engine.registry.save_loop(state.loop_id, state.state, state_to_json(state))

    def _experiment(self) -> Any:
        from labls.lab.experiment import Experiment

        def wait(run_id: str) -> RunRecord:
            record = self.engine.wait(run_id)
            assert record is not None
            return record

        return Experiment(self.engine, self.ls.config, wait)

    def stop_all(self) -> None:
        for loop in list(self._loops.values()):
            loop.stop_requested.set()
        self.engine.stop_all(timeout=5.0)
        self.engine.launcher.close()  # its idle standby and that one's cgroup

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
            comparison = await asyncio.to_thread(self.compare, record)
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
    shown = ", ".join(f"{k}={v:.4g}" for k, v in list(record.metrics.items())[-4:])
    return f"{elapsed:.0f}/{record.timeout_sec:g} s" + (f" | {shown}" if shown else "")

