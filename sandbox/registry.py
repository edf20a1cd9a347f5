"""The run registry: SQLite in WAL mode at `<state_dir>/labls.db`.

Each run is one row holding the full record as JSON, plus tables for metrics, metric series and
provenance so they can be queried. Every state change is committed at once, so a crash loses no
finished run. Rows of runs whose owning process has died become `interrupted` on the next open.
Safe for several threads (one lock) and several processes (WAL, busy timeout).
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from .proctree import process_start
from .records import PART_ENTRIES, SUMMARY_METRICS, RunRecord, join_parts, paged, split_wire

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT UNIQUE NOT NULL,
    state TEXT NOT NULL,
    script TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    owner_pid INTEGER,
    owner_start TEXT,
    created_at REAL NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_state ON runs(state);
CREATE INDEX IF NOT EXISTS runs_created ON runs(created_at);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL, name TEXT NOT NULL, value REAL NOT NULL, source TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS metric_series (
    run_id TEXT NOT NULL, name TEXT NOT NULL, idx INTEGER NOT NULL, step INTEGER, value REAL,
    PRIMARY KEY (run_id, name, idx)
);
CREATE TABLE IF NOT EXISTS pins (
    run_id TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS cancels (
    run_id TEXT PRIMARY KEY, asked_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS record_parts (
    run_id TEXT NOT NULL, idx INTEGER NOT NULL, field TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (run_id, idx)
);
CREATE TABLE IF NOT EXISTS provenance (
    run_id TEXT PRIMARY KEY, verdict TEXT NOT NULL, reason TEXT NOT NULL, stamps TEXT NOT NULL,
    files_read TEXT NOT NULL
);
"""


RUNS_ADDED = {"summary": "TEXT"}  # the record with its metrics bounded, for listings


def _decode_range(texts: list[tuple[str]], skip: int, limit: int) -> dict[str, Any]:
    """`limit` entries after the first `skip` of the maps whose JSON texts are `texts`."""
    entries = (item for text, in texts for item in json.loads(text).items())
    return dict(itertools.islice(entries, skip, skip + limit))


def connect(path: Path) -> sqlite3.Connection:
    """A connection to `labls.db` as every user of it opens one: autocommit, shared between
    threads (callers hold their own lock), WAL's `synchronous=NORMAL`, 30 s for a busy lock."""
    db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def _use_wal(db: sqlite3.Connection) -> None:
    """WAL mode (kept by the file, for every reader). A new file's change of mode is answered
    `locked` at once, without the busy wait, while another process opens it too: retried."""
    for _ in range(100):
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            time.sleep(0.05)
    db.execute("PRAGMA journal_mode=WAL")


class RegistryError(OSError):
    """The registry cannot be opened; the message names the file and what to do."""


class Registry:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = connect(path)
            _use_wal(self._db)
            self._db.executescript(SCHEMA)
            self._migrate()
            # Reads have a connection of their own: under WAL they see the last commit and
            # never wait for a writer (a run's 10^6 metric rows took 3 s to insert).
            self._reader = connect(path)
            self._owner = (os.getpid(), process_start(os.getpid()))
            self.interrupted = self._mark_orphans()
        except (sqlite3.Error, OSError) as exc:
            hint = (" (it is not a labls registry: move it aside and labls starts a new one)"
                    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc)
                    else "")
            raise RegistryError(f"the run registry {path} cannot be used: {exc}{hint}") from exc

    def _migrate(self) -> None:
        """Columns added since a registry was created; the pins of a registry from before pins
        were kept apart (the lab's ledger was in this file, and named its kept runs)."""
        self._db.execute("BEGIN IMMEDIATE")  # two processes opening at once migrate once
        try:
            have = {row[1] for row in self._db.execute("PRAGMA table_info(runs)")}
            for column, kind in RUNS_ADDED.items():
                if column not in have:
                    self._db.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
            if "ledger" in tables and not self._db.execute("SELECT 1 FROM pins").fetchone():
                self._db.execute("INSERT OR IGNORE INTO pins SELECT run_id FROM ledger "
                                 "WHERE status='keep' AND run_id != ''")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _mark_orphans(self) -> list[str]:
        """Runs left `running`/`queued` by a process that no longer exists."""
        with self._lock:
            rows = self._db.execute(
                "SELECT run_id, owner_pid, owner_start, record, summary FROM runs "
                "WHERE state IN ('running', 'queued')"
            ).fetchall()
            lost = []
            error = {"kind": "interrupted", "file": None, "line": None,
                     "message": "the labls process running this run stopped"}
            for run_id, pid, start, record, summary in rows:
                if pid is not None and process_start(pid) == start:
                    continue  # its owner is alive (another server or CLI)
                texts = []
                for text in (record, summary):
                    data = json.loads(text) if text else None
                    if data is not None:
                        data.update(state="interrupted", error=error)
                    texts.append(json.dumps(data) if data is not None else None)
                self._db.execute("UPDATE runs SET state='interrupted', record=?, summary=? "
                                 "WHERE run_id=?", (*texts, run_id))
                lost.append(run_id)
            return lost

    def save(self, record: RunRecord, series: dict[str, list[tuple[int | None, float]]] | None
             = None, judged: str | None = None) -> None:
        """The whole record, and its summary (metrics bounded, `judged` first) for listings.
        A record's big maps (10^6 metrics) are stored in parts (`records.split_wire`)."""
        head, parts = split_wire(record.to_wire())
        data = json.dumps(head)
        summary = (data if len(record.metrics) <= SUMMARY_METRICS
                   else json.dumps(record.summary(judged).to_wire()))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO runs (run_id, state, script, label, owner_pid, owner_start, "
                    "created_at, record, summary) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(run_id) DO UPDATE SET state=excluded.state, "
                    "record=excluded.record, summary=excluded.summary",
                    (record.run_id, record.state, record.script, record.label, *self._owner,
                     record.created_at, data, summary),
                )
                self._db.execute("DELETE FROM record_parts WHERE run_id=?", (record.run_id,))
                self._db.executemany("INSERT INTO record_parts VALUES (?, ?, ?, ?)", [
                    (record.run_id, i, name, text) for i, (name, text) in enumerate(parts)])
                if record.final:
                    self._save_results(record, series or {})
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _save_results(self, record: RunRecord,
                      series: dict[str, list[tuple[int | None, float]]]) -> None:
        rid = record.run_id
        self._db.executemany(
            "INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?)",
            [(rid, k, v, record.metric_sources.get(k, "")) for k, v in record.metrics.items()],
        )
        self._db.executemany(
            "INSERT OR REPLACE INTO metric_series VALUES (?, ?, ?, ?, ?)",
            [(rid, name, i, step, value) for name, points in series.items()
             for i, (step, value) in enumerate(points)],
        )
        prov = record.provenance
        if prov:
            self._db.execute(
                "INSERT OR REPLACE INTO provenance VALUES (?, ?, ?, ?, ?)",
                (rid, prov.get("verdict", ""), prov.get("reason", ""),
                 json.dumps(prov.get("stamps", [])), json.dumps(prov.get("filesRead", []))),
            )

    def get(self, run_id: str, page: tuple[int, int] | None = None) -> RunRecord | None:
        """The whole record, or with only a page of its metrics: `(offset, limit)`, read from
        the parts that hold it (a page of a record of 10^6 metrics decodes 10^4 of them)."""
        if page is not None:
            return self._page(run_id, *page)
        with self._read_lock:
            self._reader.execute("BEGIN")  # the record and its parts from one snapshot
            try:
                row = self._reader.execute("SELECT record FROM runs WHERE run_id=?",
                                           (run_id,)).fetchone()
                parts = self._reader.execute(
                    "SELECT field, data FROM record_parts WHERE run_id=? ORDER BY idx",
                    (run_id,)).fetchall() if row else []
            finally:
                self._reader.execute("COMMIT")
        return RunRecord.from_wire(join_parts(json.loads(row[0]), parts)) if row else None

    def _page(self, run_id: str, offset: int, limit: int) -> RunRecord | None:
        first, last = offset // PART_ENTRIES, (offset + limit - 1) // PART_ENTRIES
        wanted = max(0, last - first + 1)  # the parts of each map that hold the page
        query = ("SELECT data FROM record_parts WHERE run_id=? AND field=? ORDER BY idx "
                 "LIMIT ? OFFSET ?")
        with self._read_lock:
            self._reader.execute("BEGIN")  # the record and its parts from one snapshot
            try:
                row = self._reader.execute("SELECT record FROM runs WHERE run_id=?",
                                           (run_id,)).fetchone()
                if row is None:
                    return None
                count = self._reader.execute(
                    "SELECT COUNT(*) FROM record_parts WHERE run_id=? AND field='metrics'",
                    (run_id,)).fetchone()[0]
                metric_parts = self._reader.execute(
                    query, (run_id, "metrics", wanted, first)).fetchall()
                source_parts = self._reader.execute(
                    query, (run_id, "metricSources", wanted, first)).fetchall()
                last_part = self._reader.execute(
                    query, (run_id, "metrics", 1, count - 1)).fetchall()
            finally:
                self._reader.execute("COMMIT")
        record = RunRecord.from_wire(json.loads(row[0]))
        if not count:  # a small record: stored whole
            return record.page(offset, limit)
        total = (count - 1) * PART_ENTRIES + len(json.loads(last_part[0][0]))
        metrics = _decode_range(metric_parts, offset - first * PART_ENTRIES, limit)
        sources = {k: v for text, in source_parts for k, v in json.loads(text).items()
                   if k in metrics} if source_parts else None
        return paged(record, offset, limit, total, metrics, sources)

    def summary(self, run_id: str) -> RunRecord | None:
        """One run's summary (its metrics bounded, as listings have it)."""
        with self._read_lock:
            row = self._reader.execute("SELECT COALESCE(summary, record) FROM runs WHERE "
                                       "run_id=?", (run_id,)).fetchone()
        return RunRecord.from_wire(json.loads(row[0])) if row else None

    def recent(self, limit: int = 50, state: str | None = None) -> list[RunRecord]:
        """The newest runs' summaries (a run's metrics bounded; `get` has them all)."""
        query = "SELECT COALESCE(summary, record) FROM runs"
        args: list[Any] = []
        if state:
            query += " WHERE state=?"
            args.append(state)
        query += " ORDER BY created_at DESC, seq DESC LIMIT ?"  # (first saved is not first made)
        args.append(limit)
        with self._read_lock:
            rows = self._reader.execute(query, args).fetchall()
        return [RunRecord.from_wire(json.loads(r[0])) for r in rows]

    def series(self, run_id: str, name: str) -> list[tuple[int | None, float]]:
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT step, value FROM metric_series WHERE run_id=? AND name=? ORDER BY idx",
                (run_id, name)).fetchall()
        return [(r[0], r[1]) for r in rows]

    # --- cancels asked by another process ---------------------------------------------------
    def ask_cancel(self, run_id: str, timeout: float | None = None) -> RunRecord | None:
        """Ask the process that owns `run_id` to cancel it (the owner's engine looks twice a
        second) and wait up to `timeout` for the final record; the record as it is then."""
        record = self.get(run_id)
        if record is None or record.final:
            return record
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO cancels VALUES (?, ?)", (run_id, time.time()))
        deadline = None if timeout is None else time.monotonic() + timeout
        while not record.final and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.1)  # another process's run: its record here is all this one sees
            record = self.get(run_id) or record
        return record

    def take_cancels(self, run_ids: list[str]) -> set[str]:
        """Which of `run_ids` (this process's own runs) another process asked to cancel; the
        requests are consumed."""
        marks = ",".join("?" * len(run_ids))
        with self._lock:
            asked = {r[0] for r in self._db.execute(
                f"SELECT run_id FROM cancels WHERE run_id IN ({marks})", run_ids)}
            if asked:
                self._db.executemany("DELETE FROM cancels WHERE run_id=?", [(r,) for r in asked])
        return asked

    # --- what must stay -----------------------------------------------------------------------
    def run_ids(self) -> list[str]:
        """Every run's id, newest first."""
        with self._read_lock:
            return [r[0] for r in self._reader.execute("SELECT run_id FROM runs ORDER BY seq DESC")]

    def pin(self, run_ids: set[str]) -> None:
        """Runs whose folders are never freed (the lab pins the run of every kept step)."""
        with self._lock:
            self._db.executemany("INSERT OR IGNORE INTO pins VALUES (?)",
                                 [(r,) for r in sorted(run_ids)])

    def unfinished_or_pinned(self) -> set[str]:
        """Run ids whose folders must stay: runs queued or going (in any process), and the
        pinned ones."""
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT run_id FROM runs WHERE state IN ('running', 'queued') UNION "
                "SELECT run_id FROM pins").fetchall()
        return {r[0] for r in rows}

    def ended_since(self, seq: int, pending: set[str]) -> tuple[int, list[str], set[str]]:
        """For a watcher of runs of other processes: the runs saved after row `seq` or in
        `pending` (unfinished when last seen); which of them have ended, and which are still
        unfinished. Returns the newest row's seq, the ended ids, the unfinished ids."""
        marks = ",".join("?" * len(pending))
        with self._read_lock:
            rows = self._reader.execute(
                f"SELECT seq, run_id, state FROM runs WHERE seq > ? OR run_id IN ({marks})",
                [seq, *sorted(pending)]).fetchall()
        newest = max([seq, *(r[0] for r in rows)])
        ended = [r[1] for r in rows if r[2] not in ("running", "queued")]
        return newest, ended, {r[1] for r in rows if r[2] in ("running", "queued")}

    def last_final(self, script: str) -> str | None:
        """The id of `script`'s latest run that has ended (whatever its state)."""
        with self._read_lock:
            row = self._reader.execute(
                "SELECT run_id FROM runs WHERE script=? AND state NOT IN ('running', 'queued') "
                "ORDER BY seq DESC LIMIT 1", (script,)).fetchone()
        return row[0] if row else None

    def previous_success(self, script: str, before_run: str, metric: str) -> RunRecord | None:
        """The latest succeeded run of `script` before `before_run` that has `metric`."""
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT runs.run_id FROM runs JOIN metrics ON metrics.run_id = runs.run_id "
                "AND metrics.name=? WHERE script=? AND state='succeeded' AND seq < "
                "(SELECT seq FROM runs WHERE run_id=?) ORDER BY seq DESC LIMIT 1",
                (metric, script, before_run)).fetchall()
        return self.get(rows[0][0]) if rows else None

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._db.close()
            self._reader.close()
