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

from tests.helpers import SERVER_COMMAND, command, start_session, trust

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

    @lsp_client.feature(types.WORKSPACE_APPLY_EDIT)
    def apply_edit(params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        # an editor that applies the edit to its buffers and saves them
        applied.append(params)
        for change in params.edit.document_changes or []:
            if isinstance(change, types.TextDocumentEdit):
                path = Path(change.text_document.uri.removeprefix("file://"))
                path.write_text(change.edits[0].new_text)
        return types.ApplyWorkspaceEditResult(applied=True)

    lsp_client.applied = applied  # type: ignore[attr-defined]
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
