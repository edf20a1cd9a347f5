"""Apply an edit plan through the editor when it can (`workspace/applyEdit`, so open buffers
stay right), else atomically on disk."""

from __future__ import annotations

import asyncio
import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException

from labls.lab.editplan import EditPlan, write_atomically
from labls.lab.session import edit_answer, edit_refused

from .diagnostics import utf16_len
from .editor import relative

if TYPE_CHECKING:
    from .app import LabServer


def minimal_edits(old: str, new: str) -> list[types.TextEdit]:
    """The fewest line ranges that turn `old` into `new` (difflib's opcodes over lines), so
    the editor keeps its cursor, marks and undo history everywhere else."""
    before, after = old.splitlines(keepends=True), new.splitlines(keepends=True)
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    return [types.TextEdit(range=types.Range(_position(before, i1), _position(before, i2)),
                           new_text="".join(after[j1:j2]))
            for op, i1, i2, j1, j2 in matcher.get_opcodes() if op != "equal"]


def _position(lines: list[str], index: int) -> types.Position:
    """Where line `index` starts; past the end of a last line without a newline, its end."""
    if index < len(lines) or not lines or lines[-1].endswith(("\n", "\r")):
        return types.Position(index, 0)
    return types.Position(len(lines) - 1, utf16_len(lines[-1]))


def workspace_edit(ls: LabServer, plan: EditPlan) -> types.WorkspaceEdit:
    """The plan as versioned document edits: an open buffer's edit carries the version it
    was planned on (the editor refuses it if the buffer changed since), a closed file's none."""
    changes: list[Any] = []
    for rel, text in plan.new.items():
        uri = (ls.root / rel).as_uri()
        old = plan.old.get(rel)
        if old is None:
            changes.append(types.CreateFile(uri=uri, options=types.CreateFileOptions(
                overwrite=False, ignore_if_exists=True)))
            old = ""
        version = plan.buffers[rel][1] if rel in plan.buffers else None
        changes.append(types.TextDocumentEdit(
            text_document=types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=version),
            edits=minimal_edits(old, text)))
    return types.WorkspaceEdit(document_changes=changes)


def open_buffers(ls: LabServer) -> dict[str, tuple[str, int]]:
    """The workspace's files open in the editor: their text and version, by path."""
    out = {}
    for uri, document in list(ls.workspace.text_documents.items()):
        rel = relative(ls, uri)
        if rel is not None and document.version is not None:
            out[rel] = (document.source, document.version)
    return out


def client_applies_edits(ls: LabServer) -> bool:
    caps = ls.client_capabilities
    return bool(caps and caps.workspace and caps.workspace.apply_edit)


async def apply(ls: LabServer, plan: EditPlan, dry_run: bool) -> dict[str, Any]:
    """The plan through the editor when it can apply edits, else on disk; the lab core's
    answer shapes (`edit_answer`, `edit_refused`)."""
    if not plan.ok or dry_run:
        return edit_answer(plan, "dryRun")
    if client_applies_edits(ls):
        try:
            answer = await ls.workspace_apply_edit_async(types.ApplyWorkspaceEditParams(
                edit=workspace_edit(ls, plan), label="labls edit"))
        except JsonRpcException as exc:  # e.g. eglot's user said no, or could not be asked
            return edit_refused(f"the editor answered an error: {exc.message}", via="editor")
        if not answer.applied:
            return edit_refused(answer.failure_reason or "the editor did not apply the edit",
                                via="editor")
        return edit_answer(plan, "editor")
    await asyncio.to_thread(write_atomically, plan)
    return edit_answer(plan, "disk")


class EditorBuffers:
    """The lab core's `OpenBuffers` (lab/buffers.py) for this server's editor: asked from a
    step's thread, answered on the server's loop (where the open documents live)."""

    def __init__(self, ls: LabServer, loop: asyncio.AbstractEventLoop,
                 timeout: float = 30.0) -> None:
        self.ls = ls
        self.loop = loop
        self.timeout = timeout

    def unsaved(self, planned: dict[str, str]) -> list[str]:
        return asyncio.run_coroutine_threadsafe(self._unsaved(planned), self.loop).result(
            self.timeout)

    def follow(self, paths: list[str]) -> list[str]:
        return asyncio.run_coroutine_threadsafe(self._follow(paths), self.loop).result(
            self.timeout)

    async def _differing(self, paths: list[str]) -> list[tuple[str, str, int, str]]:
        """(path, buffer text, version, disk text) of each open buffer unlike its file."""
        buffers = open_buffers(self.ls)
        out = []
        for rel in paths:
            if rel not in buffers:
                continue
            disk = await asyncio.to_thread(_disk_text, self.ls.root / rel)
            text, version = buffers[rel]
            if disk is not None and disk != text:
                out.append((rel, text, version, disk))
        return out

    async def _unsaved(self, planned: dict[str, str]) -> list[str]:
        return [rel for rel, text, _, _ in await self._differing(list(planned))
                if text != planned[rel]]

    async def _follow(self, paths: list[str]) -> list[str]:
        differing = await self._differing(paths)
        if not differing or not client_applies_edits(self.ls):
            return [rel for rel, *_ in differing]
        edit = types.WorkspaceEdit(document_changes=[types.TextDocumentEdit(
            text_document=types.OptionalVersionedTextDocumentIdentifier(
                uri=(self.ls.root / rel).as_uri(), version=version),
            edits=minimal_edits(text, disk)) for rel, text, version, disk in differing])
        answer = await self.ls.workspace_apply_edit_async(types.ApplyWorkspaceEditParams(
            edit=edit, label="labls experiment step"))
        return [] if answer.applied else [rel for rel, *_ in differing]


def _disk_text(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
