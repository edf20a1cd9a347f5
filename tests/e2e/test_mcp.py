"""`labls mcp` end to end over stdio with the MCP SDK's own client: the tools and their schemas,
a run started, waited on with progress and read back (record and log resources), refused
arguments as tool errors with the language server's messages, and the server still serving."""

from __future__ import annotations

import contextlib
import json
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

mcp = pytest.importorskip("mcp")

from mcp.client.session import ClientSession  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402

SCRIPT = """
import time
for step in range(3):
    print(f"step={step} loss: {1.0 / (step + 1):.3f}", flush=True)
    time.sleep(0.7)
print("val_bpb: 0.93")
"""


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    (tmp_path / "train.py").write_text(textwrap.dedent(SCRIPT))
    (tmp_path / "my dir").mkdir()
    (tmp_path / "my dir" / "spaced.py").write_text("print('val_bpb: 1.5')\n")
    (tmp_path / "labls.toml").write_text(f'dataset_cache_root = "{tmp_path / "cache"}"\n')
    return tmp_path


async def call(session: ClientSession, name: str, args: dict[str, Any] | None = None,
               **kw: Any) -> Any:
    return await session.call_tool(name, args or {}, **kw)


def structured(result: Any) -> Any:
    assert not result.is_error, result.content
    assert json.loads(result.content[0].text) == result.structured_content  # text, for clients
    return result.structured_content


@contextlib.asynccontextmanager
async def mcp_session(ws: Path) -> AsyncIterator[ClientSession]:
    """`labls mcp` spawned as an agent spawns it, and the SDK's client session on it (entered
    and left in the test's own task, as anyio's scopes require)."""
    params = StdioServerParameters(command=sys.executable,
                                   args=["-m", "labls.server.cli", "mcp", "--workspace", str(ws)],
                                   cwd=str(ws))
    with open(ws.parent / "mcp-stderr.log", "w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), \
                ClientSession(read, write) as client:
            await client.initialize()
            yield client


async def test_tools_are_listed_with_schemas_from_the_params_models(ws) -> None:
    async with mcp_session(ws) as session:
        from labls.lab import params as p

        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert {"datasets_list", "prompt_render", "run_start", "run_wait", "run_get", "run_cancel",
                "run_list", "run_compare", "edit_apply", "experiment_step", "loop_start",
                "loop_get", "loop_stop", "history"} <= set(tools)
        assert tools["run_start"].input_schema == p.json_schema(p.RunStartParams)
        assert tools["run_start"].input_schema["required"] == ["script"]


async def test_a_run_started_waited_on_with_progress_and_read_back(ws) -> None:
    async with mcp_session(ws) as session:
        started = structured(await call(session, "run_start", {"script": "train.py"}))
        assert started["state"] in ("queued", "running")
        seen: list[tuple[float, float | None, str | None]] = []

        async def progress(value: float, total: float | None, message: str | None) -> None:
            seen.append((value, total, message))

        record = structured(await call(session, "run_wait", {"runId": started["runId"],
                                                             "timeoutSec": 60},
                                       progress_callback=progress))
        assert record["state"] == "succeeded", record
        assert record["metrics"]["val_bpb"] == 0.93
        assert seen and all(started["runId"] in (m or "") for _, _, m in seen)
        got = structured(await call(session, "run_get", {"runId": started["runId"]}))
        assert got == record
        log = await session.read_resource(f"labls://runs/{started['runId']}/log")
        assert "val_bpb: 0.93" in log.contents[0].text
        again = await session.read_resource(f"labls://runs/{started['runId']}/record")
        assert json.loads(again.contents[0].text)["runId"] == started["runId"]
        listed = structured(await call(session, "run_list", {"limit": 5}))
        assert listed["runs"][0]["runId"] == started["runId"]


async def test_bad_arguments_are_tool_errors_with_the_servers_messages(ws) -> None:
    async with mcp_session(ws) as session:
        cases = [
            ("run_get", {"runId": "nope"}, "labls.run.get: field 'runId' names no run: 'nope'"),
            ("run_start", {"script": "../etc/passwd"}, "inside the workspace"),
            ("run_start", {"script": 5}, "labls.run.start"),
            ("run_start", {"script": "train.py", "bogus": 1}, "bogus"),
            ("run_list", {"limit": 0}, "labls.run.list: field 'limit' must be 1..10000"),
            ("run_wait", {"runId": "nope"}, "names no run"),
            ("no_such_tool", {}, "no tool"),
        ]
        for name, args, message in cases:
            result = await call(session, name, args)
            assert result.is_error, (name, args)
            assert message in result.content[0].text, (name, result.content[0].text)
        assert "datasets" in structured(await call(session, "datasets_list"))  # still serving


async def test_a_path_with_a_space_runs_that_file(ws) -> None:
    async with mcp_session(ws) as session:
        started = structured(await call(session, "run_start", {"script": "my dir/spaced.py"}))
        record = structured(await call(session, "run_wait", {"runId": started["runId"]}))
        assert record["state"] == "succeeded" and record["metrics"]["val_bpb"] == 1.5, record


async def test_an_edit_applies_on_disk_and_a_mismatch_is_data(ws) -> None:
    async with mcp_session(ws) as session:
        edit = {"format": "whole", "path": "train.py", "text": "print('val_bpb: 0.5')\n"}
        assert structured(await call(session, "edit_apply", {**edit, "dryRun": True}))["ok"]
        assert "0.5" not in (ws / "train.py").read_text()
        done = structured(await call(session, "edit_apply", edit))
        assert done["ok"] and done["via"] == "disk"
        assert (ws / "train.py").read_text() == "print('val_bpb: 0.5')\n"
        block = "train.py\n<<<<<<< SEARCH\nnot in the file\n=======\nx\n>>>>>>> REPLACE\n"
        missed = structured(await call(session, "edit_apply", {"format": "searchReplace",
                                                               "text": block}))
        assert missed["ok"] is False and missed["failures"]
        assert (ws / "train.py").read_text() == "print('val_bpb: 0.5')\n"


INSPECTOR = Path(__file__).resolve().parents[2] / ".tools" / "mcp-inspector" / "node_modules" / (
    ".bin/mcp-inspector")


def inspector(ws: Path, *args: str) -> Any:
    """One call of the MCP Inspector's CLI (an independent client, in Node) on `labls mcp`."""
    import subprocess

    done = subprocess.run([str(INSPECTOR), "--cli", sys.executable, "-m", "labls.server.cli",
                           "mcp", "--workspace", str(ws), *args], capture_output=True, text=True,
                          timeout=180, cwd=ws)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(not INSPECTOR.exists(), reason="the MCP Inspector is not installed (npm is "
                    "missing: `make setup` installs it where npm exists)")
def test_the_mcp_inspector_cli_lists_calls_and_gets_tool_errors(ws) -> None:
    from labls.lab import params as p

    listed = inspector(ws, "--method", "tools/list")
    tools = {t["name"]: t for t in listed["tools"]}
    assert tools["run_get"]["inputSchema"] == p.json_schema(p.RunGetParams)
    done = inspector(ws, "--method", "tools/call", "--tool-name", "run_start",
                     "--tool-arg", "script=train.py", "--tool-arg", "wait=true")
    assert done["isError"] is False, done
    record = done["structuredContent"]
    assert record["state"] == "succeeded" and record["metrics"]["val_bpb"] == 0.93, record
    again = inspector(ws, "--method", "tools/call", "--tool-name", "run_get",
                      "--tool-arg", f"runId={record['runId']}")  # another process: the registry
    assert again["structuredContent"]["metrics"] == record["metrics"]
    refused = inspector(ws, "--method", "tools/call", "--tool-name", "run_get",
                        "--tool-arg", "runId=nope")
    assert refused["isError"] is True
    assert refused["content"][0]["text"] == "labls.run.get: field 'runId' names no run: 'nope'"
