"""The experiment ledger and the loops' state: the lab's own tables in the workspace's
`labls.db`, beside the sandbox's run registry.

One row per experiment step (keep / discard / crash), never rewritten; a loop's state after
every iteration, with its owning process, so a loop whose server died is resumed. A kept step's
run is *pinned* in the registry: the sandbox never frees a pinned run's folder, whatever
`run.keep` says, and knows nothing else of experiments.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from typing import Any

from labls.sandbox.proctree import process_start
from labls.sandbox.registry import Registry, RegistryError, connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL, status TEXT NOT NULL, commit_sha TEXT NOT NULL DEFAULT '',
    metric REAL, memory_gb REAL, description TEXT NOT NULL DEFAULT '',
    discarded_ref TEXT NOT NULL DEFAULT '', spread REAL, diff TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL, judge TEXT NOT NULL DEFAULT '', reason TEXT NOT NULL DEFAULT '',
    repeats INTEGER
);
CREATE TABLE IF NOT EXISTS loops (
    loop_id TEXT PRIMARY KEY, state TEXT NOT NULL, data TEXT NOT NULL,
    owner_pid INTEGER, owner_start TEXT, updated_at REAL NOT NULL
);
"""
ADDED = {"judge": "TEXT NOT NULL DEFAULT ''", "reason": "TEXT NOT NULL DEFAULT ''",
         "repeats": "INTEGER"}  # columns added since the first ledgers
KEYS = ("run_id", "status", "commit_sha", "metric", "memory_gb", "description",
        "discarded_ref", "spread", "diff", "created_at", *ADDED)


class Ledger:
    """Safe for several threads (one lock) and processes (SQLite's WAL, as the registry)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._lock = threading.Lock()
        try:
            self._db = connect(registry.path)
            self._db.executescript(SCHEMA)
            with self._db:  # (one transaction: two processes opening at once migrate once)
                self._db.execute("BEGIN IMMEDIATE")
                have = {row[1] for row in self._db.execute("PRAGMA table_info(ledger)")}
                for column, kind in ADDED.items():
                    if column not in have:
                        self._db.execute(f"ALTER TABLE ledger ADD COLUMN {column} {kind}")
        except sqlite3.Error as exc:
            raise RegistryError(f"the experiment ledger in {registry.path} cannot be used: "
                                f"{exc}") from exc
        self._owner = (os.getpid(), process_start(os.getpid()))

    # --- the experiments ----------------------------------------------------------------------
    def add(self, entry: dict[str, Any]) -> None:
        entry = {"commit_sha": "", "description": "", "discarded_ref": "", "diff": "",
                 "judge": "", "reason": "", **entry}
        if entry["status"] == "keep" and entry.get("run_id"):
            self.registry.pin({entry["run_id"]})  # (first: a kept run is never freed)
        with self._lock:
            self._db.execute(f"INSERT INTO ledger ({', '.join(KEYS)}) VALUES "
                             f"({', '.join('?' * len(KEYS))})", [entry.get(k) for k in KEYS])

    def rows(self, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest `limit` rows, newest first."""
        return self._select("SELECT * FROM ledger ORDER BY seq DESC LIMIT ?", (limit,))

    def kept(self, judge: str) -> list[dict[str, Any]]:
        """The kept rows judged by `judge`, newest first, back to (and with) the latest
        baseline: what the next step is compared with, and how many keeps since a baseline."""
        rows = []
        for entry in self._select("SELECT * FROM ledger WHERE status='keep' AND judge=? "
                                  "ORDER BY seq DESC", (judge,)):
            rows.append(entry)
            if entry["repeats"] is not None:  # set on baseline rows only
                break
        return rows

    def last_kept(self) -> tuple[str, float] | None:
        """The latest kept run (of any judgement) and the spread recorded with it."""
        rows = self._select("SELECT run_id, spread FROM ledger WHERE status='keep' "
                            "ORDER BY seq DESC LIMIT 1", ())
        return (rows[0]["run_id"], rows[0]["spread"] or 0.0) if rows else None

    def _select(self, query: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._db.execute(query, args)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    # --- the loops ----------------------------------------------------------------------------
    def save_loop(self, loop_id: str, state: str, data: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO loops VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(loop_id) DO UPDATE SET "
                "state=excluded.state, data=excluded.data, owner_pid=excluded.owner_pid, "
                "owner_start=excluded.owner_start, updated_at=excluded.updated_at",
                (loop_id, state, json.dumps(data), *self._owner, time.time()))

    def get_loop(self, loop_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM loops WHERE loop_id=?",
                                   (loop_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def orphan_loops(self) -> list[dict[str, Any]]:
        """Loops still `running` whose owning process is gone: to resume."""
        with self._lock:
            rows = self._db.execute("SELECT data, owner_pid, owner_start FROM loops "
                                    "WHERE state='running'").fetchall()
        return [json.loads(data) for data, pid, start in rows
                if pid is None or process_start(pid) != start]

    def close(self) -> None:
        with self._lock:
            self._db.close()
