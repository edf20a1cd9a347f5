"""`labls mcp`: the lab session's operations as MCP tools over stdio (the official `mcp` SDK).

One tool per operation, named as the language server's command (`labls.run.start` →
`run_start`); each tool's input schema is derived from the same params model the language
server structures its arguments with (`lab/params.py`), its result is the shape PROTOCOL.md
gives (as `structuredContent`, and as JSON text for clients that read only text), and a refused
call is a tool error (`isError`) with the message the language server sends as -32602.
`run_start` answers at once; `run_wait` waits for a bound, reporting progress while the run
goes. A run's log and record are resources (`labls://runs/<runId>/log`, `.../record`).
Stdout is the wire: logs go to stderr.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

from labls.lab import params as p
from labls.lab.errors import LabError
from labls.lab.session import LabSession
from labls.sandbox import config as config_model
from labls.sandbox.engine import RunListener
from labls.sandbox.records import PAGE_METRICS, RunRecord

log = logging.getLogger("labls.mcp")

WAIT_DEFAULT_SEC = 60.0  # what `run_wait` waits when not told: under most clients' tool timeout
WAIT_MAX_SEC = 600.0
LOG_TAIL_BYTES = 256 * 1024  # the log resource: its last 256 KB


@dataclass
class RunWaitParams:
    run_id: str
    timeout_sec: float = WAIT_DEFAULT_SEC  # at most WAIT_MAX_SEC; the record as it is then


@dataclass
class Tool:
    name: str
    command: str  # the language server's command of the same operation (and its messages)
    params: type
    description: str
    call: Callable[[Lab, Any], Any] = field(repr=False)


class _Progress(RunListener):
    """Engine callbacks (run threads) → the waiting tool calls' progress, on the loop."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.watchers: dict[str, list[asyncio.Queue[tuple[float, float, str]]]] = {}

    def on_progress(self, record: RunRecord, elapsed: float) -> None:
        if self.loop is not None and record.run_id in self.watchers:
            shown = record.latest_metrics()
            message = f"{record.run_id}: {elapsed:.0f}/{record.timeout_sec:g} s" + (
                f" | {shown}" if shown else "")
            item = (elapsed, float(record.timeout_sec), message)
            self.loop.call_soon_threadsafe(self._put, record.run_id, item)

    def _put(self, run_id: str, item: tuple[float, float, str]) -> None:
        for queue in self.watchers.get(run_id, []):
            queue.put_nowait(item)


class Lab:
    """The workspace's session, its config re-read when a file it comes from changes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.progress = _Progress()
        cfg, problems = config_model.load(root)
        for problem in problems:
            log.warning("%s", problem)
        self._stamp = config_model.files_stamp(root)
        self.session = LabSession(root, cfg, self.progress)
        self.session.resume_loops()

    def refresh(self) -> None:
        stamp = config_model.files_stamp(self.root)
        if stamp != self._stamp:
            self._stamp = stamp
            cfg, problems = config_model.load(self.root)
            for problem in problems:
                log.warning("%s", problem)
            self.session.config = cfg


def _run_start(lab: Lab, prm: p.RunStartParams) -> dict[str, Any]:
    record = lab.session.start(prm, "labls.run.start")
    return {"runId": record.run_id, "state": record.state}


def _edit_apply(lab: Lab, prm: p.EditApplyParams) -> dict[str, Any]:
    return lab.session.apply_edit(prm, "labls.edit.apply")


def _loop_start(lab: Lab, prm: p.LoopStartParams) -> dict[str, Any]:
    spec = lab.session.loop_spec(prm, "labls.loop.start")
    return {"loopId": lab.session.loop_start(spec).loop_id}


TOOLS = [
    Tool("datasets_list", "labls.datasets.list", p.Empty,
         "The configured dataset cache root and which datasets are really there.",
         lambda lab, prm: lab.session.datasets()),
    Tool("prompt_render", "labls.prompt.render", p.PromptRenderParams,
         "Render a dataset-aware prompt template (experiment, repair, "
         "network_disabled_guidance); vars.runId fills a repair prompt from that run.",
         lambda lab, prm: lab.session.render_prompt(prm, "labls.prompt.render")),
    Tool("run_start", "labls.run.start", p.RunStartParams,
         "Start a sandboxed run of a workspace script (no network, datasets read-only, a hard "
         "time budget); answers {runId, state} at once: then run_wait (`wait: true` waits "
         f"here, at most {WAIT_MAX_SEC:g} s).", _run_start),
    Tool("run_wait", "labls.run.wait", RunWaitParams,
         f"Wait for a run to end, at most timeoutSec (default {WAIT_DEFAULT_SEC:g}, max "
         f"{WAIT_MAX_SEC:g}); the run record, final or as it is then. Reports progress.",
         lambda lab, prm: None),  # (async: see _wait)
    Tool("run_get", "labls.run.get", p.RunGetParams,
         "A run's whole record (metrics, provenance, error with file and line); `fields` "
         "picks some.", lambda lab, prm: lab.session.get(prm, "labls.run.get")),
    Tool("run_cancel", "labls.run.cancel", p.RunIdParams,
         "Cancel a run (its whole process tree); its record.",
         lambda lab, prm: lab.session.cancel(prm.run_id, "labls.run.cancel").page().to_wire()),
    Tool("run_list", "labls.run.list", p.RunListParams,
         "Recent runs, most recent first (each with a bounded summary of its metrics).",
         lambda lab, prm: {"runs": [r.to_wire() for r in
                                    lab.session.recent(prm, "labls.run.list")]}),
    Tool("run_compare", "labls.run.compare", p.RunCompareParams,
         "Compare a run with its baseline (or baselineId) on the judged metric.",
         lambda lab, prm: lab.session.compare_runs(prm, "labls.run.compare")),
    Tool("edit_apply", "labls.edit.apply", p.EditApplyParams,
         "Apply an edit (searchReplace, udiff, whole, workspaceEdit) atomically inside the "
         "workspace; a failed edit is ok: false with the reason.", _edit_apply),
    Tool("experiment_step", "labls.experiment.step", p.ExperimentStepParams,
         "One experiment: apply the edit, run the configured script, compare with the "
         "baseline, keep (git commit) or discard (restore).",
         lambda lab, prm: lab.session.step(prm, "labls.experiment.step")),
    Tool("loop_start", "labls.loop.start", p.LoopStartParams,
         "Start the autoresearch loop (hypothesis, edit, run, keep or discard).", _loop_start),
    Tool("loop_get", "labls.loop.get", p.LoopIdParams, "A loop's state and iterations.",
         lambda lab, prm: lab.session.loop_get(prm.loop_id, "labls.loop.get")),
    Tool("loop_stop", "labls.loop.stop", p.LoopIdParams, "Stop a loop; its state.",
         lambda lab, prm: lab.session.loop_stop(prm.loop_id, "labls.loop.stop")),
    Tool("history", "labls.history", p.HistoryParams,
         "The experiment ledger (keep / discard / crash), most recent first.",
         lambda lab, prm: lab.session.history(prm, "labls.history")),
]
BY_NAME = {t.name: t for t in TOOLS}


def _result(value: Any) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=json.dumps(value))],
                                structured_content=value)


def _error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)],
                                is_error=True)


async def _wait(lab: Lab, prm: RunWaitParams, ctx: ServerRequestContext[Any]) -> dict[str, Any]:
    if not 0 <= prm.timeout_sec <= WAIT_MAX_SEC:
        raise p.invalid("labls.run.wait", "timeoutSec", f"must be 0..{WAIT_MAX_SEC:g}")
    await anyio.to_thread.run_sync(lab.session.record, prm.run_id, "labls.run.wait")
    queue: asyncio.Queue[tuple[float, float, str]] = asyncio.Queue()
    lab.progress.watchers.setdefault(prm.run_id, []).append(queue)
    done = asyncio.ensure_future(asyncio.to_thread(
        lab.session.wait, prm.run_id, "labls.run.wait", prm.timeout_sec))
    try:
        while not done.done():
            getter = asyncio.ensure_future(queue.get())
            finished, _ = await asyncio.wait({done, getter},
                                             return_when=asyncio.FIRST_COMPLETED)
            if getter in finished:
                elapsed, total, message = getter.result()
                await ctx.session.report_progress(elapsed, total, message)
            else:
                getter.cancel()
        record: RunRecord = done.result()
    finally:
        watching = lab.progress.watchers[prm.run_id]
        watching.remove(queue)
        if not watching:
            del lab.progress.watchers[prm.run_id]
    return record.page().to_wire()


def build(lab: Lab) -> Server[Any]:
    async def list_tools(ctx: ServerRequestContext[Any],
                         params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[
            types.Tool(name=t.name, description=t.description,
                       input_schema=p.json_schema(t.params)) for t in TOOLS])

    async def call_tool(ctx: ServerRequestContext[Any],
                        params: types.CallToolRequestParams) -> types.CallToolResult:
        tool = BY_NAME.get(params.name)
        if tool is None:
            return _error(f"no tool {params.name!r}; tools: {', '.join(BY_NAME)}")
        try:
            lab.refresh()
            prm: Any = p.structure(params.arguments, tool.params, tool.command)
            if tool.name == "run_wait":
                return _result(await _wait(lab, prm, ctx))
            if tool.name == "run_start" and prm.wait:  # as run_start, then run_wait at most
                started = await anyio.to_thread.run_sync(tool.call, lab, prm)
                return _result(await _wait(lab, RunWaitParams(started["runId"], WAIT_MAX_SEC),
                                           ctx))
            return _result(await anyio.to_thread.run_sync(tool.call, lab, prm))
        except LabError as exc:
            return _error(str(exc))
        except Exception as exc:  # the server keeps serving; the agent gets the reason
            log.exception("%s failed", tool.name)
            return _error(f"{tool.command}: {type(exc).__name__}: {exc}")

    async def list_templates(ctx: ServerRequestContext[Any], params: Any
                             ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=[
            types.ResourceTemplate(uri_template="labls://runs/{runId}/log", name="run log",
                                   description="A run's output (its last 256 KB)",
                                   mime_type="text/plain"),
            types.ResourceTemplate(uri_template="labls://runs/{runId}/record",
                                   name="run record", description="A run's whole record",
                                   mime_type="application/json"),
        ])

    async def list_resources(ctx: ServerRequestContext[Any], params: Any
                             ) -> types.ListResourcesResult:
        listed = p.RunListParams(limit=20)
        records = await anyio.to_thread.run_sync(lab.session.recent, listed, "resources/list")
        resources = []
        for r in records:
            resources += [
                types.Resource(uri=f"labls://runs/{r.run_id}/log", name=f"{r.run_id} log",
                               mime_type="text/plain"),
                types.Resource(uri=f"labls://runs/{r.run_id}/record",
                               name=f"{r.run_id} record", mime_type="application/json")]
        return types.ListResourcesResult(resources=resources)

    async def read_resource(ctx: ServerRequestContext[Any],
                            params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        uri = str(params.uri)
        parts = uri.removeprefix("labls://runs/").split("/")
        if not uri.startswith("labls://runs/") or len(parts) != 2 or parts[1] not in (
                "log", "record"):
            raise ValueError(f"no such resource: {uri} (labls://runs/<runId>/log or /record)")
        record = await anyio.to_thread.run_sync(lab.session.record, parts[0], "resources/read",
                                                "runId", (0, PAGE_METRICS))
        if parts[1] == "record":
            text, mime = json.dumps(record.to_wire()), "application/json"
        else:
            text, mime = _log_tail(Path(record.log_path)), "text/plain"
        return types.ReadResourceResult(contents=[
            types.TextResourceContents(uri=uri, text=text, mime_type=mime)])

    from labls.lab import version

    return Server("labls", version=version(), on_list_tools=list_tools,
                  on_call_tool=call_tool, on_list_resources=list_resources,
                  on_list_resource_templates=list_templates, on_read_resource=read_resource,
                  instructions="labls runs ML experiments in a sandbox and reports their "
                               "metrics: datasets_list, run_start then run_wait, run_get.")


def _log_tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - LOG_TAIL_BYTES))
            return f.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(the log cannot be read: {exc})"


async def serve(root: Path) -> None:
    lab = Lab(root)
    lab.progress.loop = asyncio.get_running_loop()
    server = build(lab)
    try:
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
    finally:
        await anyio.to_thread.run_sync(lab.session.close)


def main(root: Path) -> int:
    asyncio.run(serve(root))
    return 0
