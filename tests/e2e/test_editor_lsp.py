"""Working from the editor, over stdio with a real client: code lenses and their refresh, the
code actions and the commands behind them, an imported module's error on the script's calling
line, diagnostics again on didOpen (after a run from the CLI), progress as log lines for a
client without work-done progress, and a run cancelled from its progress."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pytest_lsp import ClientServerConfig, LanguageClient

from tests.helpers import SERVER_COMMAND, carried, command, start_session, trust
from tools.rpc_client import LspClient, RpcError

pytestmark = pytest.mark.asyncio(loop_scope="module")

CAPABILITIES = types.ClientCapabilities(  # as eglot: no work-done progress; lenses refresh
    window=types.WindowClientCapabilities(
        work_done_progress=False, show_document=types.ShowDocumentClientCapabilities(True)),
    workspace=types.WorkspaceClientCapabilities(
        apply_edit=False, code_lens=types.CodeLensWorkspaceClientCapabilities(True)))


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workspace = tmp_path_factory.mktemp("editor") / "ws"
    workspace.mkdir()
    (workspace / "labls.toml").write_text(
        '[run]\nkill_grace_sec = 1\n[metric]\nname = "loss"\n')
    trust(workspace)
    write(workspace, "train.py", """
        import helper

        def main():
            helper.step(2)
            print("loss: 0.5")

        if __name__ == "__main__":
            main()
    """)
    write(workspace, "helper.py", """
        def step(n):
            if n > 1:
                raise ValueError("n too big")
    """)
    write(workspace, "lib.py", "def f():\n    return 1\n")
    write(workspace, "good.py", 'if __name__ == "__main__":\n    print("loss: 0.25")\n')
    return workspace


def write(ws: Path, name: str, source: str) -> str:
    (ws / name).write_text(textwrap.dedent(source).lstrip("\n"))
    return name


class Refreshes:
    def __init__(self) -> None:
        self.count = 0
        self.event = asyncio.Event()

    def __call__(self, params: Any) -> None:
        self.count += 1
        self.event.set()


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=SERVER_COMMAND))
async def client(lsp_client: LanguageClient, ws: Path):
    refreshes = Refreshes()
    lsp_client.feature(types.WORKSPACE_CODE_LENS_REFRESH)(refreshes)
    lsp_client.refreshes = refreshes  # type: ignore[attr-defined]
    await start_session(lsp_client, ws, capabilities=CAPABILITIES)
    yield
    await lsp_client.shutdown_session()


def opened(client: LanguageClient, ws: Path, name: str) -> str:
    uri = (ws / name).as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(
        uri=uri, language_id="python", version=1, text=(ws / name).read_text())))
    return uri


async def wait_for(predicate: Any, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def lenses(client: LanguageClient, uri: str) -> list[types.CodeLens]:
    return await client.text_document_code_lens_async(
        types.CodeLensParams(text_document=types.TextDocumentIdentifier(uri)))


async def test_a_runnable_script_has_a_run_lens_and_its_last_run_after(client, ws):
    uri = opened(client, ws, "good.py")
    assert not await lenses(client, opened(client, ws, "lib.py"))  # not runnable
    found = await lenses(client, uri)
    assert found[0].command.title == "▶ Run in labls"
    assert list(found[0].command.arguments) == [{"script": "good.py"}]
    assert found[0].range.start.line == 0  # the __main__ guard's line
    before = await client.code_lens_resolve_async(found[1])
    assert before.command.title == "no labls run yet"
    refreshed = client.refreshes.count
    await command(client, found[0].command.command, found[0].command.arguments[0])
    await wait_for(lambda: client.refreshes.count > refreshed)  # the run ended
    after = await client.code_lens_resolve_async((await lenses(client, uri))[1])
    assert after.command.title.startswith("last: loss = 0.25 (succeeded, "), after.command
    assert after.command.command == "labls.run.showLog"
    shown = await command(client, "labls.run.showLog", after.command.arguments[0])
    assert shown["shown"] is True and client.shown_documents[-1].uri.endswith("/log.txt")
    versus = await client.code_lens_resolve_async((await lenses(client, uri))[2])
    assert versus.command.command == "labls.run.compare"  # its first run: nothing to beat
    assert versus.command.title == "vs baseline: indeterminate", versus.command
    refreshed = client.refreshes.count
    again = await command(client, found[0].command.command, found[0].command.arguments[0])
    await wait_for(lambda: client.refreshes.count > refreshed)  # the second run ended
    versus = await client.code_lens_resolve_async((await lenses(client, uri))[2])
    assert versus.command.title == "vs baseline: +0 (noChange)", versus.command
    compared = await command(client, "labls.run.compare", versus.command.arguments[0])
    assert compared["verdict"] == "noChange" and compared["runId"] == again["runId"]


async def test_test_files_run_as_pytest_modules(client, ws):
    write(ws, "test_thing.py", "def test_one():\n    assert True\n")
    found = await lenses(client, opened(client, ws, "test_thing.py"))
    assert list(found[0].command.arguments) == [
        {"script": "-m pytest", "args": ["-q", "test_thing.py"]}]


async def test_an_imported_modules_error_is_on_the_scripts_calling_line_too(client, ws):
    uri = opened(client, ws, "train.py")
    done = await command(client, "labls.run.start", {"script": "train.py", "wait": True})
    assert done["error"]["kind"] == "exception" and done["error"]["file"] == "helper.py"
    await wait_for(lambda: client.diagnostics.get(uri))
    on_script = [d for d in client.diagnostics[uri] if d.code == "exception"]
    assert len(on_script) == 1 and on_script[0].range.start.line == 3  # helper.step(2)
    assert "raised in helper.py:3" in on_script[0].message
    related = on_script[0].related_information or []
    assert any(r.location.uri.endswith("/helper.py") for r in related)
    on_helper = client.diagnostics[(ws / "helper.py").as_uri()]
    assert [d.range.start.line for d in on_helper if d.code == "exception"] == [2]


async def test_code_actions_on_a_failed_runs_diagnostic(client, ws):
    uri = (ws / "train.py").as_uri()
    diag = next(d for d in client.diagnostics[uri] if d.code == "exception")
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri), range=diag.range,
        context=types.CodeActionContext(diagnostics=[diag])))
    titles = [a.title for a in actions]
    assert all(carried(a).command.startswith("labls.") for a in actions)
    assert titles[:3] == ["Repair with the repair prompt", "Open the run's log",
                          "Compare with the baseline"]
    assert "Run in labls" in titles
    rerun = carried(actions[titles.index("Re-run")])
    assert rerun.command == "labls.run.start" and rerun.arguments == [
        {"script": "train.py", "args": []}]
    repair = carried(actions[0])
    shown = await command(client, repair.command, repair.arguments[0])
    text = Path(shown["path"]).read_text()
    assert shown["shown"] is True and "n too big" in text and "helper.py" in text
    assert client.shown_documents[-1].uri == Path(shown["path"]).as_uri()


async def test_progress_is_log_lines_for_a_client_without_work_done_progress(client, ws):
    write(ws, "slowish.py", 'import time\nprint("loss: 1", flush=True)\ntime.sleep(6)\n')
    before = len(client.log_messages)
    done = await command(client, "labls.run.start", {"script": "slowish.py", "wait": True})
    lines = [m.message for m in client.log_messages[before:] if done["runId"] in m.message]
    assert lines[0].startswith(f"labls run {done['runId']} of slowish.py")
    assert any("/300 s" in line for line in lines[1:-1]), lines  # at least one in between
    assert lines[-1].startswith(f"labls run {done['runId']}: succeeded"), lines


async def test_cancelling_a_runs_progress_cancels_the_run(client, ws):
    write(ws, "forever.py", 'import time\nprint("loss: 1", flush=True)\ntime.sleep(60)\n')
    client.progress_reports.setdefault("tok-1", [])  # the client knows its own token
    started = await command(client, "labls.run.start", {"script": "forever.py"}, token="tok-1")
    await wait_for(lambda: client.progress_reports["tok-1"])  # begun: cancellable
    assert client.progress_reports["tok-1"][0].cancellable is True
    client.protocol.notify(types.WINDOW_WORK_DONE_PROGRESS_CANCEL,
                           types.WorkDoneProgressCancelParams(token="tok-1"))
    async with asyncio.timeout(30):
        while (await command(client, "labls.run.get", {"runId": started["runId"],
                                                       "fields": ["state"]}))["state"] in (
                "queued", "running"):
            await asyncio.sleep(0.1)
    got = await command(client, "labls.run.get", {"runId": started["runId"]})
    assert got["state"] == "cancelled"


async def test_a_cli_run_reaches_the_editor_when_the_script_is_opened(ws, tmp_path):
    """A run from a terminal, then an editor (a fresh server) opening the script: it shows
    that run's diagnostics at once, read from the registry."""
    write(ws, "cli_only.py", 'if __name__ == "__main__":\n    raise KeyError("from the CLI")\n')
    done = subprocess.run([sys.executable, "-m", "labls.server.cli", "run", "cli_only.py"],
                          cwd=ws, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    fresh = pytest_lsp.make_test_lsp_client()
    await fresh.start_io(*SERVER_COMMAND)
    try:
        await start_session(fresh, ws, capabilities=CAPABILITIES)
        uri = opened(fresh, ws, "cli_only.py")
        await wait_for(lambda: fresh.diagnostics.get(uri))
        errors = [d for d in fresh.diagnostics[uri] if d.code == "exception"]
        assert errors and "from the CLI" in errors[0].message and errors[0].range.start.line == 1
    finally:
        await fresh.shutdown_session()
        await fresh.stop()


async def test_a_script_with_unsaved_changes_is_warned_run_as_the_buffer_or_refused(client, ws):
    write(ws, "buffered.py", 'if __name__ == "__main__":\n    print("loss: 1")\n')
    uri = (ws / "buffered.py").as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(
        uri=uri, language_id="python", version=1,
        text='if __name__ == "__main__":\n    print("loss: 2")\n')))  # edited, not saved
    warned = await command(client, "labls.run.start", {"script": "buffered.py", "wait": True})
    assert warned["metrics"] == {"loss": 1.0}  # the file on disk, and it says so
    assert any(w["code"] == "unsaved-buffer" for w in warned["warnings"])
    assert any("unsaved changes" in m.message for m in client.messages)

    def settings(policy: str) -> None:
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
            settings={"labls": {"run": {"kill_grace_sec": 1, "unsaved": policy}}}))

    settings("buffer")
    await command(client, "labls.datasets.list")  # (the notification is handled before this)
    ran = await command(client, "labls.run.start", {"script": "buffered.py", "wait": True})
    assert ran["metrics"] == {"loss": 2.0}, ran
    assert (ws / "buffered.py").read_text().endswith('print("loss: 1")\n')  # disk untouched
    settings("refuse")
    await command(client, "labls.datasets.list")
    with pytest.raises(JsonRpcInvalidParams, match="unsaved changes"):
        await command(client, "labls.run.start", {"script": "buffered.py"})
    settings("warn")


async def test_a_run_from_the_cli_reaches_the_open_server(client, ws):
    """`labls run` in a terminal while the editor is open: its diagnostics arrive on their
    own, through the shared registry, and the lenses are refreshed."""
    write(ws, "terminal.py", 'if __name__ == "__main__":\n    raise KeyError("terminal")\n')
    uri = opened(client, ws, "terminal.py")
    refreshed = client.refreshes.count
    done = subprocess.run([sys.executable, "-m", "labls.server.cli", "run", "terminal.py"],
                          cwd=ws, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    await wait_for(lambda: any(d.code == "exception" and "terminal" in d.message
                               for d in client.diagnostics.get(uri, [])), timeout=30)
    await wait_for(lambda: client.refreshes.count > refreshed, timeout=10)



async def test_a_request_without_the_lsp_shape_is_answered_not_left_waiting(ws):
    """Neovim 0.7 sent code-action diagnostics without `range` and `message`: pygls alone
    logs it and never answers; labls answers -32602 naming the fields, and keeps serving.
    (A raw JSON-RPC client: typed clients cannot send such a request.)"""
    uri = (ws / "good.py").as_uri()
    bad = {"textDocument": {"uri": uri}, "range": {"start": {"line": 0, "character": 0},
                                                   "end": {"line": 0, "character": 0}},
           "context": {"diagnostics": [{"source": "labls", "data": {}}]}}

    def drive() -> None:
        with LspClient(ws) as raw:
            raw.initialize()
            with pytest.raises(RpcError, match=r"does not have the LSP shape.*message"):
                raw.request("textDocument/codeAction", bad, timeout=10)
            assert raw.command("labls.datasets.list")["cacheRoot"]  # still serving

    await asyncio.to_thread(drive)  # (a blocking client: off the module's event loop)
