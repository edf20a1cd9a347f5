"""Compare a run's judged metric with a baseline run's."""

from __future__ import annotations

from dataclasses import dataclass, field

from labls.sandbox.records import RunRecord
from labls.sandbox.wire import named


@dataclass
class Comparison:
    metric: str
    goal: str
    current: float | None
    baseline: float | None
    delta: float | None
    pct: float | None
    verdict: str  # improvement | regression | noChange | indeterminate
    current_id: str = field(metadata=named("runId"))
    baseline_id: str | None = field(metadata=named("baselineId"))
    reason: str = ""


def compare(current: RunRecord, baseline: RunRecord | None, metric: str, goal: str,
            min_delta: float = 0.0, reference: float | None = None) -> Comparison:
    """`delta` is current - baseline; an improvement must beat the baseline by > min_delta.
    `reference` is the baseline's value when it is not the baseline run's own (the median of
    its repeats)."""
    cur = current.metrics.get(metric) if current.state == "succeeded" else None
    base = baseline.metrics.get(metric) if baseline is not None else None
    if baseline is not None and reference is not None:
        base = reference

    def result(verdict: str, reason: str, delta: float | None = None,
               pct: float | None = None) -> Comparison:
        return Comparison(metric, goal, cur, base, delta, pct, verdict, current.run_id,
                          baseline.run_id if baseline else None, reason)

    if baseline is None:
        return result("indeterminate", "no baseline run")
    if current.state != "succeeded":
        return result("indeterminate", f"run {current.run_id} {current.state}")
    if cur is None or base is None:
        missing = current.run_id if cur is None else baseline.run_id
        return result("indeterminate", f"run {missing} has no `{metric}`")
    delta = cur - base
    pct = delta / abs(base) * 100 if base else None
    gain = -delta if goal == "minimize" else delta
    if gain > min_delta:
        return result("improvement", f"{metric} {cur:.6g} vs {base:.6g}", delta, pct)
    if -gain > min_delta:
        return result("regression", f"{metric} {cur:.6g} vs {base:.6g}", delta, pct)
    return result("noChange", f"|Δ| = {abs(delta):.3g} within min_delta {min_delta:g}", delta, pct)
