"""The run's work folder: a copy-on-write view of the workspace (root engine, hardened bwrap),
and the copying fallback; what a run sees, where its writes go, what it costs on disk."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from labls.sandbox import isolation

pytestmark = pytest.mark.skipif(not isolation.privileged(),
                                reason="the copy-on-write view is a root engine's")

PROBE = """
import json, os
seen = {p: os.path.exists(p) for p in (
    "data/train.bin", "notes.txt", "ckpt/model.pt", ".git", ".git/config", ".labls", ".env",
    "keys/server.pem", "deploy/id_ed25519", "private/plan.md", "id_utils.py")}
print("SEEN " + json.dumps(seen))
with open("notes.txt", "a") as f:
    f.write("the run's line\\n")
os.remove("id_utils.py")
os.makedirs("outputs", exist_ok=True)
open("outputs/pred.txt", "w").write("42\\n")
print("val_bpb: 0.5")
"""


def git(ws: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(ws), *args], check=True, capture_output=True)


@pytest.fixture
def heavy(lab):
    """A git workspace with ignored data, an untracked checkpoint and secrets of every kind."""
    ws: Path = lab.ws
    (ws / ".gitignore").write_text("data/\nckpt/\n.env\n")
    for rel, text in {"notes.txt": "the user's notes\n", "id_utils.py": "X = 1\n",
                      "keys/server.pem": "-----BEGIN KEY-----\n",
                      "deploy/id_ed25519": "ssh key\n", "private/plan.md": "hide me\n",
                      ".env": "OPENAI_API_KEY=sk-123\n"}.items():
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_text(text)
    (ws / "data").mkdir()
    (ws / "data" / "train.bin").write_bytes(b"\0" * 1024)
    (ws / "ckpt").mkdir()
    with open(ws / "ckpt" / "model.pt", "wb") as f:
        f.truncate(64 * 1024 * 1024)  # 64 MB, sparse: the size a copy would have to write
    git(ws, "init", "-q")
    git(ws, "add", ".")
    git(ws, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    return ws


def seen_by(record) -> dict[str, bool]:
    line = next(ln for ln in record.log_tail.splitlines() if ln.startswith("SEEN "))
    return json.loads(line[5:])


def test_the_run_sees_the_workspace_minus_secrets_and_writes_only_its_layer(lab, heavy) -> None:
    def files() -> dict[Path, bytes]:
        return {p: p.read_bytes() for p in heavy.rglob("*") if p.is_file() and p.name != "exp.py"
                and not {".git", ".labls"} & set(p.parts)}

    before = files()
    record = lab.run(PROBE, hide=["private"])
    assert record.state == "succeeded", (record.error, record.log_tail)
    assert record.sandbox["workFolder"] == "overlay"
    seen = seen_by(record)
    # the workspace as it is: ignored data and an untracked checkpoint included
    assert seen["data/train.bin"] and seen["ckpt/model.pt"] and seen["notes.txt"]
    assert seen["id_utils.py"]  # a name like a key's is not a key
    for hidden in (".git", ".git/config", ".labls", ".env", "keys/server.pem",
                   "deploy/id_ed25519", "private/plan.md"):
        assert not seen[hidden], hidden
    # the workspace is never changed ...
    assert files() == before
    # ... the run's folder holds exactly what it wrote, and not the 64 MB it only could read
    work = Path(record.log_path).parent / "work"
    assert (work / "notes.txt").read_text() == "the user's notes\nthe run's line\n"
    assert (work / "outputs" / "pred.txt").read_text() == "42\n"
    assert not (work / "ckpt").exists() and not (work / "data").exists()
    run_dir = Path(record.log_path).parent
    used = int(subprocess.run(["du", "-sk", str(run_dir)], capture_output=True, text=True,
                              check=True).stdout.split()[0])
    assert used < 1024, used  # KB: under 1 MB beyond the run's own writes
    assert "labls-work" not in Path("/proc/self/mountinfo").read_text()  # unmounted


def test_the_copy_fallback_hides_the_same_secrets_and_copies_the_checkpoint_not(lab,
                                                                                heavy) -> None:
    record = lab.run(PROBE, isolation="unshare", hide=["private"])
    assert record.state == "succeeded", (record.error, record.log_tail)
    assert record.sandbox["workFolder"].startswith("copy (the unshare isolation")
    seen = seen_by(record)
    assert seen["notes.txt"] and not seen["data/train.bin"]  # the copy leaves ignored files out
    for hidden in (".git", ".env", "keys/server.pem", "deploy/id_ed25519", "private/plan.md"):
        assert not seen[hidden], hidden


def test_a_workspace_results_file_from_the_future_is_not_the_runs(lab, heavy) -> None:
    results = heavy / "results.json"
    results.write_text('{"metrics": {"val_bpb": 0.01}}')
    future = os.stat(results).st_mtime + 3600
    os.utime(results, (future, future))
    for isolation_kind in ("auto", "unshare"):  # the view, and the copy fallback
        record = lab.run("print('val_bpb: 0.9')\n", isolation=isolation_kind)
        assert record.state == "succeeded", record.error
        assert record.metrics["val_bpb"] == 0.9 and record.metrics_source == "stdout", (
            isolation_kind, record.metrics_source)
    # positive control: a results.json the run writes does count
    record = lab.run("open('results.json', 'w').write('{\"metrics\": {\"val_bpb\": 0.3}}')\n")
    assert record.metrics["val_bpb"] == 0.3 and record.metrics_source == "resultsFile"


def test_a_view_that_cannot_be_mounted_falls_back_to_a_copy_and_says_why(lab, heavy,
                                                                         monkeypatch) -> None:
    from labls.sandbox import engine

    def refused(*args: object, **kw: object) -> None:
        raise PermissionError(1, "mount refused here")

    monkeypatch.setattr(engine, "WorkView", refused)
    record = lab.run(PROBE, hide=["private"])
    assert record.state == "succeeded", (record.error, record.log_tail)
    assert record.sandbox["workFolder"].startswith("copy (no copy-on-write view:")
    assert "mount refused here" in record.sandbox["workFolder"]
    seen = seen_by(record)
    assert seen["notes.txt"] and not seen[".env"] and not seen["keys/server.pem"]


def test_a_new_engine_sweeps_only_the_views_no_live_process_owns(tmp_path: Path) -> None:
    """A second labls (`labls run` beside an editor's server) sweeps the views an engine
    killed left mounted; a view whose run folder names a live owner stays mounted."""
    from labls.sandbox.observe import sweep_stale_views

    state = tmp_path / "state"
    with subprocess.Popen(["sleep", "60"]) as other:  # another labls process, still running
        start = Path(f"/proc/{other.pid}/stat").read_bytes()
        start_field = start[start.rfind(b")") + 2:].split()[19].decode()
        points = {}
        for run_id, owner in (("live", f"{other.pid} {start_field}"), ("dead", "999999999 1")):
            point = state / "runs" / run_id / "work"
            point.mkdir(parents=True)
            (point.parent / "owner").write_text(owner)
            subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(point)], check=True)
            points[run_id] = point
        try:
            assert sweep_stale_views(state) == 1
            assert os.path.ismount(points["live"])
            assert not os.path.ismount(points["dead"])  # the control: a dead owner's is swept
        finally:
            other.kill()
            for point in points.values():
                subprocess.run(["umount", "-l", str(point)], capture_output=True)
