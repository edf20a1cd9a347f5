"""`labls.edit.apply` and `labls.experiment.step` over LSP."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pytest_lsp import ClientServerConfig, LanguageClient

from tests.helpers import SERVER_COMMAND, apply_text_edits, carried, command, start_session, trust

pytestmark = pytest.mark.asyncio(loop_scope="module")
BLOCK = "{path}\n<<<<<<< SEARCH\n{old}\n=======\n{new}\n>>>>>>> REPLACE\n"


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("edits")
    (ws / "train.py").write_text("LR = 0.1\nprint(f'loss: {abs(LR - 0.3) + 1:.4f}')\n")
    (ws / "labls.toml").write_text('[metric]\nname = "loss"\n[loop]\nscript = "train.py"\n')
    trust(ws)
    for args in (["init", "-q"], ["add", "."],
                 ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start"]):
        subprocess.run(["git", "-C", str(ws), *args], check=True)
    return ws


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=SERVER_COMMAND))
async def client(lsp_client: LanguageClient, ws: Path):
    applied: list[types.ApplyWorkspaceEditParams] = []
    buffers: dict[str, tuple[str, int]] = {}  # the editor's open buffers: uri → text, version

    @lsp_client.feature(types.WORKSPACE_APPLY_EDIT)
    def apply_edit(params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        # an editor: an open buffer takes the edit if its version is the one planned on (and
        # stays unsaved); a closed file is edited on disk
        applied.append(params)
        for change in params.edit.document_changes or []:
            if not isinstance(change, types.TextDocumentEdit):
                continue
            uri = change.text_document.uri
            if uri in buffers:
                text, version = buffers[uri]
                if change.text_document.version != version:
                    return types.ApplyWorkspaceEditResult(
                        applied=False, failure_reason=f"{uri} is at version {version}")
                buffers[uri] = (apply_text_edits(text, change.edits), version + 1)
                lsp_client.text_document_did_change(types.DidChangeTextDocumentParams(  # (as
                    text_document=types.VersionedTextDocumentIdentifier(version + 1, uri),
                    content_changes=[types.TextDocumentContentChangeWholeDocument(  # editors
                        text=buffers[uri][0])]))  # tell the server of the change they made)
            else:
                path = Path(uri.removeprefix("file://"))
                path.write_text(apply_text_edits(path.read_text(), change.edits))
        return types.ApplyWorkspaceEditResult(applied=True)

    lsp_client.applied = applied  # type: ignore[attr-defined]
    lsp_client.buffers = buffers  # type: ignore[attr-defined]
    await start_session(lsp_client, ws, capabilities=types.ClientCapabilities(
        workspace=types.WorkspaceClientCapabilities(apply_edit=True)))
    yield
    await lsp_client.shutdown_session()


async def test_edit_goes_through_the_editor(client, ws: Path):
    text = BLOCK.format(path="train.py", old="LR = 0.1", new="LR = 0.2")
    dry = await command(client, "labls.edit.apply", {"format": "searchReplace", "text": text,
                                                      "dryRun": True})
    assert dry["ok"] and dry["via"] == "dryRun" and "+LR = 0.2" in dry["files"][0]["diff"]
    assert "LR = 0.1" in (ws / "train.py").read_text()
    result = await command(client, "labls.edit.apply", {"format": "searchReplace", "text": text})
    assert result["ok"] and result["via"] == "editor" and result["files"][0]["hunks"] == 1
    assert len(client.applied) == 1 and "LR = 0.2" in (ws / "train.py").read_text()
    undo = BLOCK.format(path="train.py", old="LR = 0.2", new="LR = 0.1")
    assert (await command(client, "labls.edit.apply",
                          {"format": "searchReplace", "text": undo}))["ok"]


async def test_failed_block_is_a_result_not_an_error(client, ws: Path):
    text = BLOCK.format(path="train.py", old="LR = 7", new="LR = 8")
    result = await command(client, "labls.edit.apply", {"format": "searchReplace", "text": text})
    assert not result["ok"] and result["failures"][0]["path"] == "train.py"
    assert "1  LR = 0.1" in result["failures"][0]["nearest"]


@pytest.mark.parametrize(("args", "match"), [
    ({"format": "sed", "text": "x"}, "unknown format"),
    ({"format": "whole", "text": "x"}, "path"),
    ({"format": "whole", "text": "x", "path": "../escape.py"}, "workspace"),
    ({"format": "searchReplace", "text": 3}, "text"),
])
async def test_malformed_edits_are_invalid_params(client, args, match):
    with pytest.raises(JsonRpcInvalidParams, match=match):
        await command(client, "labls.edit.apply", args)


async def test_experiment_step_keeps_an_improvement(client, ws: Path):
    edit = {"format": "searchReplace",
            "text": BLOCK.format(path="train.py", old="LR = 0.1", new="LR = 0.28")}
    result = await command(client, "labls.experiment.step",
                           {"hypothesis": "LR closer to 0.3", "edit": edit})
    assert result["ok"] and result["verdict"] == "keep", result["reason"]
    assert result["baseline"]["metrics"]["loss"] == pytest.approx(1.2)
    assert result["run"]["metrics"]["loss"] == pytest.approx(1.02)
    assert result["delta"] == pytest.approx(-0.18) and result["commit"]
    head = subprocess.run(["git", "-C", str(ws), "log", "-1", "--format=%s"],
                          capture_output=True, text=True).stdout
    assert head.strip() == "labls: LR closer to 0.3"


async def test_protected_paths_are_refused_before_the_editor_is_asked(client, ws: Path):
    before = (ws / "labls.toml").read_text()
    asked = len(client.applied)
    for args in ({"format": "whole", "path": "labls.toml", "text": '[run]\nnetwork = "host"\n'},
                 {"format": "whole", "path": ".labls/labls.db", "text": "x"},
                 {"format": "whole", "path": ".git/hooks/post-commit", "text": "#!/bin/sh\n"}):
        result = await command(client, "labls.edit.apply", args)
        assert not result["ok"] and result["reason"].startswith("protected"), result
        assert result["failures"][0]["path"] == args["path"]
    assert (ws / "labls.toml").read_text() == before and len(client.applied) == asked


async def test_an_edit_while_a_step_runs_is_busy(client, ws: Path):
    edit = {"format": "searchReplace", "text": BLOCK.format(
        path="train.py", old="LR = 0.28", new="import time\ntime.sleep(2)\nLR = 0.28")}
    step = asyncio.create_task(command(client, "labls.experiment.step", {
        "hypothesis": "slower is no better", "edit": edit}))
    async with asyncio.timeout(60):
        while not (await command(client, "labls.run.list", {"state": "running"}))["runs"]:
            await asyncio.sleep(0.05)
    text = BLOCK.format(path="program.md", old="", new="notes\n")
    busy = await command(client, "labls.edit.apply", {"format": "searchReplace", "text": text})
    assert not busy["ok"] and busy["reason"].startswith("busy"), busy
    dry = await command(client, "labls.edit.apply", {"format": "searchReplace", "text": text,
                                                      "dryRun": True})
    assert dry["ok"]  # a dry run changes nothing, so it is answered
    result = await step
    assert result["ok"] and result["verdict"] in ("keep", "discard", "crash")
    again = await command(client, "labls.edit.apply", {"format": "searchReplace", "text": text,
                                                        "dryRun": True})
    assert again["ok"]


async def test_experiment_step_refuses_a_dirty_tree(client, ws: Path):
    (ws / "train.py").write_text((ws / "train.py").read_text() + "# local change\n")
    result = await command(client, "labls.experiment.step", {"hypothesis": "x", "edit": {
        "format": "whole", "path": "train.py", "text": "print('loss: 0')\n"}})
    assert not result["ok"] and "uncommitted" in result["reason"]
    assert {"comparison", "failures", "baselineRuns", "notes"} <= set(result)  # one shape
    assert (ws / "train.py").read_text().endswith("# local change\n")  # nothing lost


def edit_buffer(client: LanguageClient, ws: Path, name: str, text: str, version: int) -> str:
    """The user edits `name` in the editor without saving: the server hears didOpen/didChange."""
    uri = (ws / name).as_uri()
    if uri not in client.buffers:
        client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(
            uri=uri, language_id="python", version=version, text=text)))
    else:
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))
    client.buffers[uri] = (text, version)
    return uri


async def test_an_edit_applies_to_the_open_buffer_and_keeps_the_users_unsaved_changes(client, ws):
    disk = "import os\nA = 1\nB = 2\nC = 3\n"
    (ws / "buffered.py").write_text(disk)
    # two unsaved changes in the editor: a comment on top and C changed
    uri = edit_buffer(client, ws, "buffered.py", "# mine\nimport os\nA = 1\nB = 2\nC = 30\n", 3)
    await command(client, "labls.datasets.list")  # (the notifications are handled first)
    text = BLOCK.format(path="buffered.py", old="B = 2", new="B = 20")
    result = await command(client, "labls.edit.apply", {"format": "searchReplace", "text": text})
    assert result["ok"] and result["via"] == "editor", result
    change = client.applied[-1].edit.document_changes[-1]
    assert change.text_document.version == 3  # planned on the buffer the user has
    assert len(change.edits) == 1 and change.edits[0].range.start.line == 3  # only B's line
    assert client.buffers[uri][0] == "# mine\nimport os\nA = 1\nB = 20\nC = 30\n"
    assert (ws / "buffered.py").read_text() == disk  # unsaved stays unsaved


async def test_an_edit_that_no_longer_matches_the_buffer_is_refused(client, ws):
    (ws / "stale.py").write_text("X = 1\n")
    edit_buffer(client, ws, "stale.py", "X = 2\n", 5)  # the user changed it; not saved
    await command(client, "labls.datasets.list")
    text = BLOCK.format(path="stale.py", old="X = 1", new="X = 9")
    result = await command(client, "labls.edit.apply", {"format": "searchReplace", "text": text})
    assert result["ok"] is False and "X = 1" in result["failures"][0]["block"]
    assert client.buffers[(ws / "stale.py").as_uri()][0] == "X = 2\n"  # the buffer as it was


async def test_a_buffer_changed_after_planning_is_refused_by_the_editor(client, ws):
    """The version the edit carries is the editor's guard: a buffer at another version
    refuses the edit, and labls answers `ok: false` (nothing is lost on either side)."""
    (ws / "race.py").write_text("Y = 1\n")
    uri = edit_buffer(client, ws, "race.py", "Y = 1\n", 1)
    await command(client, "labls.datasets.list")
    client.buffers[uri] = ("Y = 1\n# typed meanwhile\n", 2)  # not yet sent to the server
    text = BLOCK.format(path="race.py", old="Y = 1", new="Y = 5")
    result = await command(client, "labls.edit.apply", {"format": "searchReplace", "text": text})
    assert result["ok"] is False and result["via"] == "editor" and "version" in result["reason"]
    assert client.buffers[uri][0] == "Y = 1\n# typed meanwhile\n"


async def test_a_step_shows_its_edit_in_the_open_buffer_and_its_discard_restores_it(client, ws):
    subprocess.run(["git", "-C", str(ws), "checkout", "-q", "train.py"], check=True)
    disk = (ws / "train.py").read_text()
    uri = edit_buffer(client, ws, "train.py", disk, 1)  # open, nothing unsaved
    await command(client, "labls.datasets.list")
    seen: list[str] = []  # the buffer's text after each edit the editor was sent
    asked = len(client.applied)
    edit = {"format": "searchReplace", "text": BLOCK.format(path="train.py", old="LR = 0.28",
                                                            new="LR = 0.9")}
    result = await command(client, "labls.experiment.step",
                           {"hypothesis": "a far worse LR", "edit": edit})
    assert result["ok"] and result["verdict"] == "discard", result
    for params in client.applied[asked:]:
        [change] = params.edit.document_changes
        assert change.text_document.uri == uri and params.label == "labls experiment step"
        seen.append(apply_text_edits(seen[-1] if seen else disk, change.edits))
    assert seen == [disk.replace("LR = 0.28", "LR = 0.9"), disk]  # the edit, then its undo
    assert client.buffers[uri][0] == disk == (ws / "train.py").read_text()
    assert not any("editor did not take" in n for n in result["notes"]), result["notes"]


async def test_a_step_on_a_file_with_unsaved_changes_is_refused_and_they_are_kept(client, ws):
    disk = (ws / "train.py").read_text()
    mine = disk + "# typed, not saved\n"
    uri = edit_buffer(client, ws, "train.py", mine, 7)
    await command(client, "labls.datasets.list")
    asked = len(client.applied)
    edit = {"format": "searchReplace", "text": BLOCK.format(path="train.py", old="LR = 0.28",
                                                            new="LR = 0.29")}
    result = await command(client, "labls.experiment.step", {"hypothesis": "x", "edit": edit})
    assert not result["ok"] or result["verdict"] == "crash", result
    assert "unsaved changes in the editor" in result["reason"] and "train.py" in result["reason"]
    assert len(client.applied) == asked and client.buffers[uri][0] == mine  # the editor: as is
    assert (ws / "train.py").read_text() == disk  # the disk: as is



async def test_the_users_unsaved_edit_runs_as_an_experiment_step_from_a_code_action(client, ws):
    disk = (ws / "train.py").read_text()
    mine = disk.replace("LR = 0.28", "LR = 0.3")  # typed in the editor, not saved
    uri = edit_buffer(client, ws, "train.py", mine, 9)
    await command(client, "labls.datasets.list")
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri),
        range=types.Range(types.Position(0, 0), types.Position(0, 0)),
        context=types.CodeActionContext(diagnostics=[])))
    step = next(carried(a) for a in actions if a.title == "Run as an experiment step…")
    assert step.command == "labls.experiment.step"
    assert step.arguments[0]["edit"] == {"format": "whole", "path": "train.py", "text": mine}
    asked = len(client.applied)
    result = await command(client, step.command, step.arguments[0])
    assert result["ok"] and result["verdict"] == "keep", result  # loss 1.02 -> 1.0
    assert (ws / "train.py").read_text() == mine and client.buffers[uri][0] == mine
    assert len(client.applied) == asked  # the buffer showed the step's text already
    shown = await wait_shown(client, "labls step keep")
    assert "committed" in shown.message
    head = subprocess.run(["git", "-C", str(ws), "show", "HEAD:train.py"], capture_output=True,
                          text=True).stdout
    assert head == mine
    saved = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri),
        range=types.Range(types.Position(0, 0), types.Position(0, 0)),
        context=types.CodeActionContext(diagnostics=[])))
    assert "Run as an experiment step…" not in [a.title for a in saved]  # nothing unsaved


async def wait_shown(client: LanguageClient, text: str) -> types.ShowMessageParams:
    async with asyncio.timeout(30):
        while True:
            found = [m for m in client.messages if text in m.message]
            if found:
                return found[-1]
            await asyncio.sleep(0.05)
