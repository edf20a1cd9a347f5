"""Server lifecycle: shutdown/exit, a closed stdin and a killed server never leave runs behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools.rpc_client import LspClient, RpcError


def alive(marker: str) -> bool:
    return bool(subprocess.run(["pgrep", "-f", marker], capture_output=True).stdout.strip())


def gone_within(marker: str, seconds: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if not alive(marker):
            return time.monotonic() - t0
        time.sleep(0.05)
    return None


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    (tmp_path / "labls.toml").write_text('[run]\nkill_grace_sec = 3\n')
    (tmp_path / "quick.py").write_text("print('val_bpb: 1.0')\n")
    return tmp_path


def start_long_run(client: LspClient, workspace: Path, marker: str) -> str:
    # the marker is a real argument, so it shows in /proc/<pid>/cmdline for pgrep
    (workspace / "long.py").write_text(
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)  # makes the grace period count\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)',\n"
        "                  sys.argv[1] + '-child'])\n"
        "print('a: 1', flush=True)\n"
        "time.sleep(600)\n")
    run_id = client.command("labls.run.start", {"script": "long.py", "args": [marker]})["runId"]
    deadline = time.monotonic() + 15
    while client.command("labls.run.get", {"runId": run_id})["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    while not alive(marker + "-child"):
        assert time.monotonic() < deadline, "the run's child never started"
        time.sleep(0.05)
    assert alive(marker)
    return run_id


def test_shutdown_and_exit_stop_every_run(workspace: Path) -> None:
    marker = f"labls-life-exit-{os.getpid()}"
    client = LspClient(workspace)
    client.initialize()
    quick = client.command("labls.run.start", {"script": "quick.py", "wait": True})
    run_id = start_long_run(client, workspace, marker)
    t0 = time.monotonic()
    client.close()  # shutdown, then exit
    assert gone_within(marker, 5.0 - (time.monotonic() - t0)) is not None
    with LspClient(workspace) as again:
        again.initialize()
        assert again.command("labls.run.get", {"runId": run_id})["state"] == "cancelled"
        assert again.command("labls.run.get", {"runId": quick["runId"]})["metrics"] == {
            "val_bpb": 1.0}


def test_closed_stdin_stops_every_run(workspace: Path) -> None:
    marker = f"labls-life-stdin-{os.getpid()}"
    client = LspClient(workspace)
    client.initialize()
    run_id = start_long_run(client, workspace, marker)
    assert client.proc.stdin is not None
    client.proc.stdin.close()
    assert gone_within(marker, 5.0) is not None
    client.proc.wait(timeout=10)
    client.release()
    with LspClient(workspace) as again:
        again.initialize()
        assert again.command("labls.run.get", {"runId": run_id})["state"] == "cancelled"


def test_killed_server_leaves_runs_interrupted(workspace: Path) -> None:
    marker = f"labls-life-kill-{os.getpid()}"
    client = LspClient(workspace)
    client.initialize()
    quick = client.command("labls.run.start", {"script": "quick.py", "wait": True})
    run_id = start_long_run(client, workspace, marker)
    client.proc.send_signal(signal.SIGKILL)
    client.proc.wait()
    client.release()
    assert gone_within(marker, 5.0) is not None  # bwrap --die-with-parent + PID namespace
    with LspClient(workspace) as again:
        again.initialize()
        runs = again.command("labls.run.list", {"limit": 5})["runs"]
        assert [(r["runId"], r["state"]) for r in runs] == [
            (run_id, "interrupted"), (quick["runId"], "succeeded")]
        assert runs[1]["metrics"] == {"val_bpb": 1.0}


def test_client_fails_fast_when_the_server_dies(tmp_path: Path) -> None:
    client = LspClient(tmp_path, command=[sys.executable, "-c", "import sys; sys.exit(3)"])
    t0 = time.monotonic()
    with pytest.raises(RpcError, match="exited"):
        client.initialize()
    assert time.monotonic() - t0 < 10
    client.proc.wait(timeout=10)
    client.release()


def test_malformed_json_rpc_is_answered_and_the_server_keeps_serving(tmp_path: Path) -> None:
    with LspClient(tmp_path) as client:
        client.initialize()
        assert client.proc.stdin is not None
        for body in (b"{this is not json", b'{"jsonrpc": "2.0", "id": 99, "method": 5}',
                     b'{"jsonrpc": "2.0", "id": 98, "method": "workspace/executeCommand", '
                     b'"params": {"command": "labls.run.get", "arguments": "nope"}}'):
            client.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        client.proc.stdin.flush()
        with pytest.raises(RpcError, match=r"-32602.*script"):
            client.command("labls.run.start", {})
        assert client.command("labls.datasets.list")["cacheRoot"] == "/opt/datasets"
        assert client.proc.poll() is None
