"""The language server runs an untrusted labls.toml with its loosening keys skipped, says so in a
message, and applies it once trusted; a re-edit after trust is untrusted again."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from tests.helpers import SERVER_COMMAND, command, start_session, trust

pytestmark = pytest.mark.asyncio(loop_scope="module")

LOOSE = '[run]\nisolation = "unshare"\nkill_grace_sec = 1\n'


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("trust")
    (ws / "labls.toml").write_text(LOOSE)
    (ws / "quick.py").write_text("print('loss: 1.0')\n")
    return ws


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=SERVER_COMMAND))
async def client(lsp_client: LanguageClient, ws: Path):
    await start_session(lsp_client, ws)
    yield
    await lsp_client.shutdown_session()


async def saved(client: LanguageClient, ws: Path) -> list[str]:
    """Tell the server labls.toml was saved; the messages it shows in answer."""
    before = len(client.messages)
    client.text_document_did_save(types.DidSaveTextDocumentParams(
        text_document=types.TextDocumentIdentifier(uri=(ws / "labls.toml").as_uri())))
    await command(client, "labls.datasets.list")  # answered after the notification is handled
    return [m.message for m in client.messages[before:]]


async def isolation_of_a_run(client: LanguageClient) -> str:
    record = await command(client, "labls.run.start", {"script": "quick.py", "wait": True})
    assert record["state"] == "succeeded", record
    return str(record["isolation"])


async def test_untrusted_then_trusted_then_changed(client: LanguageClient, ws: Path):
    await command(client, "labls.datasets.list")  # after `initialized`, whose config it shows
    shown = [m.message for m in client.messages]
    assert any("run.isolation" in m and "not trusted" in m and "labls trust" in m
               for m in shown), shown
    assert await isolation_of_a_run(client) == "bwrap"  # the weaker sandbox was not applied

    trust(ws)  # positive control: the user trusts the file as it reads, in a terminal
    before = len(client.messages)
    assert await isolation_of_a_run(client) == "unshare"  # counted at the next command
    assert len(client.messages) == before  # and nothing to warn about any more

    (ws / "labls.toml").write_text(LOOSE + '[metric]\nname = "loss"\n')
    messages = await saved(client, ws)
    assert any("changed since you trusted it" in m for m in messages), messages
    assert await isolation_of_a_run(client) == "bwrap"
