"""Metrics: the set a source accumulates, their values, and every source merged.

Sources, best first: the JSONL harness (`$LABLS_METRICS`, read here), the result files the run
wrote (`result_files.py`) and its stdout (`stdout_metrics.py`). A `MetricSet` keeps each name's
last value and a bounded curve, the conditions apart (`structured.conditions`), and notes
non-finite values of watched names as they come (a divergence stops the run). `number` is the
one reading of a value; `key_part` the one escaping of a condition's name in a flat key.

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

_HEX = re.compile(r"[-+]?0[xX][0-9a-fA-F]+")
_THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_RATIO = re.compile(r"(\d+)/(\d+)")
_FLOAT = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf(?:inity)?)",
                    re.IGNORECASE)


def number(raw: Any) -> float | None:
    """A metric's value, exactly or not at all: a number, or text that is one (`0.91`, `'0.69'`,
    `1e-3`, `nan`), a hexadecimal integer (`0x1F` is 31), thousands separated by commas
    (`1,234` is 1234), a ratio of integers (`2/3`). Anything else (`1.2.3`, `12:30`, `5ms`,
    booleans) is no value."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return float(raw)
    if not isinstance(raw, str) or len(raw) > 64:
        return None
    text = raw.strip().strip("\"'")
    if _FLOAT.fullmatch(text):
        return float(text)
    if _HEX.fullmatch(text):
        return float(int(text, 16))
    if _THOUSANDS.fullmatch(text):
        return float(text.replace(",", ""))
    if (m := _RATIO.fullmatch(text)) and int(m.group(2)):
        return int(m.group(1)) / int(m.group(2))
    return None


def key_part(name: str) -> str:
    """A condition's or seed's name as one part of a flat key: `%` and `/` percent-encoded, so
    `relu/bn` is `relu%2Fbn` and the key's slashes stay its separators (`structured.conditions`
    keeps the raw names)."""
    return name.replace("%", "%25").replace("/", "%2F")


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

    # Divergence, caught while the run prints: a watched name's value is NaN or infinite, and
    # `grace` more of its values are too; `diverged` is then (name, value).
    watched: frozenset[str] = frozenset()
    grace: int = 0
    diverged: tuple[str, str] | None = None
    non_finite_first: dict[str, str] = field(default_factory=dict)  # each name's first one
    _bad_values: dict[str, int] = field(default_factory=dict, repr=False)
    # names given only as another key's alias (AutoResearchClaw's `<cond>/<metric>` and bare
    # `<metric>` of a condition line): a key printed as itself replaces one, never the reverse
    aliases: set[str] = field(default_factory=set, repr=False)

    def finite_values(self) -> dict[str, float]:
        """The last values but NaNs: one C-level copy, not a comprehension over every key."""
        values = dict(self.values)
        for name in self.nan_names:
            values.pop(name, None)
        return values

    def put(self, name: str, value: float, step: int | None = None) -> None:
        if self.aliases:
            self.aliases.discard(name)
        if value != value:
            self.nan_names.add(name)
        elif self.nan_names:
            self.nan_names.discard(name)
        if value - value != 0.0:  # NaN or an infinity (a finite value minus itself is 0)
            self._non_finite(name, value)
        elif self._bad_values:
            self._bad_values.pop(name, None)  # finite again: its divergence is over
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

    def put_alias(self, name: str, value: float) -> None:
        if name in self.values and name not in self.aliases:
            return
        self.put(name, value)
        self.aliases.add(name)

    def _non_finite(self, name: str, value: float) -> None:
        self.non_finite_first.setdefault(name, str(value))
        if name in self.watched and self.diverged is None:
            further = self._bad_values[name] = self._bad_values.get(name, -1) + 1
            if further >= self.grace:
                self.diverged = (name, str(value))

    def merge_from(self, other: MetricSet) -> None:
        """Another set's values (its last ones win), conditions and stamps."""
        for name, value in other.values.items():
            self.put(name, value)
        _deep_update(self.conditions, other.conditions)
        self.stamps += other.stamps

    def put_condition(self, path: list[str], name: str, value: float) -> None:
        """A value under a condition: `path` is the condition, then any sub-conditions, then
        the seed (`["bn", "0"]` gives `bn/0/<name>`)."""
        table: dict[str, Any] = self.conditions
        for part in path:
            nested = table.get(part)
            if not isinstance(nested, dict):  # (a value there already: the table wins)
                nested = table[part] = {}
            table = nested
        table[name] = value
        self.put("/".join([*map(key_part, path), name]), value)


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
            value = number(raw)
            if value is None:
                continue
            if cond is not None:
                path = [str(cond)] if seed is None else [str(cond), str(seed)]
                out.put_condition(path, str(name), value)
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
