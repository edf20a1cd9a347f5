"""Shared test helpers: fake-free workspaces and dataset caches written by the tests."""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Any

from lsprotocol import types

from labls.sandbox.datasets import builtin_specs

SERVER_COMMAND = [sys.executable, "-m", "labls.server.cli", "serve"]


def make_cache(root: Path, names: list[str]) -> Path:
    """Write the files the named datasets need (small real bytes; the layout is what matters)."""
    specs = {s.name: s for s in builtin_specs()}
    for name in names:
        spec = specs[name]
        for rel in spec.files:
            path = root / spec.path / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"{name}:{rel}\n".encode() * 8)
    root.mkdir(parents=True, exist_ok=True)
    return root


async def start_session(client: Any, workspace: Path, options: dict[str, Any] | None = None,
                        capabilities: types.ClientCapabilities | None = None) -> Any:
    return await client.initialize_session(
        types.InitializeParams(
            capabilities=capabilities or types.ClientCapabilities(
                window=types.WindowClientCapabilities(work_done_progress=True),
                workspace=types.WorkspaceClientCapabilities(apply_edit=False),
            ),
            root_uri=workspace.as_uri(),
            workspace_folders=[types.WorkspaceFolder(uri=workspace.as_uri(), name="ws")],
            initialization_options=options,
        )
    )


async def command(client: Any, name: str, args: dict[str, Any] | None = None,
                  token: str | None = None) -> Any:
    return await client.workspace_execute_command_async(
        types.ExecuteCommandParams(
            command=name, arguments=[args if args is not None else {}], work_done_token=token
        )
    )


def plain(value: Any) -> Any:
    """pygls hands custom notifications over as nested namedtuples: make them JSON-like."""
    if hasattr(value, "_asdict"):
        return {k: plain(v) for k, v in value._asdict().items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def trust(workspace: Path) -> None:
    """What `labls trust` does, as the user who wrote the workspace's labls.toml for a test."""
    from labls.sandbox import config
    from labls.sandbox import trust as trust_store

    source, table, problems = config.workspace_source(workspace)
    assert source is not None and not problems, problems
    trust_store.record(source, table)


def apply_text_edits(text: str, edits: Any) -> str:
    """LSP TextEdits applied to `text` as an editor does (ranges of the original text, applied
    from the last to the first; positions in UTF-16 code units)."""
    lines = text.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def offset(pos: Any) -> int:
        if pos.line >= len(lines):
            return len(text)
        line = lines[pos.line]
        units, index = 0, 0
        while index < len(line) and units < pos.character:
            units += len(line[index].encode("utf-16-le")) // 2
            index += 1
        return starts[pos.line] + index

    for edit in sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character),
                       reverse=True):
        text = text[:offset(edit.range.start)] + edit.new_text + text[offset(edit.range.end):]
    return text


def carried(action: Any) -> types.Command:
    """The command a code action carries. lsprotocol's client side reads any result with a
    `command` key as a Command, and a CodeAction's nested command then arrives as its str():
    it is read back here (the server sends CodeActions; editors parse them as such)."""
    if isinstance(action, types.Command) and action.command.startswith("{"):
        nested = ast.literal_eval(action.command)
        return types.Command(nested["title"], nested["command"],
                             arguments=nested.get("arguments"))
    return action if isinstance(action, types.Command) else action.command
