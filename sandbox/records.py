"""The run record: one dataclass, snake_case inside, camelCase on the wire (PROTOCOL.md)."""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from .wire import camel_case, to_wire


class RunState(StrEnum):
    """A run's state, as the wire spells it (a str: records compare and serialise as text)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timedOut"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # the process running it stopped; set on the next start


class ErrorKind(StrEnum):
    """`error.kind` of a run record (docs/PROTOCOL.md)."""

    EXCEPTION = "exception"
    TIMEOUT = "timeout"
    OOM = "oom"
    NAN = "nan"
    DATASET_MISSING = "datasetMissing"
    NETWORK = "network"
    NO_METRICS = "noMetrics"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    DISK_QUOTA = "diskQuota"
    REFUSED = "refused"  # labls would not start it as asked (e.g. GPUs it does not have)
    STATE_DIR = "stateDir"
    INTERNAL = "internal"


FINAL_STATES = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.TIMED_OUT,
                          RunState.CANCELLED, RunState.INTERRUPTED})
STATES = frozenset(RunState)
SUMMARY_METRICS = 50  # metrics a summary carries (the judged one, then the first ones printed)
PART_ENTRIES = 10_000  # a big map is encoded and decoded this many entries at a time
PAGE_METRICS = 10_000  # a record on the wire carries at most this many metrics (a page)


@dataclass
class RunRecord:
    run_id: str
    state: str
    script: str
    args: list[str] = field(default_factory=list)
    label: str = ""
    exit_code: int | None = None
    signal: int | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    duration_sec: float | None = None
    timeout_sec: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    structured: dict[str, Any] = field(default_factory=dict)
    metrics_source: str = "none"
    metric_sources: dict[str, str] = field(default_factory=dict)
    dataset_used: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    network_attempts: list[dict[str, Any]] = field(default_factory=list)
    isolation: str = ""
    sandbox: dict[str, Any] = field(default_factory=dict)
    network: str = ""
    device: str = "cpu"
    gpus: list[int] = field(default_factory=list)
    peak_gpu_mem_mb: float | None = None
    mean_gpu_util: float | None = None
    log_path: str = ""
    results_path: str = ""
    log_tail: str = ""
    error: dict[str, Any] | None = None
    traceback: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)  # inputs labls refused
    metrics_count: int | None = None  # set in a summary or a page: how many metrics there are
    metrics_next: int | None = None  # set in a page: the offset of the next page (None: none)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def to_wire(self) -> dict[str, Any]:
        """camelCase and strict JSON: a NaN or infinity anywhere becomes null (the keys that
        were not finite are listed in `structured.nonFinite`). Field by field, no deep copy:
        a map of finite numbers (the metrics, however many) is passed as it is."""
        wire: dict[str, Any] = to_wire(self)
        return wire

    def summary(self, judged: str | None = None, keep: int = SUMMARY_METRICS) -> RunRecord:
        """The record with its metrics bounded (the judged one, then the first `keep` printed)
        and `metrics_count` saying how many there are; the whole set is `run.get` away."""
        if len(self.metrics) <= keep:
            return replace(self, metrics_count=len(self.metrics))
        names = [judged] if judged in self.metrics else []
        names += [k for k in itertools.islice(self.metrics, keep) if k != judged][:keep]
        structured = {k: v for k, v in self.structured.items() if k != "conditions"}
        return replace(self, metrics={k: self.metrics[k] for k in names},
                       metric_sources={k: self.metric_sources.get(k, "") for k in names},
                       structured=structured, metrics_count=len(self.metrics))

    def page(self, offset: int = 0, limit: int = PAGE_METRICS) -> RunRecord:
        """The record with `limit` of its metrics from `offset` (in the order printed), their
        sources, and `metrics_count` / `metrics_next` when that is not all of them."""
        return paged(self, offset, limit, len(self.metrics), dict(itertools.islice(
            self.metrics.items(), offset, offset + limit)))

    def latest_metrics(self, n: int = 4) -> str:
        """The last `n` metrics printed, as `name=value, ...` (progress lines): read from the
        end of the map, never a copy of all of it (10^6 keys: a list of 10^6 tuples a second)."""
        last = list(itertools.islice(reversed(self.metrics.items()), n))
        return ", ".join(f"{k}={v:.4g}" for k, v in reversed(last))

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> RunRecord:
        names = {camel_case(f): f for f in cls.__dataclass_fields__}
        return cls(**{names[k]: v for k, v in data.items() if k in names})


WIRE_FIELDS = tuple(RunRecord(run_id="", state="", script="").to_wire())  # camelCase, in order


def paged(record: RunRecord, offset: int, limit: int, total: int,
          metrics: dict[str, float], sources: dict[str, str] | None = None) -> RunRecord:
    """`record` holding the page `metrics` (`limit` of `total` from `offset`), and their
    sources (`sources`: those of the page, or all the record's when None)."""
    if offset == 0 and len(metrics) == total:
        return record if metrics is record.metrics else replace(record, metrics=metrics)
    known = record.metric_sources if sources is None else sources
    following = offset + len(metrics)
    return replace(record, metrics=metrics,
                   metric_sources={k: known.get(k, "") for k in metrics},
                   metrics_count=total, metrics_next=following if following < total else None)


def split_wire(wire: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """A wire record as its head (each big flat map emptied) and the JSON texts of those maps'
    parts, `(field, text)` in order. json's encoder and decoder hold the interpreter for as
    long as they run (1.6 s and 2.5 s for a record of 10^6 metrics): in parts of
    `PART_ENTRIES`, with the interpreter offered to the other threads after each one (the
    language server's loop among them), nobody waits more than a few milliseconds."""
    head = dict(wire)
    parts: list[tuple[str, str]] = []
    for name, value in wire.items():
        if isinstance(value, dict) and len(value) > PART_ENTRIES:
            head[name] = {}
            items = iter(value.items())
            while chunk := dict(itertools.islice(items, PART_ENTRIES)):
                parts.append((name, json.dumps(chunk)))
                _let_others_run()
    return head, parts


def join_parts(head: dict[str, Any], parts: list[tuple[str, str]]) -> dict[str, Any]:
    """`split_wire` undone: the head with its maps' parts decoded into it, one at a time."""
    for name, text in parts:
        head[name].update(json.loads(text))
        _let_others_run()
    return head


def write_json(path: Path, wire: dict[str, Any]) -> None:
    """One JSON text of a wire record (e.g. `results.json`) written in parts, never joined
    into one string (a join of 45 MB held the interpreter for 100 ms)."""
    head, parts = split_wire(wire)
    by_field: dict[str, list[str]] = {}
    for name, part in parts:
        by_field.setdefault(name, []).append(part[1:-1])
    with open(path, "w", encoding="utf-8") as out:
        out.write("{")
        for i, (key, value) in enumerate(head.items()):
            out.write(f"{', ' if i else ''}{json.dumps(key)}: ")
            if key not in by_field:
                out.write(json.dumps(value, default=str))
                continue
            out.write("{")
            for j, inner in enumerate(by_field[key]):
                out.write(f", {inner}" if j else inner)
            out.write("}")
        out.write("}")


def _let_others_run() -> None:
    """Hand the interpreter to any thread waiting for it. A thread wanting it gets it only
    after the switch interval and when the holder next runs bytecode; behind a run of big C
    calls (json over 10^6 keys) the server's loop waited 300 ms; after each part, not."""
    time.sleep(0)


def make_error(kind: ErrorKind, message: str, file: str | None = None,
               line: int | None = None) -> dict[str, Any]:
    return {"kind": kind, "message": message, "file": file, "line": line}


