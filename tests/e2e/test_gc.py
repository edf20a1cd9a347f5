"""Run folders have a lifecycle: `run.keep` prunes after each run, `labls gc` shows and frees."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from labls.lab.ledger import Ledger
from tests.helpers import trust


def folders(ws: Path) -> dict[str, set[str]]:
    runs = ws / ".labls" / "runs"
    return {d.name: {p.name for p in d.iterdir()} for d in sorted(runs.iterdir())}


def test_run_keep_prunes_old_folders_but_keeps_logs_and_kept_experiments(lab) -> None:
    engine = lab.configure(keep=2)
    first = lab.run("open('out.bin', 'wb').write(b'x' * 100000)\nprint('val_bpb: 1.0')\n")
    Ledger(engine.registry).add({"run_id": first.run_id, "status": "keep",
                                 "created_at": time.time()})  # a kept experiment's run: pinned
    ids = [first.run_id] + [lab.run(f"print('val_bpb: {i}')\n").run_id for i in range(3)]
    engine.close()  # (waits for its pruning, which runs off the runs' way)
    seen = folders(lab.ws)
    assert set(seen) == set(ids)  # every record's folder is there, with its log
    assert all({"log.txt", "results.json"} <= names for names in seen.values())
    whole = {i for i, names in seen.items() if "work" in names}
    assert whole == {ids[-1], ids[-2], first.run_id}  # the 2 newest and the kept one
    engine = lab.configure(keep=2)
    for run_id in ids:
        assert engine.get(run_id) is not None  # records stay
    assert "val_bpb: 0" in (lab.ws / ".labls" / "runs" / ids[1] / "log.txt").read_text()


def test_labls_gc_is_a_dry_run_until_yes(lab) -> None:
    (lab.ws / "labls.toml").write_text("[run]\nkeep = 0\n")
    trust(lab.ws)
    cli = [sys.executable, "-m", "labls.server.cli"]
    for i in range(3):
        (lab.ws / "w.py").write_text(f"open('big', 'wb').write(b'x' * 300000)\nprint('a: {i}')\n")
        done = subprocess.run([*cli, "run", "w.py"], cwd=lab.ws, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    before = folders(lab.ws)
    assert all("work" in names for names in before.values())  # keep = 0: nothing pruned
    dry = subprocess.run([*cli, "gc", "--keep", "1"], cwd=lab.ws, capture_output=True,
                         text=True, check=True)
    assert "2 run folder(s)" in dry.stdout and "would free" in dry.stdout
    assert " 0.3 MB" in dry.stdout  # the 300 KB each run wrote, sized
    assert folders(lab.ws) == before  # a dry run frees nothing
    done = subprocess.run([*cli, "gc", "--keep", "1", "--yes"], cwd=lab.ws,
                          capture_output=True, text=True, check=True)
    assert "freed" in done.stdout
    after = folders(lab.ws)
    newest = lab.configure().registry.run_ids()[0]
    assert "work" in after[newest]
    assert all(names == {"log.txt", "results.json"} for k, names in after.items() if k != newest)
