"""A workspace with no config at all gets the documented defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_lsp
from pytest_lsp import ClientServerConfig, LanguageClient

from tests.helpers import SERVER_COMMAND, command, start_session

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=SERVER_COMMAND))
async def client(lsp_client: LanguageClient, tmp_path_factory: pytest.TempPathFactory):
    workspace: Path = tmp_path_factory.mktemp("plain")
    # a pyproject.toml whose [tool.labls] omits dataset_cache_root
    (workspace / "pyproject.toml").write_text(
        '[project]\nname = "x"\n[tool.labls.run]\nmemory_mb = 512\n'
    )
    await start_session(lsp_client, workspace)
    yield
    await lsp_client.shutdown_session()


async def test_default_root_when_config_omits_it(client: LanguageClient):
    result = await command(client, "labls.datasets.list")
    assert result["cacheRoot"] == "/opt/datasets"
    if not Path("/opt/datasets").exists():
        assert "does not exist" in result["error"]
        assert not any(d["present"] for d in result["datasets"])
    text = (await command(client, "labls.prompt.render",
                          {"template": "network_disabled_guidance"}))["text"]
    assert '"/opt/datasets"' in text
    assert not client.messages  # no config problem reported for a valid file
