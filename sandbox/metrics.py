"""Metric parsing: every convention of PROTOCOL.md, merged, none hiding another.

Sources, best first: the JSONL harness (`$LABLS_METRICS`), a `results.json` the run wrote, and
stdout lines (`name: value`, `METRIC k=v`, tagged `PER_SEED` / `CONDITION_SUMMARY` lines with
`condition=` or `cond=`, as k=v pairs or a JSON object). Per-condition and per-seed values are
flattened to `<condition>/<seed>/<metric>` and `<condition>/<metric>`.

Everything here is pure: text in, numbers out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import untrusted

SOURCE_RANK = {"harness": 3, "resultsFile": 2, "stdout": 1}
SERIES_POINTS = 2_000  # a curve's budget: the whole run, downsampled, with its extremes

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|inf(?:inity)?)"
_NAME = r"[A-Za-z_][\w./-]*"
NAME_VALUE = re.compile(rf"^\s*({_NAME})\s*:\s*({_NUMBER})\s*$", re.IGNORECASE)
METRIC_LINE = re.compile(r"^\s*METRIC\s+(.*)$")
TAGGED = re.compile(r"^\s*([A-Z][A-Z0-9_]*)\s+(.*)$")
STAMP = re.compile(r"^\s*DATASET_USED:\s*(\S.*?)\s*$")
PAIR = re.compile(rf"({_NAME})\s*(?:=|:\s)\s*({_NUMBER}|[^\s,;]+)", re.IGNORECASE)
_CONDITION_KEYS = ("condition", "cond")
# code experiments: pytest's summary line and coverage's TOTAL line (higher is better)
PYTEST_SUMMARY = re.compile(
    r"^=*\s*((?:\d+ (?:passed|failed|errors?|skipped|xfailed|xpassed|warnings?|deselected)"
    r"(?:, )?)+) in [\d.]+s\b.*$")
PYTEST_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)")
COVERAGE_TOTAL = re.compile(r"^TOTAL(?:\s+\d+){2,4}\s+(\d+(?:\.\d+)?)%\s*$")

# A fast C-level pre-filter for whole chunks of output: only lines that could be one of the above.
CANDIDATE = re.compile(
    rb"^[ \t]*(?:[A-Za-z_][\w./-]*[ \t]*:[ \t]*[-+.0-9nNiI][^\n]*"
    rb"|METRIC[ \t][^\n]*|[A-Z][A-Z0-9_]*[ \t][^\n]*cond[^\n]*|DATASET_USED:[^\n]*"
    rb"|=*[ \t]*\d+ (?:passed|failed|error)[^\n]* in [0-9.]+s\b[^\n]*|TOTAL[ \t][^\n]*%[ \t]*)$",
    re.MULTILINE,
)


def to_number(text: Any) -> float | None:
    if isinstance(text, bool):
        return None
    if isinstance(text, int | float):
        return float(text)
    if isinstance(text, str):
        try:
            return float(text)
        except ValueError:
            return None
    return None


class Curve:
    """A metric's points over the whole run in a fixed budget: every `stride`-th point, the
    stride doubling (and every other kept point dropped) whenever the budget is full, plus the
    first, the last, the lowest and the highest, wherever they fell."""

    def __init__(self, budget: int = SERIES_POINTS) -> None:
        self.budget = budget
        self.seen = 0
        self.stride = 1
        self._kept: list[tuple[int, int | None, float]] = []  # (index, step, value)
        self._last: tuple[int, int | None, float] | None = None
        self._low: tuple[int, int | None, float] | None = None
        self._high: tuple[int, int | None, float] | None = None

    def append(self, step: int | None, value: float) -> None:
        point = (self.seen, step, value)
        self.seen += 1
        self._last = point
        if value == value:  # (a NaN is neither an extreme nor comparable)
            if self._low is None or value < self._low[2]:
                self._low = point
            if self._high is None or value > self._high[2]:
                self._high = point
        if point[0] % self.stride == 0:
            self._kept.append(point)
            if len(self._kept) > self.budget:
                self._kept = self._kept[::2]
                self.stride *= 2

    def points(self) -> list[tuple[int | None, float]]:
        chosen = {p[0]: p for p in self._kept}
        for extra in (self._last, self._low, self._high):
            if extra is not None:
                chosen[extra[0]] = extra
        return [(step, value) for _, step, value in sorted(chosen.values())]


@dataclass
class MetricSet:
    """Accumulated metrics from one source; `put` keeps the last value and a series."""

    values: dict[str, float] = field(default_factory=dict)
    series: dict[str, Curve] = field(default_factory=dict)
    conditions: dict[str, dict[str, Any]] = field(default_factory=dict)
    stamps: list[str] = field(default_factory=list)

    # the step of each name's first point while it has only one: most keys of a wide run are
    # printed once, and a Curve each would be millions of objects for the cyclic GC to walk
    # (10^6 keys: 2 x 10^6 tracked objects, full collections of 0.6 s holding the interpreter)
    first_step: dict[str, int | None] = field(default_factory=dict, repr=False)
    nan_names: set[str] = field(default_factory=set, repr=False)  # names whose last value is NaN

    def finite_values(self) -> dict[str, float]:
        """The last values but NaNs: one C-level copy, not a comprehension over every key."""
        values = dict(self.values)
        for name in self.nan_names:
            values.pop(name, None)
        return values

    def put(self, name: str, value: float, step: int | None = None) -> None:
        if value != value:
            self.nan_names.add(name)
        elif self.nan_names:
            self.nan_names.discard(name)
        curve = self.series.get(name)
        if curve is None:
            if name not in self.values:
                self.values[name] = value
                self.first_step[name] = step
                return
            curve = self.series[name] = Curve()
            curve.append(self.first_step.pop(name, None), self.values[name])
        self.values[name] = value
        curve.append(step, value)

    def put_condition(self, cond: str, seed: str | None, name: str, value: float) -> None:
        table = self.conditions.setdefault(cond, {})
        if seed is None:
            table[name] = value
            self.put(f"{cond}/{name}", value)
        else:
            table.setdefault(seed, {})[name] = value
            self.put(f"{cond}/{seed}/{name}", value)


# --- stdout --------------------------------------------------------------------------------------


def parse_line(line: str, into: MetricSet) -> bool:
    """Parse one stdout line into `into`; True if it carried anything."""
    if m := STAMP.match(line):
        into.stamps.append(m.group(1))
        return True
    if m := NAME_VALUE.match(line):
        value = to_number(m.group(2))
        if value is not None:
            into.put(m.group(1), value)
            return True
    if m := METRIC_LINE.match(line):
        pairs = [(name, value) for name, raw in PAIR.findall(m.group(1))
                 if (value := to_number(raw)) is not None]
        step = next((int(v) for n, v in pairs if n == "step" and v == int(v)), None)
        for name, value in pairs:  # `step=` on the line is the step of the line's points
            into.put(name, value, step)
        return bool(pairs)
    if (m := TAGGED.match(line)) and _parse_tagged(m.group(2), into):
        return True
    if m := PYTEST_SUMMARY.match(line.strip()):
        counts = {"passed": 0, "failed": 0, "errors": 0}
        for number, kind in PYTEST_COUNT.findall(m.group(1)):
            key = "errors" if kind.startswith("error") else kind
            counts[key] = counts.get(key, 0) + int(number)
        for kind, number in counts.items():
            into.put(f"tests_{kind}", float(number))
        ran = counts["passed"] + counts["failed"] + counts["errors"]
        if ran:
            into.put("pass_rate", counts["passed"] / ran)
        return True
    if m := COVERAGE_TOTAL.match(line.strip()):
        into.put("coverage_percent", float(m.group(1)))
        return True
    return False


def _parse_tagged(rest: str, into: MetricSet) -> bool:
    rest = rest.strip()
    fields: dict[str, Any]
    if rest.startswith("{"):
        try:
            loaded = untrusted.loads(rest)
        except ValueError:  # not JSON, or nested too deep: the line is not a metric
            return False
        if not isinstance(loaded, dict):
            return False
        fields = loaded
    else:
        fields = dict(PAIR.findall(rest))
    cond = next((str(fields.pop(k)) for k in _CONDITION_KEYS if k in fields), None)
    if cond is None:
        return False
    seed = fields.pop("seed", None)
    seed = None if seed is None else str(seed)
    found = False
    for name, raw in fields.items():
        value = to_number(raw)
        if value is not None:
            into.put_condition(cond, seed, str(name), value)
            found = True
    return found


# Each candidate line holds one of these. A multi-byte search costs ~30x a single byte's
# (memchr), so each comes behind a one-byte gate: a flood of plain text costs ~0.05 ms per MB.
_MARKERS = ((b":", b":"), (b"=", b"="), (b" ", b" passed"), (b" ", b" failed"),
            (b" ", b" error"), (b"T", b"TOTAL"))


def parse_chunk(block: bytes, into: MetricSet) -> int:
    """Parse the complete lines of `block` (bytes ending at a newline); returns lines used."""
    if not any(gate in block and marker in block for gate, marker in _MARKERS):
        return 0
    used = 0
    for m in CANDIDATE.finditer(block):
        used += parse_line(m.group(0).decode("utf-8", "replace"), into)
    return used


# --- results.json --------------------------------------------------------------------------------


def parse_results_json(data: Any) -> MetricSet:
    """`{"metrics": {...}, "conditions": {cond: {seed: {m: v}} | {m: v}}}`, or a flat dict."""
    out = MetricSet()
    if not isinstance(data, dict):
        return out
    metrics = data.get("metrics")
    flat = metrics if isinstance(metrics, dict) else {
        k: v for k, v in data.items() if k not in ("conditions", "metrics")
    }
    for name, raw in flat.items():
        value = to_number(raw)
        if value is not None:
            out.put(str(name), value)
    conditions = data.get("conditions")
    if isinstance(conditions, dict):
        for cond, table in conditions.items():
            if not isinstance(table, dict):
                continue
            for key, item in table.items():
                if isinstance(item, dict):
                    for name, raw in item.items():
                        value = to_number(raw)
                        if value is not None:
                            out.put_condition(str(cond), str(key), str(name), value)
                elif (value := to_number(item)) is not None:
                    out.put_condition(str(cond), None, str(key), value)
    return out


# --- JSONL harness -------------------------------------------------------------------------------


def parse_harness_lines(lines: Iterable[str]) -> MetricSet:
    out = MetricSet()
    for line in lines:
        try:
            record = untrusted.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
            continue
        cond, seed, step = record.get("condition"), record.get("seed"), record.get("step")
        for name, raw in record["metrics"].items():
            value = to_number(raw)
            if value is None:
                continue
            if cond is not None:
                out.put_condition(str(cond), None if seed is None else str(seed), name, value)
            else:
                out.put(str(name), value, step if isinstance(step, int) else None)
    return out


# --- merging -------------------------------------------------------------------------------------


@dataclass
class Merged:
    metrics: dict[str, float]
    sources: dict[str, str]
    source: str
    conditions: dict[str, Any]
    non_finite: dict[str, str]
    series: dict[str, list[tuple[int | None, float]]]
    series_seen: dict[str, int]  # points printed per series (`series` keeps a budget of them)


def merge(by_source: dict[str, MetricSet]) -> Merged:
    """All sources merged; for a key in several, the better source's value wins."""
    metrics: dict[str, float] = {}
    sources: dict[str, str] = {}
    conditions: dict[str, Any] = {}
    series: dict[str, list[tuple[int | None, float]]] = {}
    seen: dict[str, int] = {}
    for source in sorted(by_source, key=lambda s: SOURCE_RANK[s]):  # worst first, best last
        found = by_source[source]
        for name, value in found.values.items():
            metrics[name] = value
            sources[name] = source
        for cond, table in found.conditions.items():
            _deep_update(conditions.setdefault(cond, {}), table)
        for name, curve in found.series.items():
            if curve.seen > 1:
                series[name] = curve.points()
                seen[name] = curve.seen
    non_finite = {k: str(v) for k, v in metrics.items() if not math.isfinite(v)}
    for key in non_finite:
        metrics.pop(key)
        sources.pop(key)
    produced = [s for s, found in by_source.items() if found.values]
    best = max(produced, key=lambda s: SOURCE_RANK[s]) if produced else "none"
    return Merged(metrics, sources, best, conditions, non_finite, series, seen)


def _deep_update(target: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value
