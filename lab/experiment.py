"""One autoresearch step: edit → time-boxed run → compare with the baseline → keep or discard.

- keep: the edited files are committed; the message holds the hypothesis and the metric.
- discard (no improvement beyond `metric.min_delta` and the baseline's measured spread) and
  crash (failed run, timeout, edit that does not apply): the files are restored, and the edited
  tree is committed off-branch under `refs/labls/discarded/<runId>` (its diff also goes into the
  ledger), so no experiment's code is ever lost.
With an empty ledger the current code is run first (`loop.baseline_repeats` times) and kept as
the baseline. The workspace must be a git repository whose tracked files are clean: a step never
mixes its changes with the user's.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labls.sandbox.config import Config
from labls.sandbox.engine import Engine, RunRequest
from labls.sandbox.records import RunRecord

from .compare import Comparison, compare
from .edits import EditPlan, plan_edit, restore, unified, write_atomically

Waiter = Callable[[str], RunRecord]


class StepRefused(Exception):
    """The workspace is not in a state where a step can run (not git, or dirty)."""


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

    def wire(self) -> dict[str, Any]:
        c = self.comparison
        return {"verdict": self.verdict, "reason": self.reason,
                "run": self.run.to_wire() if self.run else None,
                "baseline": self.baseline.to_wire() if self.baseline else None,
                "delta": c.delta if c else None, "comparison": c.wire() if c else None,
                "commit": self.commit, "discardedRef": self.discarded_ref,
                "failures": self.failures, "baselineRuns": self.baseline_runs}


def git(workspace: Path, *args: str, env: dict[str, str] | None = None,
        check: bool = True) -> str:
    done = subprocess.run(["git", "-C", str(workspace), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, check=False)
    if check and done.returncode != 0:
        raise StepRefused(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def ensure_ready(workspace: Path, state_dir: Path) -> None:
    if not (workspace / ".git").exists():
        raise StepRefused(f"{workspace} is not a git repository: `git init` and commit first")
    if not git(workspace, "rev-parse", "--verify", "-q", "HEAD", check=False):
        raise StepRefused("the repository has no commit yet: commit the experiment first")
    exclude = workspace / ".git" / "info" / "exclude"
    rel_state = os.path.relpath(state_dir, workspace)
    if not rel_state.startswith(".."):
        exclude.parent.mkdir(parents=True, exist_ok=True)
        lines = exclude.read_text().splitlines() if exclude.exists() else []
        if f"/{rel_state}/" not in lines:
            exclude.write_text("\n".join([*lines, f"/{rel_state}/"]) + "\n")
    dirty = git(workspace, "status", "--porcelain", "--untracked-files=no")
    if dirty:
        raise StepRefused("tracked files have uncommitted changes; commit or stash them first:\n"
                          + dirty)


class Experiment:
    def __init__(self, engine: Engine, config: Config, wait: Waiter) -> None:
        self.engine = engine
        self.cfg = config
        self.workspace = engine.workspace
        self.registry = engine.registry
        self.wait = wait

    # --- the step -------------------------------------------------------------------------
    def step(self, hypothesis: str, edit: dict[str, Any], script: str,
             timeout_sec: float | None = None, args: list[str] | None = None) -> StepResult:
        ensure_ready(self.workspace, self.engine.state_dir)
        baseline, spread, baseline_runs = self._baseline(script, timeout_sec, args or [])
        if baseline is None:
            return self._record(StepResult("crash", "the baseline run failed: fix it first",
                                           baseline_runs=baseline_runs), hypothesis, None)
        plan = plan_edit(self.workspace, edit.get("format", ""), edit.get("text"),
                         edit.get("path"), edit.get("edit"))
        if not plan.ok:
            result = StepResult("crash", "the edit did not apply", baseline=baseline,
                                failures=[f.wire() for f in plan.failures],
                                baseline_runs=baseline_runs)
            return self._record(result, hypothesis, None)
        write_atomically(plan)
        try:
            run = self._run(script, timeout_sec, args or [], f"step: {hypothesis}")
        except BaseException:
            restore(plan)
            raise
        metric = self.cfg.metric
        comparison = compare(run, baseline, metric.name, metric.goal,
                             max(metric.min_delta, spread))
        result = StepResult("discard", comparison.reason, run, baseline, comparison,
                            baseline_runs=baseline_runs)
        if run.state != "succeeded" or comparison.current is None:
            result.verdict = "crash"
            result.reason = (run.error or {}).get("message", "") or comparison.reason
        elif comparison.verdict == "improvement":
            result.verdict = "keep"
        if result.verdict == "keep":
            result.commit = self._commit(plan, hypothesis, run, comparison)
        else:
            result.discarded_ref = self._set_aside(plan, hypothesis, run)
            restore(plan)
        return self._record(result, hypothesis, plan)

    def _run(self, script: str, timeout_sec: float | None, args: list[str],
             label: str) -> RunRecord:
        started = self.engine.start(RunRequest(script, args, timeout_sec, label=label))
        return self.wait(started.run_id)

    def _baseline(self, script: str, timeout_sec: float | None,
                  args: list[str]) -> tuple[RunRecord | None, float, list[str]]:
        """The last kept run and the spread recorded with it; run it first on a fresh ledger."""
        kept = self.registry.last_kept()
        if kept is not None:
            return kept[0], kept[1], []
        runs = [self._run(script, timeout_sec, args, "baseline")
                for _ in range(max(1, self.cfg.loop.baseline_repeats))]
        ids = [r.run_id for r in runs]
        good = [r for r in runs if r.state == "succeeded" and self.cfg.metric.name in r.metrics]
        if len(good) < len(runs):
            for r in runs:
                self._ledger(r, "crash", git(self.workspace, "rev-parse", "HEAD"), "baseline")
            return None, 0.0, ids
        values = [r.metrics[self.cfg.metric.name] for r in good]
        spread = max(values) - min(values)
        best = (min if self.cfg.metric.goal == "minimize" else max)(
            good, key=lambda r: r.metrics[self.cfg.metric.name])
        if len(values) > 1:
            best.metrics = {**best.metrics, self.cfg.metric.name: statistics.median(values)}
        head = git(self.workspace, "rev-parse", "HEAD")
        self._ledger(best, "keep", head, "baseline", spread=spread)
        return best, spread, ids

    # --- git ----------------------------------------------------------------------------------
    def _commit(self, plan: EditPlan, hypothesis: str, run: RunRecord,
                comparison: Comparison) -> str:
        git(self.workspace, "add", "--", *plan.new)
        message = (f"labls: {hypothesis}\n\n{comparison.metric}: {comparison.current:.6g} "
                   f"(baseline {comparison.baseline:.6g}, delta {comparison.delta:+.6g})\n"
                   f"run: {run.run_id}\n")
        git(self.workspace, "-c", "user.name=labls", "-c", "user.email=labls@localhost",
            "commit", "-q", "--no-verify", "-m", message, "--", *plan.new)
        return git(self.workspace, "rev-parse", "HEAD")

    def _set_aside(self, plan: EditPlan, hypothesis: str, run: RunRecord) -> str:
        """Commit the edited tree off-branch, with a throwaway index; HEAD does not move."""
        ref = f"refs/labls/discarded/{run.run_id}"
        with tempfile.TemporaryDirectory() as tmp:
            index = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            git(self.workspace, "read-tree", "HEAD", env=index)
            git(self.workspace, "add", "--", *plan.new, env=index)
            tree = git(self.workspace, "write-tree", env=index)
        commit = git(self.workspace, "-c", "user.name=labls", "-c", "user.email=labls@localhost",
                     "commit-tree", tree, "-p", "HEAD", "-m",
                     f"labls discarded: {hypothesis}\n\nrun: {run.run_id} ({run.state})\n")
        git(self.workspace, "update-ref", ref, commit)
        return ref

    # --- ledger ---------------------------------------------------------------------------
    def _record(self, result: StepResult, hypothesis: str, plan: EditPlan | None) -> StepResult:
        diff = "".join(unified(p, plan.old.get(p), t) for p, t in plan.new.items()) if plan else ""
        commit = result.commit or git(self.workspace, "rev-parse", "HEAD")
        if result.run is not None:
            self._ledger(result.run, result.verdict, commit, hypothesis,
                         discarded_ref=result.discarded_ref or "", diff=diff)
        else:
            self.registry.add_ledger({"run_id": "", "status": result.verdict, "commit_sha": commit,
                                      "description": hypothesis, "diff": diff,
                                      "created_at": time.time()})
        return result

    def _ledger(self, run: RunRecord, status: str, commit: str, description: str,
                discarded_ref: str = "", spread: float | None = None, diff: str = "") -> None:
        metric = run.metrics.get(self.cfg.metric.name)
        self.registry.add_ledger({
            "run_id": run.run_id, "status": status, "commit_sha": commit, "metric": metric,
            "memory_gb": round((run.peak_gpu_mem_mb or 0) / 1024, 2), "description": description,
            "discarded_ref": discarded_ref, "spread": spread, "diff": diff,
            "created_at": time.time()})


def results_tsv(ledger: list[dict[str, Any]]) -> str:
    """autoresearch's `results.tsv`: commit, metric, memory_gb, status, description."""
    rows = ["commit\tmetric\tmemory_gb\tstatus\tdescription"]
    for e in reversed(ledger):  # oldest first, as autoresearch appends
        metric = "" if e["metric"] is None else f"{e['metric']:.6f}"
        description = " ".join(str(e["description"]).split())
        rows.append(f"{e['commit_sha'][:7]}\t{metric}\t{e['memory_gb'] or 0:.1f}\t{e['status']}"
                    f"\t{description}")
    return "\n".join(rows) + "\n"
