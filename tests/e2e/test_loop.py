"""The autonomous loop end to end over LSP: aider drives a canned local model, three iterations
of real edits, real sandboxed runs and real git, with one crash repaired."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from pathlib import Path

import pytest
import pytest_lsp
from pygls.exceptions import JsonRpcInvalidParams
from pytest_lsp import ClientServerConfig, LanguageClient

from tests.fakellm import FakeLLM
from tests.helpers import SERVER_COMMAND, command, start_session, trust

pytest.importorskip("aider")
pytestmark = pytest.mark.asyncio(loop_scope="module")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT = free_port()
ENV = {"OPENAI_API_BASE": f"http://127.0.0.1:{PORT}/v1", "OPENAI_API_KEY": "labls-test",
       "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PATH": "/usr/local/bin:/usr/bin:/bin",
       "XDG_CONFIG_HOME": os.environ["XDG_CONFIG_HOME"]}  # the tests' own (conftest.py)


def block(old: str, new: str) -> str:
    return f"train.py\n```python\n<<<<<<< SEARCH\n{old}\n=======\n{new}\n>>>>>>> REPLACE\n```\n"


REPLIES = [
    "HYPOTHESIS: a larger learning rate, 0.25, gets closer to the optimum\n\n"
    + block("LR = 0.1", "LR = 0.25"),
    "HYPOTHESIS: push the learning rate to 0.28\n\n" + block("LR = 0.25", "LR = 0.28 +"),
    "The trailing plus is a syntax error; remove it.\n\n" + block("LR = 0.28 +", "LR = 0.28"),
    "HYPOTHESIS: a learning rate of 1.0 trains faster\n\n" + block("LR = 0.28", "LR = 1.0"),
]


@pytest.fixture(scope="module")
def llm():
    with FakeLLM(REPLIES, port=PORT) as server:
        yield server


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("loop")
    (ws / "train.py").write_text(
        "LR = 0.1\nloss = abs(LR - 0.3) + 1.0\nprint(f'loss: {loss:.4f}')\n")
    (ws / "program.md").write_text("Minimise `loss` by tuning LR in train.py.\n")
    (ws / "labls.toml").write_text('[metric]\nname = "loss"\nmin_delta = 0.01\n'
                                   '[loop]\nmodel = "openai/labls-test"\nrepair_attempts = 1\n')
    trust(ws)
    for args in (["init", "-q"], ["add", "."],
                 ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start"]):
        subprocess.run(["git", "-C", str(ws), *args], check=True)
    return ws


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=SERVER_COMMAND,
                                                              server_env=ENV))
async def client(lsp_client: LanguageClient, ws: Path, llm: FakeLLM):
    await start_session(lsp_client, ws)
    yield
    await lsp_client.shutdown_session()


def git(ws: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(ws), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


async def test_three_iterations_keep_repair_discard(client, ws: Path, llm: FakeLLM):
    loop_id = (await command(client, "labls.loop.start", {"iterations": 3}))["loopId"]
    async with asyncio.timeout(180):
        while (state := await command(client, "labls.loop.get", {"loopId": loop_id}))[
                "state"] == "running":
            await asyncio.sleep(0.2)
    assert state["state"] == "finished", state
    its = state["iterations"]
    assert [it["verdict"] for it in its] == ["keep", "keep", "discard"], its
    assert its[0]["hypothesis"].startswith("a larger learning rate")
    assert its[1]["repairs"][0]["verdict"] == "crash" and its[1]["metric"] == pytest.approx(1.02)
    assert its[2]["discardedRef"].startswith("refs/labls/discarded/")
    assert len(llm.requests) == 4
    first_prompt = str(llm.requests[0]["messages"])
    assert "Minimise `loss` by tuning LR" in first_prompt and "keep" in str(llm.requests[1])
    assert "SyntaxError" in str(llm.requests[2]["messages"])  # the repair prompt
    assert "LR = 0.28\n" in (ws / "train.py").read_text()
    assert git(ws, "status", "--porcelain", "--untracked-files=no") == ""
    subjects = git(ws, "log", "--format=%s").splitlines()
    assert subjects[:2] == ["labls: push the learning rate to 0.28 (repair 1)",
                            "labls: a larger learning rate, 0.25, gets closer to the optimum"]
    refs = git(ws, "for-each-ref", "--format=%(refname)", "refs/labls/discarded").splitlines()
    assert len(refs) == 2  # the crash and the discard: no experiment's code is lost


async def test_unknown_loop_and_bad_arguments(client):
    with pytest.raises(JsonRpcInvalidParams, match="names no loop"):
        await command(client, "labls.loop.get", {"loopId": "loop-nope"})
    with pytest.raises(JsonRpcInvalidParams, match="iterations"):
        await command(client, "labls.loop.start", {"iterations": 0})
