"""Apply an edit plan through the editor when it can (`workspace/applyEdit`, so open buffers
stay right), else atomically on disk."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lsprotocol import types

from labls.lab.editplan import EditPlan, write_atomically
from labls.lab.session import edit_answer, edit_refused

from .diagnostics import utf16_len

if TYPE_CHECKING:
    from .app import LabServer


def _whole_range(old: str) -> types.Range:
    lines = old.split("\n")
    return types.Range(types.Position(0, 0),
                       types.Position(len(lines) - 1, utf16_len(lines[-1])))


def workspace_edit(ls: LabServer, plan: EditPlan) -> types.WorkspaceEdit:
    changes: list[Any] = []
    for rel, text in plan.new.items():
        uri = (ls.root / rel).as_uri()
        old = plan.old.get(rel)
        if old is None:
            changes.append(types.CreateFile(uri=uri, options=types.CreateFileOptions(
                overwrite=False, ignore_if_exists=True)))
            old = ""
        changes.append(types.TextDocumentEdit(
            text_document=types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=None),
            edits=[types.TextEdit(range=_whole_range(old), new_text=text)]))
    return types.WorkspaceEdit(document_changes=changes)


def _client_applies_edits(ls: LabServer) -> bool:
    caps = ls.client_capabilities
    return bool(caps and caps.workspace and caps.workspace.apply_edit)


async def apply(ls: LabServer, plan: EditPlan, dry_run: bool) -> dict[str, Any]:
    """The plan through the editor when it can apply edits, else on disk; the lab core's
    answer shapes (`edit_answer`, `edit_refused`)."""
    if not plan.ok or dry_run:
        return edit_answer(plan, "dryRun")
    if _client_applies_edits(ls):
        answer = await ls.workspace_apply_edit_async(types.ApplyWorkspaceEditParams(
            edit=workspace_edit(ls, plan), label="labls edit"))
        if not answer.applied:
            return edit_refused(answer.failure_reason or "the editor did not apply the edit",
                                via="editor")
        return edit_answer(plan, "editor")
    import asyncio

    await asyncio.to_thread(write_atomically, plan)
    return edit_answer(plan, "disk")
