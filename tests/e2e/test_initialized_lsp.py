"""What reaches the server while it opens its runs after `initialized` (off the loop): the
editor's settings sent at once and the first command are not lost or refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from tests.helpers import SERVER_COMMAND, command, start_session, trust

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workspace = tmp_path_factory.mktemp("initialized") / "ws"
    workspace.mkdir()
    (workspace / "labls.toml").write_text(
        f'dataset_cache_root = "{workspace / "none"}"\n[run]\ntimeout_sec = 120\n')
    (workspace / "quick.py").write_text('print("loss: 0.5")\n')
    trust(workspace)
    return workspace


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=SERVER_COMMAND))
async def client(lsp_client: LanguageClient, ws: Path):
    await start_session(lsp_client, ws)
    # sent before the runs are open (as Neovim sends its settings right after `initialized`)
    lsp_client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"labls": {"run": {"timeoutSec": 33}}}))
    yield
    await lsp_client.shutdown_session()


async def test_settings_sent_while_the_runs_open_reach_the_first_run(client, ws):
    run = await command(client, "labls.run.start", {"script": "quick.py", "wait": True})
    assert run["state"] == "succeeded" and run["metrics"] == {"loss": 0.5}
    assert run["timeoutSec"] == 33  # the editor's setting, not labls.toml's 120
