"""One autoresearch step: edit → time-boxed run → compare with the baseline → keep or discard.

- keep: exactly the bytes that ran are committed (a tree built in a throwaway index, then HEAD
  moved in one `update-ref`); the message holds the hypothesis and the metric.
- discard (no improvement beyond the noise rule, or provenance not `verified`) and crash
  (failed run, timeout, an edit that does not apply, git failing): the files are restored byte
  for byte and the edited tree is committed off-branch under `refs/labls/discarded/<runId>`, so
  no experiment's code is lost.
A step is all or nothing: whatever fails after the edit, the tree ends as it was and the ledger
has a row saying what happened; a step cut short by a killed process is undone by the next one
(`journal.py`). Steps of one workspace never overlap (a lock file, across processes), and edits
that arrive meanwhile are refused `busy` by the front-ends.

The judgement is pinned: each ledger row carries its definition (metric, goal, min_delta, the
script and its arguments). A step is compared only with rows of the same definition; a new one
starts a new baseline, and earlier rows are never reinterpreted. The noise rule is the same at
every step: a keep must beat the reference (the median of the baseline's repeats, then each
kept run's value) by more than max(`metric.min_delta`, the baseline's spread = max - min of its
repeats); the spread is carried by every keep, and the baseline is re-measured every
`loop.rebaseline_every` keeps.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labls.sandbox import gitsafe
from labls.sandbox.config import Config
from labls.sandbox.engine import Engine, RunRequest
from labls.sandbox.records import RunRecord
from labls.sandbox.wire import to_wire

from . import commits
from .buffers import OpenBuffers
from .commits import StepRefused, ensure_ready, git, refuse_a_tracked_state_dir
from .compare import Comparison, compare
from .editplan import EditPlan, restore, unified, write_atomically
from .edits import plan_edit
from .journal import Journal, StepLock
from .ledger import Ledger
from .protect import Guard

Waiter = Callable[[str], RunRecord]


@dataclass
class StepResult:
    verdict: str  # keep | discard | crash
    reason: str
    run: RunRecord | None = None
    baseline: RunRecord | None = None
    comparison: Comparison | None = None
    commit: str | None = None
    discarded_ref: str | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)
    baseline_runs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def wire_extra(self) -> dict[str, Any]:
        return {"delta": self.comparison.delta if self.comparison else None}


@dataclass
class Baseline:
    run: RunRecord | None
    value: float | None  # the reference: the repeats' median, or the last kept run's value
    spread: float  # max - min of the baseline's repeats, carried across keeps
    repeats: int
    what: str = "the last kept run"
    runs: list[str] = field(default_factory=list)  # baseline runs made by this step
    notes: list[str] = field(default_factory=list)


def guard_for(workspace: Path, cfg: Config) -> Guard:
    """The protected paths: labls's own, the trusted `edit.protect`, and the prepare script
    (it runs with the dataset cache writable)."""
    extra = [cfg.loop.prepare] if cfg.loop.prepare else []
    return Guard(workspace, cfg.state_path(workspace), [*cfg.edit.protect, *extra])


class Experiment:
    def __init__(self, engine: Engine, config: Config, wait: Waiter,
                 ledger: Ledger | None = None, buffers: OpenBuffers | None = None) -> None:
        self.engine = engine
        self.buffers = buffers  # an editor's open buffers of the files edited (buffers.py)
        self.cfg = config
        self.workspace = engine.workspace
        self.registry = engine.registry
        self.ledger = ledger or Ledger(engine.registry)
        self.wait = wait
        self.lock = StepLock(engine.state_dir)
        self.journal = Journal(engine.state_dir)

    def judgement(self, script: str, args: list[str]) -> str:
        m = self.cfg.metric
        return json.dumps({"metric": m.name, "goal": m.goal, "minDelta": m.min_delta,
                           "requireProvenance": m.require_provenance, "script": script,
                           "args": args, "evaluator": self._evaluator_hash()}, sort_keys=True)

    def _evaluator_hash(self) -> str | None:
        """A hash of the committed files `edit.protect` names (the evaluator, its data), from
        git's own blob ids, so nothing is read: a new evaluator is a new judgement."""
        if not self.cfg.edit.protect:
            return None
        guard = Guard(self.workspace, self.engine.state_dir, self.cfg.edit.protect)
        listed = gitsafe.run_bytes(self.workspace, "ls-files", "-s", "-z").stdout
        entries = sorted(line for line in listed.decode("utf-8", "surrogateescape").split("\0")
                         if "\t" in line and guard.listed(line.split("\t", 1)[1]))
        return hashlib.sha256("\n".join(entries).encode("utf-8", "surrogateescape")).hexdigest()

    # --- the step -------------------------------------------------------------------------
    def step(self, hypothesis: str, edit: dict[str, Any], script: str,
             timeout_sec: float | None = None, args: list[str] | None = None) -> StepResult:
        args = args or []
        with self.lock.held():
            refuse_a_tracked_state_dir(self.workspace, self.engine.state_dir)
            self._recover()
            ensure_ready(self.workspace, self.engine.state_dir)
            judge = self.judgement(script, args)
            base = self._baseline(judge, script, timeout_sec, args)
            if base.run is None:
                return self._record(StepResult("crash", "the baseline run failed: fix it first",
                                               baseline_runs=base.runs, notes=base.notes),
                                    hypothesis, None, judge)
            plan = plan_edit(self.workspace, edit.get("format", ""), edit.get("text"),
                             edit.get("path"), edit.get("edit"),
                             guard_for(self.workspace, self.cfg))
            refusal = None if plan.ok else "the edit did not apply"
            ignored = self._ignored_new_files(plan) if plan.ok else []
            if ignored:
                refusal = (f"the edit creates {', '.join(ignored)}, which git ignores: a step "
                           "commits what it changes, so it may not create ignored files")
            unsaved = self.buffers.unsaved({rel: plan.encoded(rel).decode("utf-8", "replace")
                                            for rel in sorted(plan.new)}) if (
                plan.ok and self.buffers) else []
            if unsaved and not refusal:
                refusal = (f"{', '.join(unsaved)} has unsaved changes in the editor: save or "
                           "revert them first (a step edits, runs and commits the file on disk, "
                           "and would overwrite them)")
            if refusal:
                return self._record(StepResult(
                    "crash", refusal, baseline=base.run, failures=[to_wire(f) for f in
                                                                   plan.failures],
                    baseline_runs=base.runs, notes=base.notes), hypothesis, None, judge)
            return self._try(plan, hypothesis, base, judge, script, timeout_sec, args)

    def _try(self, plan: EditPlan, hypothesis: str, base: Baseline, judge: str, script: str,
             timeout_sec: float | None, args: list[str]) -> StepResult:
        self.journal.begin(plan, hypothesis)
        result = StepResult("crash", "", baseline=base.run, baseline_runs=base.runs,
                            notes=list(base.notes))
        try:
            write_atomically(plan)
            followed = self._follow(sorted(plan.new))
            result.notes += followed
            run = self._run(script, timeout_sec, args, f"step: {hypothesis[:200]}")
            result = self._verdict(run, base)
            result.notes += followed
            if result.verdict == "keep":
                result.commit = commits.keep(self.workspace, plan, hypothesis,
                                             _metric_lines(result.comparison, run), run.run_id)
            else:
                result.discarded_ref = commits.set_aside(self.workspace, plan, hypothesis,
                                                         run.run_id, run.state)
        except BaseException as exc:
            result.verdict, result.commit = "crash", None
            result.reason = (f"the step failed after its edit ({type(exc).__name__}: {exc}); "
                             "its files are restored")
            if not isinstance(exc, Exception):  # interrupted: undo, note it, and go on up
                self._undo(plan, result)
                self._record(result, hypothesis, plan, judge)
                self.journal.end()
                raise
        if result.verdict != "keep":
            self._undo(plan, result)
        self._record(result, hypothesis, plan, judge, spread=base.spread)
        self.journal.end()
        return result

    def _undo(self, plan: EditPlan, result: StepResult) -> None:
        left = restore(plan)
        if left:
            result.notes.append("changed by someone else while the step ran, so left as they "
                                f"are (not reverted): {', '.join(left)}")
        result.notes += self._follow(sorted(set(plan.new) - set(left)))

    def _follow(self, paths: list[str]) -> list[str]:
        """The editor's open buffers of `paths` shown as the files now are on disk; a note
        for those it did not take."""
        if self.buffers is None or not paths:
            return []
        try:
            refused = self.buffers.follow(paths)
        except Exception as exc:  # the editor is gone or failed: the files on disk are right
            refused = [f"{', '.join(paths)} ({type(exc).__name__}: {exc})"]
        return [f"the editor did not take the step's change of its open buffers (the files on "
                f"disk have it): {', '.join(refused)}"] if refused else []

    def recover(self) -> None:
        """Undo a step a killed process left unfinished, with a ledger row saying so."""
        with self.lock.held():
            self._recover()

    def _recover(self) -> None:
        undone = self.journal.undo(self.workspace, guard_for(self.workspace, self.cfg))
        if undone is None:
            return
        reason = ("interrupted: the labls process running this step stopped; its edit is "
                  "undone" + (f" (left as changed since: {', '.join(undone['left'])})"
                              if undone["left"] else ""))
        self.ledger.add({"run_id": "", "status": "crash", "reason": reason,
                                  "commit_sha": git(self.workspace, "rev-parse", "HEAD"),
                                  "description": undone["hypothesis"], "diff": undone["diff"],
                                  "created_at": time.time()})

    def _verdict(self, run: RunRecord, base: Baseline) -> StepResult:
        metric = self.cfg.metric
        threshold = max(metric.min_delta, base.spread)
        comparison = compare(run, base.run, metric.name, metric.goal, threshold,
                             reference=base.value)
        result = StepResult("discard", comparison.reason, run, base.run, comparison,
                            baseline_runs=base.runs, notes=list(base.notes))
        rule = (f"noise rule: a keep must beat the reference ({base.what}) by more than "
                f"max(metric.min_delta {metric.min_delta:g}, baseline spread {base.spread:g}) "
                f"= {threshold:g}")
        provenance = run.provenance or {}
        if run.state != "succeeded" or comparison.current is None:
            result.verdict = "crash"
            result.reason = (run.error or {}).get("message", "") or comparison.reason
        elif comparison.verdict != "improvement":
            result.reason = f"{comparison.reason}; {rule}"
        elif provenance.get("verdict") != "verified" and (provenance.get("stamps")
                                                           or metric.require_provenance):
            result.reason = (f"provenance {provenance.get('verdict')}: "
                             f"{provenance.get('reason', '')}; a keep needs `verified`")
        else:
            result.verdict = "keep"
            result.reason = f"{comparison.reason}; {rule}"
        return result

    def _run(self, script: str, timeout_sec: float | None, args: list[str],
             label: str) -> RunRecord:
        started = self.engine.start(RunRequest(script, args, timeout_sec, label=label))
        return self.wait(started.run_id)

    def _baseline(self, judge: str, script: str, timeout_sec: float | None,
                  args: list[str]) -> Baseline:
        """What this step is compared with; measured first when this judgement has none, or
        when `loop.rebaseline_every` keeps have passed since it was."""
        kept = self.ledger.kept(judge)
        notes: list[str] = []
        if kept:
            first, latest = kept[-1], kept[0]
            keeps = len(kept) - 1 if first["repeats"] is not None else len(kept)
            every = self.cfg.loop.rebaseline_every
            record = self.registry.get(latest["run_id"])
            if record is not None and not (every and keeps >= every):
                repeats = first["repeats"] or 1
                what = (f"the median of {repeats} baseline run(s)" if latest is first
                        else "the last kept run")
                return Baseline(record, latest["metric"], latest["spread"] or 0.0, repeats,
                                what)
            notes.append(f"the baseline is measured again after {keeps} keeps "
                         f"(loop.rebaseline_every = {every})")
        elif any(e["status"] == "keep" and e["judge"] != judge for e in self.ledger.rows()):
            notes.append("the judgement (metric, goal, min_delta, script or its arguments) "
                         "differs from the ledger's earlier rows: a new baseline is measured "
                         "for it, and earlier rows keep their own")
        repeats = max(1, self.cfg.loop.baseline_repeats)
        runs = [self._run(script, timeout_sec, args, "baseline") for _ in range(repeats)]
        ids = [r.run_id for r in runs]
        head = git(self.workspace, "rev-parse", "HEAD")
        name = self.cfg.metric.name
        good = [r for r in runs if r.state == "succeeded" and name in r.metrics]
        if len(good) < len(runs):
            for r in runs:
                self._ledger(r, "crash", head, "baseline", judge, reason="the baseline failed")
            return Baseline(None, None, 0.0, repeats, runs=ids, notes=notes)
        values = [r.metrics[name] for r in good]
        median, spread = statistics.median(values), max(values) - min(values)
        nearest = min(good, key=lambda r: abs(r.metrics[name] - median))
        self._ledger(nearest, "keep", head, "baseline", judge, spread=spread, metric=median,
                     repeats=repeats, reason=f"baseline: median of {repeats} run(s), spread "
                                             f"{spread:g}")
        return Baseline(nearest, median, spread, repeats,
                        f"the median of {repeats} baseline run(s)", ids, notes)

    def _ignored_new_files(self, plan: EditPlan) -> list[str]:
        created = [rel for rel in plan.new if plan.old.get(rel) is None]
        if not created:
            return []
        # check-ignore takes no literal pathspecs; "./" keeps a leading ":" from being magic
        done = gitsafe.run(self.workspace, "check-ignore", "--stdin", "-z",
                           env={"GIT_LITERAL_PATHSPECS": "0"},
                           input_text="".join(f"./{rel}\0" for rel in created))
        if done.returncode not in (0, 1):
            raise StepRefused(f"git check-ignore: {done.stderr.strip()}")
        return [p.removeprefix("./") for p in done.stdout.split("\0") if p]

    # --- ledger ---------------------------------------------------------------------------
    def _record(self, result: StepResult, hypothesis: str, plan: EditPlan | None,
                judge: str, spread: float | None = None) -> StepResult:
        diff = "".join(unified(p, plan.old.get(p), t) for p, t in plan.new.items()) if plan else ""
        commit = result.commit or git(self.workspace, "rev-parse", "HEAD")
        reason = "; ".join([result.reason, *result.notes])
        if result.run is not None:
            self._ledger(result.run, result.verdict, commit, hypothesis, judge,
                         discarded_ref=result.discarded_ref or "", diff=diff, reason=reason,
                         spread=spread)
        else:
            self.ledger.add({"run_id": "", "status": result.verdict, "commit_sha": commit,
                                      "description": hypothesis, "diff": diff, "judge": judge,
                                      "reason": reason, "created_at": time.time()})
        return result

    def _ledger(self, run: RunRecord, status: str, commit: str, description: str, judge: str,
                discarded_ref: str = "", spread: float | None = None, diff: str = "",
                metric: float | None = None, repeats: int | None = None,
                reason: str = "") -> None:
        value = run.metrics.get(self.cfg.metric.name) if metric is None else metric
        self.ledger.add({
            "run_id": run.run_id, "status": status, "commit_sha": commit, "metric": value,
            "memory_gb": round((run.peak_gpu_mem_mb or 0) / 1024, 2), "description": description,
            "discarded_ref": discarded_ref, "spread": spread, "diff": diff, "judge": judge,
            "reason": reason, "repeats": repeats, "created_at": time.time()})


def _metric_lines(comparison: Comparison | None, run: RunRecord) -> str:
    assert comparison is not None and comparison.current is not None
    return (f"{comparison.metric}: {comparison.current:.6g} (baseline {comparison.baseline:.6g}, "
            f"delta {comparison.delta:+.6g})\nrun: {run.run_id}\n")


def results_tsv(ledger: list[dict[str, Any]]) -> str:
    """autoresearch's `results.tsv`: commit, metric, memory_gb, status, description."""
    rows = ["commit\tmetric\tmemory_gb\tstatus\tdescription"]
    for e in reversed(ledger):  # oldest first, as autoresearch appends
        metric = "" if e["metric"] is None else f"{e['metric']:.6f}"
        description = " ".join(str(e["description"]).split())
        rows.append(f"{e['commit_sha'][:7]}\t{metric}\t{e['memory_gb'] or 0:.1f}\t{e['status']}"
                    f"\t{description}")
    return "\n".join(rows) + "\n"
