"""Metrics from the result files a run writes: `results.json` and `results.csv`, at the work
folder's root or in `results/`, in the shapes experiment code writes them (README.md lists them).

`results.json`:
- flat: `{"accuracy": 0.9, "loss": 0.3}`; or under `metrics`, where a nested map is a group
  (`{"metrics": {"val": {"acc": 0.9}}}` gives `val/acc`);
- statistics of a metric: `{"accuracy": {"mean": 0.97, "std": 0.01}}` gives `accuracy_mean`,
  `accuracy_std`;
- conditions, under `conditions` (or `per_condition`, `condition_summaries`), as a map
  `{"bn": {"0": {"acc": 0.9}, "acc_mean": 0.9}}` (a seed's map, or the condition's own values;
  `{"bn": {"metrics": {...}}}` is the condition's own) or as a list `[{"name": "bn", ...}]`;
  a top-level list is a list of conditions.
`results.csv`: a header row, then rows: long (`metric,value`, optionally with `condition` and
`seed` columns), per condition (a `condition` / `method` / `name` column), or a log of rows
(`epoch,loss,acc`: the last row's values, every row a point of the series).

A file that cannot be read raises `ValueError` saying why; the caller turns it into a warning.
Pure: data in, numbers out.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from .metrics import MetricSet, number

CONDITION_TABLES = ("conditions", "per_condition", "condition_summaries")
NAME_KEYS = ("condition", "name", "cond", "method")
OWN_VALUES = ("metrics", "summary", "results")  # a condition's own values, not a seed
STATISTICS = {"mean", "std", "stdev", "stderr", "sem", "min", "max", "median", "n", "count",
              "ci95", "ci_low", "ci_high", "var", "last", "best"}
MAX_ROWS = 100_000


def parse_json(data: Any) -> MetricSet:
    """A `results.json` document (already parsed, of bounded depth)."""
    out = MetricSet()
    if isinstance(data, list):
        _condition_list(data, out)
    elif isinstance(data, dict):
        top = data.get("metrics")
        if isinstance(top, dict):
            _flat(top, [], out)
        tables = [k for k in CONDITION_TABLES if k in data]
        if top is None:
            _flat({k: v for k, v in data.items() if k not in tables}, [], out)
        for key in tables:
            table = data[key]
            if isinstance(table, dict):
                for cond, values in table.items():
                    _condition(str(cond), values, out)
            elif isinstance(table, list):
                _condition_list(table, out)
            else:
                raise ValueError(f"`{key}` must be a map or a list of conditions, not "
                                 f"{type(table).__name__}")
    else:
        raise ValueError(f"a results file holds an object or a list, not {type(data).__name__}")
    if not out.values:
        raise ValueError("it holds no metric values (numbers under names)")
    return out


def _flat(table: dict[str, Any], group: list[str], out: MetricSet) -> None:
    for name, raw in table.items():
        key = "/".join([*group, str(name)])
        if isinstance(raw, dict):
            if raw and set(raw) <= STATISTICS:
                for stat, value in raw.items():
                    if (v := number(value)) is not None:
                        out.put(f"{key}_{stat}", v)
            else:
                _flat(raw, [*group, str(name)], out)
        elif (value := number(raw)) is not None:
            out.put(key, value)


def _condition(cond: str, values: Any, out: MetricSet, seed: str | None = None) -> None:
    path = [cond] if seed is None else [cond, seed]
    if not isinstance(values, dict):
        if (value := number(values)) is not None:  # `{"bn": 0.9}`: the condition's one value
            out.put_condition([cond], "value", value)
        return
    for key, raw in values.items():
        if isinstance(raw, dict) and key in OWN_VALUES:
            _condition(cond, raw, out, seed)
        elif isinstance(raw, dict) and raw and set(raw) <= STATISTICS:
            for stat, value in raw.items():
                if (v := number(value)) is not None:
                    out.put_condition(path, f"{key}_{stat}", v)
        elif isinstance(raw, dict) and seed is None:
            _condition(cond, raw, out, str(key))
        elif (value := number(raw)) is not None:
            out.put_condition(path, str(key), value)


def _condition_list(items: list[Any], out: MetricSet) -> None:
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"item {i} of the list of conditions is not an object")
        name = next((str(item[k]) for k in NAME_KEYS if isinstance(item.get(k), str)), None)
        if name is None:
            raise ValueError(f"item {i} of the list of conditions has no `name` or `condition`")
        rest = {k: v for k, v in item.items() if k not in NAME_KEYS}
        seed = rest.pop("seed", None)
        _condition(name, rest, out, None if seed is None else str(seed))


def parse_csv(text: str) -> MetricSet:
    """A `results.csv`: long, per condition, or a log of rows (see the module's doc)."""
    rows = list(csv.DictReader(io.StringIO(text)))[: MAX_ROWS + 1]
    if len(rows) > MAX_ROWS:
        raise ValueError(f"more than {MAX_ROWS} rows")
    if not rows:
        raise ValueError("no header row and data rows")
    columns = [c.strip() for c in (rows[0].keys() if rows else []) if c is not None]
    lower = {c.lower(): c for c in columns}
    out = MetricSet()
    name_col = lower.get("metric") or lower.get("name")
    cond_col = next((lower[k] for k in ("condition", "cond", "method") if k in lower), None)
    seed_col = lower.get("seed")
    if name_col and "value" in lower:
        for row in rows:
            value = number(row.get(lower["value"]))
            if value is None or not row.get(name_col):
                continue
            path = _row_path(row, cond_col, seed_col)
            if path:
                out.put_condition(path, row[name_col], value)
            else:
                out.put(row[name_col], value)
    elif cond_col or name_col:
        label = cond_col or name_col
        assert label is not None
        for row in rows:
            path = _row_path(row, label, seed_col)
            for col in columns:
                if col in (label, seed_col) or (value := number(row.get(col))) is None:
                    continue
                if path:
                    out.put_condition(path, col, value)
    else:
        step_col = lower.get("step") or lower.get("epoch") or lower.get("iteration")
        for row in rows:
            step = number(row.get(step_col)) if step_col else None
            for col in columns:
                if (value := number(row.get(col))) is not None:
                    out.put(col, value, int(step) if step is not None and step == int(step)
                            else None)
    if not out.values:
        raise ValueError("it holds no metric values (no numeric column)")
    return out


def _row_path(row: dict[str, Any], cond_col: str | None, seed_col: str | None) -> list[str]:
    cond = (row.get(cond_col) or "").strip() if cond_col else ""
    if not cond:
        return []
    seed = (row.get(seed_col) or "").strip() if seed_col else ""
    return [cond, seed] if seed else [cond]
