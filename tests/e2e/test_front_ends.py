"""One workspace, one script, three front-ends (the language server, `labls mcp`, the CLI): the
same lab core gives the same record, whichever asked; and a run made by one is read by the
others (the registry is shared)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tools.rpc_client import LspClient

SCRIPT = """
print("DATASET_USED: none", flush=True)
for seed in range(2):
    print(f"PER_SEED condition=bn seed={seed} accuracy: {0.9 + seed / 100:.2f}")
print("val_bpb: 0.875")
"""
# what depends on the run itself, not on who asked for it
VOLATILE = {"runId", "createdAt", "startedAt", "finishedAt", "durationSec", "logPath",
            "resultsPath", "sandbox", "label"}


def same_parts(record: dict[str, Any]) -> dict[str, Any]:
    kept = {k: v for k, v in record.items() if k not in VOLATILE}
    kept["provenance"] = {k: v for k, v in record["provenance"].items() if k != "note"}
    return kept


def by_lsp(ws: Path) -> dict[str, Any]:
    with LspClient(ws) as client:
        client.initialize()
        record: dict[str, Any] = client.command("labls.run.start",
                                                {"script": "exp.py", "wait": True})
        return record


def by_mcp(ws: Path) -> dict[str, Any]:
    pytest.importorskip("mcp")
    from tests.e2e.test_mcp import mcp_session

    async def go() -> dict[str, Any]:
        async with mcp_session(ws) as session:
            result = await session.call_tool("run_start", {"script": "exp.py", "wait": True})
            assert not result.is_error, result.content
            return dict(result.structured_content)

    return asyncio.run(go())


def by_cli(ws: Path) -> dict[str, Any]:
    cli = [sys.executable, "-m", "labls.server.cli"]
    done = subprocess.run([*cli, "run", "exp.py"], cwd=ws, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    shown = subprocess.run([*cli, "show", "last", "--json"], cwd=ws, capture_output=True,
                           text=True, timeout=60)
    record: dict[str, Any] = json.loads(shown.stdout)
    return record


def test_three_front_ends_give_the_same_record(tmp_path: Path) -> None:
    (tmp_path / "exp.py").write_text(textwrap.dedent(SCRIPT))
    records = {"lsp": by_lsp(tmp_path), "mcp": by_mcp(tmp_path), "cli": by_cli(tmp_path)}
    assert records["lsp"]["state"] == "succeeded", records["lsp"]
    assert records["lsp"]["metrics"]["bn/1/accuracy"] == 0.91
    parts = {name: same_parts(r) for name, r in records.items()}
    assert parts["mcp"] == parts["lsp"]
    assert parts["cli"] == parts["lsp"]
    assert len({r["runId"] for r in records.values()}) == 3
    # each front-end reads the others' runs: the CLI lists all three
    listed = subprocess.run([sys.executable, "-m", "labls.server.cli", "runs", "--json"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert {json.loads(line)["runId"] for line in listed.stdout.splitlines()} == {
        r["runId"] for r in records.values()}
