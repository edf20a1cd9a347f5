"""A broken state dir (a corrupted registry, read-only, full) is a clear error naming the path
on every command; the server keeps serving, and a waiting caller always gets an answer."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from labls.sandbox.config import Config, merge
from labls.sandbox.engine import Engine, RunRequest
from tests.e2e.test_framing import _started

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs over the state dir")


def _command(client, request_id: int, name: str, args: dict) -> dict:
    client.send({"id": request_id, "method": "workspace/executeCommand",
                 "params": {"command": name, "arguments": [args]}})
    return client.answer(request_id, timeout=60)


def _every_command_names(workspace: Path, wanted: str) -> None:
    (workspace / "t.py").write_text('print("val_bpb: 1")\n')
    client = _started(workspace)
    try:
        for i, (name, args) in enumerate([
                ("labls.run.list", {}), ("labls.run.start", {"script": "t.py", "wait": True}),
                ("labls.run.get", {"runId": "x"}), ("labls.run.compare", {"runId": "x"})]):
            answer = _command(client, 10 + i, name, args)
            assert "error" in answer, answer
            assert wanted in answer["error"]["message"], answer
            assert "initialized" not in answer["error"]["message"]
        served = _command(client, 20, "labls.datasets.list", {})  # still serving
        assert "result" in served
    finally:
        client.close()


def test_a_corrupted_registry_is_named_on_every_command(tmp_path: Path) -> None:
    state = tmp_path / ".labls"
    state.mkdir()
    (state / "labls.db").write_bytes(os.urandom(8192))
    _every_command_names(tmp_path, str(state / "labls.db"))


@pytest.fixture
def tmpfs_state(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / ".labls"
    state.mkdir()
    yield state
    subprocess.run(["umount", "-l", str(state)], check=False, capture_output=True)


@needs_root
def test_a_read_only_state_dir_is_named_on_every_command(tmp_path: Path, tmpfs_state) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "labls-test", str(tmpfs_state)],
                   check=True)
    _every_command_names(tmp_path, str(tmpfs_state))


@needs_root
def test_a_full_state_dir_still_answers_wait_with_the_record(tmp_path: Path,
                                                             tmpfs_state) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "labls-test", str(tmpfs_state)],
                   check=True)
    (tmp_path / "t.py").write_text(
        "import os\nprint('val_bpb: 1')\n")
    cfg, problems = merge(Config(), {"run": {"kill_grace_sec": 1}})
    assert not problems
    engine = Engine(tmp_path, cfg)
    try:
        engine.registry.recent(1)  # opened while there is room
        filler = tmpfs_state / "filler"
        with open(filler, "wb", buffering=0) as f, pytest.raises(OSError):
            while True:
                f.write(b"x" * 65536)
        started = engine.start(RunRequest("t.py", timeout_sec=30))
        final = engine.wait(started.run_id, 60)
        assert final is not None and final.final
        assert final.state == "failed" and final.error is not None
        assert final.error["kind"] == "stateDir" and str(tmpfs_state) in final.error["message"]
        assert any(w["code"] == "state-dir" and str(tmpfs_state) in w["message"]
                   for w in final.warnings), final
    finally:
        engine.close()
