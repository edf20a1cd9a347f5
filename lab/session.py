"""The lab session: one workspace's runs, baselines, edits, steps, loops and ledger, behind
every front-end (the language server, the MCP server, the CLI).

Each operation takes its typed params (`params.py`), checks what an agent may not choose, and
answers the wire shape PROTOCOL.md gives, or raises `LabError` with the message every front-end
shows. Operations block (SQLite, git, a run's wait): async front-ends call them in a thread.
What is a front-end's own stays there: LSP progress and diagnostics, MCP notifications.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from labls.sandbox import datasets
from labls.sandbox.config import Config
from labls.sandbox.engine import Engine, RunInputError, RunListener, RunRequest
from labls.sandbox.records import PAGE_METRICS, STATES, WIRE_FIELDS, RunRecord
from labls.sandbox.wire import to_wire

from . import params as p
from .buffers import OpenBuffers
from .compare import Comparison, compare
from .errors import LabError
from .ledger import Ledger

log = logging.getLogger("labls.session")

STEP_BUSY = ("busy: an experiment step is running in this workspace; its discard would undo "
             "this edit, so it is refused (retry once the step ends)")


class LabSession:
    def __init__(self, root: Path, config: Config, listener: RunListener | None = None,
                 launcher: Any = None) -> None:
        self.root = root
        self.engine = Engine(root, config, listener, launcher)
        self._step_lock = threading.Lock()
        self._loops: dict[str, Any] = {}
        self._ledger: Ledger | None = None
        self._ledger_lock = threading.Lock()
        self.buffers: OpenBuffers | None = None  # a front-end's editor (buffers.py), if any
        if self.engine.registry.interrupted:
            log.info("runs interrupted by an earlier stop: %s", self.engine.registry.interrupted)

    @property
    def ledger(self) -> Ledger:
        """The experiment ledger and the loops' state, opened on first use (as the registry)."""
        with self._ledger_lock:
            if self._ledger is None:
                self._ledger = Ledger(self.engine.registry)
            return self._ledger

    @property
    def config(self) -> Config:
        return self.engine.config

    @config.setter
    def config(self, config: Config) -> None:  # new runs use it; running ones keep theirs
        self.engine.config = config

    # --- datasets and prompts (what needs no registry: `datasets_of`, `render_prompt`) --------
    def datasets(self) -> dict[str, Any]:
        return datasets_of(self.config)

    def render_prompt(self, prm: p.PromptRenderParams, command: str) -> dict[str, Any]:
        return render_prompt(self.config, self.root, prm, command, self.record)

    # --- runs -----------------------------------------------------------------------------------
    def start(self, prm: p.RunStartParams, command: str, script_text: str | None = None,
              warnings: list[dict[str, Any]] | None = None) -> RunRecord:
        """A run; `script_text` (a front-end's unsaved buffer) replaces the script's text in
        the run's own work folder."""
        request = RunRequest(prm.script, prm.args, prm.timeout_sec, prm.gpus, prm.env, prm.label,
                             script_text=script_text, warnings=list(warnings or []))
        try:
            return self.engine.start(request)
        except RunInputError as exc:
            raise LabError(f"{command}: {exc}") from None

    def record(self, run_id: str, command: str, field: str = "runId",
               page: tuple[int, int] | None = None) -> RunRecord:
        """The run's record (with `page`, only that page of its metrics), or -32602."""
        record = self.engine.get(run_id, page)
        if record is None:
            raise p.invalid(command, field, f"names no run: {run_id!r}")
        return record

    def get(self, prm: p.RunGetParams, command: str) -> dict[str, Any]:
        """The record with a page of its metrics (all of them up to `PAGE_METRICS`); with
        `fields`, only those. A page is read from the parts of the stored record that hold it."""
        limit = PAGE_METRICS if prm.metrics_limit is None else prm.metrics_limit
        if not 0 <= limit <= PAGE_METRICS:
            raise p.invalid(command, "metricsLimit", f"must be 0 to {PAGE_METRICS}, got {limit}")
        if prm.metrics_offset < 0:
            raise p.invalid(command, "metricsOffset", f"must be >= 0, got {prm.metrics_offset}")
        if prm.fields is not None:
            unknown = sorted(set(prm.fields) - set(WIRE_FIELDS))
            if unknown:
                raise p.invalid(command, "fields", f"names no field of a run record: "
                                f"{', '.join(unknown)} (fields: {', '.join(WIRE_FIELDS)})")
            if not {"metrics", "metricSources"} & set(prm.fields):
                limit = 0  # no metrics asked for: none decoded
        wire = self.record(prm.run_id, command, page=(prm.metrics_offset, limit)).to_wire()
        if prm.fields is None:
            return wire
        return {k: wire[k] for k in ("runId", *prm.fields)}

    def wait(self, run_id: str, command: str, timeout: float | None = None) -> RunRecord:
        """The run's record once final, or as it is when `timeout` passes first."""
        self.record(run_id, command)
        record = self.engine.wait(run_id, timeout)
        assert record is not None
        return record

    def cancel(self, run_id: str, command: str) -> RunRecord:
        self.record(run_id, command)
        record = self.engine.cancel(run_id, 30)
        assert record is not None
        return record

    def recent(self, prm: p.RunListParams, command: str) -> list[RunRecord]:
        if not 1 <= prm.limit <= 10_000:
            raise p.invalid(command, "limit", f"must be 1..10000, got {prm.limit}")
        if prm.state is not None and prm.state not in STATES:
            raise p.invalid(command, "state", f"must be one of {sorted(map(str, STATES))}")
        return self.engine.recent(prm.limit, prm.state)

    def last_run_of(self, script: str) -> RunRecord | None:
        """The latest ended run of `script` (a workspace path or `-m module`), whole."""
        run_id = self.engine.registry.last_final(script)
        return self.engine.get(run_id) if run_id else None

    def last_summary_of(self, script: str) -> RunRecord | None:
        """The same run as a summary (its metrics bounded, the judged one first)."""
        registry = self.engine.registry
        run_id = registry.last_final(script)
        return registry.summary(run_id) if run_id else None

    def baseline_for(self, record: RunRecord, baseline_id: str | None) -> RunRecord | None:
        """What a run is compared with: the one asked for, else the last kept experiment, else
        the latest earlier success of the same script with the judged metric."""
        registry = self.engine.registry
        if baseline_id:
            return registry.get(baseline_id)
        kept = self.ledger.last_kept()
        if kept is not None and kept[0] != record.run_id and (run := registry.get(kept[0])):
            return run
        return registry.previous_success(record.script, record.run_id, self.config.metric.name)

    def compare(self, record: RunRecord, baseline_id: str | None = None) -> Comparison:
        metric = self.config.metric
        return compare(record, self.baseline_for(record, baseline_id), metric.name,
                       metric.goal, metric.min_delta)

    def compare_runs(self, prm: p.RunCompareParams, command: str) -> dict[str, Any]:
        record = self.record(prm.run_id, command)
        if prm.baseline_id is not None:
            self.record(prm.baseline_id, command, "baselineId")
        return to_wire(self.compare(record, prm.baseline_id))

    # --- edits and steps --------------------------------------------------------------------------
    def plan_edit(self, prm: p.EditApplyParams, command: str,
                  buffers: dict[str, tuple[str, int]] | None = None) -> Any:
        """The edit's plan (its failures in it), or LabError for a malformed request;
        `buffers`: an editor's open buffers (text, version) by path, planned against."""
        from .editplan import EditError
        from .edits import plan_edit
        from .experiment import guard_for

        try:
            return plan_edit(self.root, prm.format, prm.text, prm.path, prm.edit,
                             guard_for(self.root, self.config), buffers)
        except EditError as exc:
            raise LabError(f"{command}: {exc}") from None

    def step_running(self) -> bool:
        from .journal import StepLock

        return StepLock(self.config.state_path(self.root)).busy()

    def apply_edit(self, prm: p.EditApplyParams, command: str) -> dict[str, Any]:
        """The edit written on disk, atomically (front-ends with an editor go through it)."""
        from .editplan import write_atomically

        if not prm.dry_run and self.step_running():
            return edit_refused(STEP_BUSY)
        plan = self.plan_edit(prm, command)
        if not plan.ok or prm.dry_run:
            return edit_answer(plan, "dryRun")
        write_atomically(plan)
        return edit_answer(plan, "disk")

    def step(self, prm: p.ExperimentStepParams, command: str) -> dict[str, Any]:
        """One experiment step; steps never overlap (they share the git working tree)."""
        from .commits import StepRefused
        from .experiment import StepResult

        if "format" not in prm.edit:
            raise p.invalid(command, "edit.format", "is required")
        self.judged_script(prm.script, command)
        with self._step_lock:
            try:
                result = self.experiment().step(prm.hypothesis, prm.edit, self.config.loop.script,
                                                prm.timeout_sec, prm.args)
            except StepRefused as exc:  # the same shape as any step's answer
                return {"ok": False, **to_wire(StepResult("crash", str(exc)))}
            except RunInputError as exc:  # the baseline's run, asked as the step asks
                raise LabError(f"{command}: {exc}") from None
        paged = replace(result, run=result.run and result.run.page(),
                        baseline=result.baseline and result.baseline.page())
        return {"ok": True, **to_wire(paged)}  # (records with a page of their metrics)

    def judged_script(self, script: str | None, command: str) -> None:
        """What a step runs is what it is judged by: the user's `loop.script`, never a script
        the agent picks (one that prints whatever it likes would get any edit kept)."""
        configured = self.config.loop.script
        if script is not None and script != configured:
            raise p.invalid(command, "script", f"{script!r} is not the configured loop.script "
                            f"{configured!r}; only the user's config chooses what a step is "
                            "judged by")

    def experiment(self) -> Any:
        from .experiment import Experiment

        def wait(run_id: str) -> RunRecord:
            record = self.engine.wait(run_id)
            assert record is not None
            return record

        return Experiment(self.engine, self.config, wait, self.ledger, self.buffers)

    def history(self, prm: p.HistoryParams, command: str) -> dict[str, Any]:
        """The experiment ledger, most recent first."""
        if not 1 <= prm.limit <= 10_000:
            raise p.invalid(command, "limit", f"must be 1..10000, got {prm.limit}")
        return {"experiments": self.ledger.rows(prm.limit)}

    # --- autonomous loops -----------------------------------------------------------------------
    def loop_spec(self, prm: p.LoopStartParams, command: str) -> Any:
        """The loop asked for, once what an agent may not choose is checked: the model (where
        the code and prompts are sent) and a prepare script (the one run that may write the
        dataset cache) are the user's config's; the script is the configured one and the
        program a workspace file."""
        from .editplan import EditError, confine
        from .edits import aider_available
        from .loop import LoopSpec

        cfg = self.config
        if not 1 <= prm.iterations <= 10_000:
            raise p.invalid(command, "iterations", "must be 1..10000")
        if prm.time_budget_sec is not None and prm.time_budget_sec <= 0:
            raise p.invalid(command, "timeBudgetSec", "must be > 0")
        if prm.model is not None and prm.model != cfg.loop.model:
            raise p.invalid(command, "model", f"{prm.model!r} is not the configured loop.model "
                            f"{cfg.loop.model!r}; only the user's config chooses the model")
        if prm.prepare is not None and prm.prepare != cfg.loop.prepare:
            raise p.invalid(command, "prepare", "only the user's config (loop.prepare) names a "
                            "prepare script: it is the one run that may write the dataset cache")
        self.judged_script(prm.script, command)
        if prm.program is not None:
            try:
                confine(self.root, prm.program)
            except EditError as exc:
                raise p.invalid(command, "program", str(exc)) from None
        if not aider_available():
            raise LabError(f"{command}: the loop drives the model through aider: "
                           "pip install 'labls[aider]'")
        return LoopSpec(prm.iterations, prm.time_budget_sec, prm.model or cfg.loop.model,
                        prm.program or "program.md", prm.script or cfg.loop.script,
                        prepare=prm.prepare or cfg.loop.prepare or None,
                        prepare_timeout_sec=prm.prepare_timeout_sec)

    def loop_start(self, spec: Any, proposer: Any = None) -> Any:
        """Start a loop (a `LoopSpec`, or a `LoopState` to resume); its state."""
        from .loop import AutoLoop, LoopState, aider_proposer, new_loop_id

        state = spec if isinstance(spec, LoopState) else LoopState(new_loop_id(), spec)
        loop = AutoLoop(self.experiment(), state, proposer or aider_proposer(state.spec.model),
                        self._save_loop)
        self._loops[state.loop_id] = loop
        loop.start()
        return state

    def running_loop(self, loop_id: str) -> Any:
        """The `AutoLoop` this session runs under that id (its thread, its stop flag)."""
        return self._loops[loop_id]

    def loop_get(self, loop_id: str, command: str) -> dict[str, Any]:
        from .loop import state_from_json

        if loop_id in self._loops:
            wire: dict[str, Any] = to_wire(self._loops[loop_id].state)
            return wire
        data = self.ledger.get_loop(loop_id)
        if data is None:
            raise p.invalid(command, "loopId", f"names no loop: {loop_id!r}")
        resumed: dict[str, Any] = to_wire(state_from_json(data))
        return resumed

    def loop_stop(self, loop_id: str, command: str) -> dict[str, Any]:
        loop = self._loops.get(loop_id)
        if loop is not None:
            loop.stop(timeout=60)
        return self.loop_get(loop_id, command)

    def resume_loops(self) -> None:
        from .loop import state_from_json

        for data in self.ledger.orphan_loops():
            state = state_from_json(data)
            log.info("resuming loop %s at iteration %d", state.loop_id, len(state.iterations) + 1)
            self.loop_start(state)

    def _save_loop(self, state: Any) -> None:
        from .loop import state_to_json

        self.ledger.save_loop(state.loop_id, state.state, state_to_json(state))

    def close(self) -> None:
        """Every loop asked to stop, every run stopped (whole process trees), the engine shut."""
        for loop in list(self._loops.values()):
            loop.stop_requested.set()
        self.engine.stop_all(timeout=5.0)
        self.engine.launcher.close()  # its idle standby and that one's cgroup


def datasets_of(cfg: Config) -> dict[str, Any]:
    """`labls.datasets.list`: the cache root and which datasets are really there."""
    wire: dict[str, Any] = to_wire(datasets.scan(cfg.dataset_cache_root, cfg.datasets))
    return wire


def render_prompt(cfg: Config, root: Path, prm: p.PromptRenderParams, command: str,
                  record_of: Any = None) -> dict[str, Any]:
    """`labls.prompt.render`; `vars.runId` fills the repair variables from that run's record
    (`record_of(run_id, command, field)`, the session's)."""
    from labls.prompts import PromptError

    from .prompting import render_prompt as render
    from .prompting import repair_context

    user_vars = dict(prm.vars)
    if "runId" in user_vars:
        if record_of is None:
            raise p.invalid(command, "vars.runId", "needs the run registry, which is unusable")
        record = record_of(str(user_vars.pop("runId")), command, "vars.runId")
        user_vars.update(repair_context(record, root))
    try:
        text, context = render(cfg, prm.template, user_vars)
    except PromptError as exc:
        raise LabError(f"{command}: {exc}") from None
    return {"text": text, "template": prm.template, "datasets": {
        "cacheRoot": context["cache_root"],
        "available": [d["name"] for d in context["available"]],
        "unavailable": [d["name"] for d in context["unavailable"]]}}


def edit_refused(reason: str, via: str = "none") -> dict[str, Any]:
    return {"ok": False, "via": via, "files": [], "failures": [], "reason": reason}


def edit_answer(plan: Any, via: str) -> dict[str, Any]:
    """`labls.edit.apply`'s answer for a plan: its failures, or what was (or would be) done."""
    failures = [to_wire(f) for f in plan.failures]
    if not plan.ok:
        return {**edit_refused(failures[0]["reason"] if failures else "nothing to apply"),
                "failures": failures}
    files = plan.files()
    if via != "dryRun":
        for f in files:
            f.pop("diff")
    return {"ok": True, "via": via, "files": files, "failures": []}
