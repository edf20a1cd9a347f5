"""The experiment ledger lives in the lab, beside the sandbox's registry; a kept run is pinned."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from labls.lab.ledger import Ledger
from labls.sandbox.registry import Registry


def test_a_kept_row_pins_its_run_and_the_others_do_not(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "labls.db")
    ledger = Ledger(registry)
    ledger.add({"run_id": "r-kept", "status": "keep", "metric": 0.5, "judge": "j",
                "repeats": 1, "created_at": time.time()})
    ledger.add({"run_id": "r-discarded", "status": "discard", "created_at": time.time()})
    ledger.add({"run_id": "", "status": "crash", "reason": "x", "created_at": time.time()})
    assert registry.unfinished_or_pinned() == {"r-kept"}
    assert [r["status"] for r in ledger.rows()] == ["crash", "discard", "keep"]
    assert ledger.kept("j")[0]["run_id"] == "r-kept" and ledger.last_kept() == ("r-kept", 0.0)
    assert ledger.kept("another judgement") == []


def test_loop_state_survives_and_orphans_are_found(tmp_path: Path) -> None:
    ledger = Ledger(Registry(tmp_path / "labls.db"))
    ledger.save_loop("loop-1", "running", {"loopId": "loop-1", "n": 1})
    assert ledger.get_loop("loop-1") == {"loopId": "loop-1", "n": 1}
    assert ledger.orphan_loops() == []  # its owner (this process) is alive
    with sqlite3.connect(tmp_path / "labls.db") as db:  # as if its owner had died
        db.execute("UPDATE loops SET owner_pid = 2147483646")
    assert ledger.orphan_loops() == [{"loopId": "loop-1", "n": 1}]


def test_a_registry_from_before_pins_pins_the_kept_runs_of_its_ledger(tmp_path: Path) -> None:
    """Registries written before the ledger moved out held it in the same file, and named
    the kept runs only there: the first open pins them, so `labls gc` never frees them."""
    db = sqlite3.connect(tmp_path / "labls.db")
    db.executescript("""
        CREATE TABLE ledger (seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL,
            status TEXT NOT NULL, commit_sha TEXT NOT NULL DEFAULT '', metric REAL,
            memory_gb REAL, description TEXT NOT NULL DEFAULT '',
            discarded_ref TEXT NOT NULL DEFAULT '', spread REAL,
            diff TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL);
        INSERT INTO ledger (run_id, status, created_at) VALUES ('old-keep', 'keep', 1.0),
            ('old-discard', 'discard', 2.0);
    """)
    db.close()
    registry = Registry(tmp_path / "labls.db")
    assert registry.unfinished_or_pinned() == {"old-keep"}
    ledger = Ledger(registry)  # and the old ledger gains the columns added since
    assert ledger.rows()[0]["judge"] == "" and ledger.last_kept() == ("old-keep", 0.0)


def _open_together(path: Path, count: int) -> list[BaseException]:
    """`count` threads open the registry and ledger at `path` at the same moment."""
    gate = threading.Barrier(count)
    errors: list[BaseException] = []

    def open_one() -> None:
        gate.wait()
        try:
            Ledger(Registry(path))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_processes_opening_a_new_registry_at_once_migrate_it_once(tmp_path: Path) -> None:
    """Two `labls` processes starting together (an editor's server and a `labls run`) each
    add the columns a new file lacks; checked and added in one transaction, neither fails."""
    for attempt in range(10):
        errors = _open_together(tmp_path / f"{attempt}" / "labls.db", 4)
        assert not errors, errors
