"""What the editor shows beside the buffer: code lenses on runnable scripts, code actions on
a run's diagnostics and on scripts, and a script's last diagnostics again when it is opened.

Every lens and action runs a command PROTOCOL.md lists. A script is runnable when it is the
configured `loop.script`, has a `__main__` guard, or is a test file (run as `-m pytest FILE`).
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

from lsprotocol import types

from labls.sandbox.records import RunRecord

from .app import LabServer

MAIN_GUARD = re.compile(r"""^if\s+__name__\s*==\s*['"]__main__['"]\s*:""", re.MULTILINE)
TEST_FILE = re.compile(r"(?:^|/)(?:test_[^/]*|[^/]*_test)\.py$")


def relative(ls: LabServer, uri: str) -> str | None:
    """The workspace-relative path of a `file:` URI inside the workspace, else None."""
    if not uri.startswith("file://"):
        return None
    path = Path(uri.removeprefix("file://")).resolve()
    return str(path.relative_to(ls.root)) if path.is_relative_to(ls.root) else None


def run_target(ls: LabServer, rel: str, text: str) -> dict[str, Any] | None:
    """How `labls.run.start` runs this file, or None when it is not runnable."""
    if TEST_FILE.search(rel):
        return {"script": "-m pytest", "args": ["-q", rel]}
    if rel == ls.config.loop.script or MAIN_GUARD.search(text):
        return {"script": rel}
    return None


def _when(ts: float | None) -> str:
    if not ts:
        return "?"
    ago = max(0, time.time() - ts)
    return (f"{ago:.0f} s ago" if ago < 90 else f"{ago / 60:.0f} min ago" if ago < 5400
            else time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)))


def code_lenses(ls: LabServer, params: types.CodeLensParams) -> list[types.CodeLens]:
    uri = params.text_document.uri
    rel = relative(ls, uri)
    if rel is None or not rel.endswith(".py"):
        return []
    document = ls.workspace.get_text_document(uri)
    target = run_target(ls, rel, document.source)
    if target is None:
        return []
    match = MAIN_GUARD.search(document.source)
    line = document.source.count("\n", 0, match.start()) if match else 0
    where = types.Range(types.Position(line, 0), types.Position(line, 0))
    return [
        types.CodeLens(range=where, command=types.Command(
            title="▶ Run in labls", command="labls.run.start", arguments=[target])),
        types.CodeLens(range=where, data={"kind": "last", "script": target["script"]}),
        types.CodeLens(range=where, data={"kind": "compare", "script": target["script"]}),
    ]


async def resolve_code_lens(ls: LabServer, lens: types.CodeLens) -> types.CodeLens:
    """The lazy lens: the script's last run, with its judged metric, state and age."""
    data = lens.data if isinstance(lens.data, dict) else {}
    await ls.until_ready()
    session = ls.require_session()
    record = await asyncio.to_thread(session.last_summary_of, str(data.get("script", "")))
    if record is None:
        lens.command = types.Command(title="no labls run yet", command="")
        return lens
    if data.get("kind") == "compare":
        return await _compare_lens(ls, lens, record)
    name = ls.config.metric.name
    value = record.metrics.get(name)
    shown = f"{name} = {value:.6g}" if value is not None else f"{name}: none"
    ended = (record.started_at or record.created_at) + (record.duration_sec or 0)
    lens.command = types.Command(
        title=f"last: {shown} ({record.state}, {_when(ended)}) · log",
        command="labls.run.showLog", arguments=[{"runId": record.run_id}])
    return lens


async def _compare_lens(ls: LabServer, lens: types.CodeLens,
                        record: RunRecord) -> types.CodeLens:
    """The last run (its summary: the judged metric first) against its baseline: the delta
    and the verdict; `labls.run.compare` on a click."""
    found = await asyncio.to_thread(ls.require_session().compare, record, None)
    run_id = record.run_id
    title = (f"vs baseline: {found.delta:+.4g} ({found.verdict})" if found.delta is not None
             else f"vs baseline: {found.verdict}")
    lens.command = types.Command(title=title, command="labls.run.compare",
                                 arguments=[{"runId": run_id}])
    return lens


async def code_actions(ls: LabServer, params: types.CodeActionParams
                       ) -> list[types.CodeAction]:
    await ls.until_ready()  # (a running run's Cancel needs the runs)
    actions: list[types.CodeAction] = []
    seen: set[str] = set()
    for diag in params.context.diagnostics:
        data = diag.data if isinstance(diag.data, dict) else {}
        run_id = data.get("runId")
        if diag.source != "labls" or not isinstance(run_id, str) or run_id in seen:
            continue
        seen.add(run_id)
        arg = {"runId": run_id}
        actions += [
            _action("Open the run's log", "labls.run.showLog", arg, [diag]),
            _action("Compare with the baseline", "labls.run.compare", arg, [diag]),
        ]
        ran = await asyncio.to_thread(_summary, ls, run_id)
        if ran is not None:
            actions.append(_action("Re-run", "labls.run.start",
                                   {"script": ran.script, "args": ran.args}, [diag]))
        if data.get("error"):
            actions.insert(0, _action("Repair with the repair prompt", "labls.prompt.show",
                                      {"template": "repair", "vars": arg}, [diag],
                                      types.CodeActionKind.QuickFix))
    rel = relative(ls, params.text_document.uri)
    if rel is not None and rel.endswith(".py"):
        document = ls.workspace.get_text_document(params.text_document.uri)
        target = run_target(ls, rel, document.source)
        if target is not None:
            actions.append(_action("Run in labls", "labls.run.start", target))
        if rel == ls.config.loop.script and await asyncio.to_thread(
                _differs_from_disk, ls.root / rel, document.source):
            actions.append(_action("Run as an experiment step…", "labls.experiment.step", {
                "hypothesis": f"the edit of {rel} made in the editor",
                "edit": {"format": "whole", "path": rel, "text": document.source}}))
        if ls.runs is not None:
            for run_id in ls.runs.engine.active_ids():
                live = ls.runs.engine.get(run_id)
                if live is not None and target is not None and live.script == target["script"]:
                    actions.append(_action(f"Cancel run {run_id}", "labls.run.cancel",
                                           {"runId": run_id}))
    return actions


def _summary(ls: LabServer, run_id: str) -> RunRecord | None:
    return ls.runs.engine.get(run_id, (0, 0)) if ls.runs is not None else None


def _differs_from_disk(path: Path, text: str) -> bool:
    try:
        return path.read_bytes().decode("utf-8") != text
    except (OSError, UnicodeDecodeError):
        return False


def _action(title: str, command: str, arg: dict[str, Any],
            diagnostics: list[types.Diagnostic] | None = None,
            kind: str = types.CodeActionKind.Empty) -> types.CodeAction:
    return types.CodeAction(title=title, kind=kind, diagnostics=diagnostics,
                            command=types.Command(title=title, command=command,
                                                  arguments=[arg]))


async def did_open(ls: LabServer, params: types.DidOpenTextDocumentParams) -> None:
    await ls.until_ready()
    rel = relative(ls, params.text_document.uri)
    if rel is not None and ls.runs is not None:
        await ls.runs.republish(rel)


def register(server: LabServer) -> None:
    server.feature(types.TEXT_DOCUMENT_CODE_LENS,
                   types.CodeLensOptions(resolve_provider=True))(code_lenses)
    server.feature(types.CODE_LENS_RESOLVE)(resolve_code_lens)
    server.feature(types.TEXT_DOCUMENT_CODE_ACTION)(code_actions)
    server.feature(types.TEXT_DOCUMENT_DID_OPEN)(did_open)
