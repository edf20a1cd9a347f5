"""`labls loop` from the command line (clone, prepare, iterate) and a loop resuming after its
server was killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fakellm import FakeLLM
from tests.helpers import trust
from tools.rpc_client import LspClient

pytest.importorskip("aider")
TRAIN = ("import os, time\nLR = 0.1\ntime.sleep(float(os.environ.get('SLOW', '0')))\n"
         "data = open(os.environ['LABLS_DATASET_ROOT'] + '/prepared.txt').read()\n"
         "print(f'loss: {abs(LR - 0.3) + 1.0:.4f}')\n")


def step(old: str, new: str) -> str:
    return (f"HYPOTHESIS: LR from {old} to {new}\n\ntrain.py\n```python\n<<<<<<< SEARCH\n"
            f"LR = {old}\n=======\nLR = {new}\n>>>>>>> REPLACE\n```\n")


def make_repo(path: Path, cache: Path, extra_toml: str = "") -> Path:
    path.mkdir(parents=True)
    (path / "train.py").write_text(TRAIN)
    (path / "prepare.py").write_text(
        "import os\nopen(os.environ['LABLS_DATASET_ROOT'] + '/prepared.txt', 'w').write('ok')\n")
    (path / "program.md").write_text("Minimise loss.\n")
    (path / "labls.toml").write_text(
        f'dataset_cache_root = "{cache}"\n[metric]\nname = "loss"\n'
        f'[loop]\nmodel = "openai/labls-test"\n{extra_toml}')
    for args in (["init", "-q"], ["add", "."],
                 ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start"]):
        subprocess.run(["git", "-C", str(path), *args], check=True)
    return path


def llm_env(server: FakeLLM, **extra: str) -> dict[str, str]:
    return {**os.environ, "OPENAI_API_BASE": server.base_url, "OPENAI_API_KEY": "labls-test",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True", **extra}


def test_cli_loop_clones_prepares_and_iterates(tmp_path: Path, user_config_home: Path) -> None:
    """The clone's own labls.toml is untrusted: what it tries to loosen (the network, for its
    prepare script too) is refused with a warning; the user's own config file decides."""
    cache = tmp_path / "cache"
    cache.mkdir()
    user_config_home.mkdir(parents=True)
    (user_config_home / "config.toml").write_text(
        f'dataset_cache_root = "{cache}"\n[metric]\nname = "loss"\n'
        '[loop]\nmodel = "openai/labls-test"\n')
    source = make_repo(tmp_path / "upstream", cache,
                       extra_toml='[run]\nnetwork = "host"\nisolation = "none"\n')
    with FakeLLM([step("0.1", "0.2"), step("0.2", "0.9")]) as llm:
        done = subprocess.run(
            [sys.executable, "-m", "labls.server.cli", "loop", "--from", str(source), "--into",
             str(tmp_path / "work"), "--prepare", "prepare.py", "--iterations", "2"],
            cwd=tmp_path, env=llm_env(llm), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "`run.network` = 'host' would loosen" in done.stderr
    assert "labls.toml is not trusted" in done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("iteration 1: keep") and lines[1].startswith("iteration 2: discard")
    assert (cache / "prepared.txt").read_text() == "ok"  # prepare may write the cache
    assert "LR = 0.2" in (tmp_path / "work" / "train.py").read_text()
    assert "LR = 0.1" in (source / "train.py").read_text()  # the source is untouched


def test_loop_resumes_after_the_server_is_killed(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "prepared.txt").write_text("ok")
    ws = make_repo(tmp_path / "ws", cache, extra_toml='[run]\nenv = ["SLOW"]\n')
    trust(ws)
    replies = [step("0.1", "0.2"), step("0.2", "0.25"), step("0.25", "0.28")]
    with FakeLLM(replies) as llm:
        env = llm_env(llm, SLOW="1.5")
        client = LspClient(ws, env=env)
        client.initialize()
        loop_id = client.command("labls.loop.start", {"iterations": 3})["loopId"]
        deadline = time.monotonic() + 120
        while len(client.command("labls.loop.get", {"loopId": loop_id})["iterations"]) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # inside the second iteration: its edit is on disk and its run going
        while not any("0.25" in r["label"] for r in client.command(
                "labls.run.list", {"state": "running"})["runs"]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        client.proc.send_signal(signal.SIGKILL)
        client.proc.wait()
        client.release()
        with LspClient(ws, env=env) as again:
            again.initialize()
            while (state := again.command("labls.loop.get", {"loopId": loop_id}))[
                    "state"] == "running":
                assert time.monotonic() < deadline + 120
                time.sleep(0.2)
    assert state["state"] == "finished", state
    assert len(state["iterations"]) == 3
    assert state["iterations"][0]["verdict"] == "keep"
    status = subprocess.run(["git", "-C", str(ws), "status", "--porcelain",
                             "--untracked-files=no"], capture_output=True, text=True).stdout
    assert status == ""
    from labls.lab.ledger import Ledger
    from labls.sandbox.registry import Registry

    ledger = Ledger(Registry(ws / ".labls" / "labls.db")).rows()
    killed = [e for e in ledger if e["reason"].startswith("interrupted")]
    assert len(killed) == 1 and killed[0]["status"] == "crash"  # the killed step, undone
    assert "LR = 0.25" in killed[0]["diff"]
