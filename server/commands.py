"""`workspace/executeCommand` handlers. Routing only: structure args → call → answer.

Modules behind the handlers are imported on first use (and pre-warmed after `initialized`), so
that spawn → `initialize` answered costs no more than a bare pygls server.
"""

from __future__ import annotations

import asyncio
import importlib
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from pygls.exceptions import JsonRpcInvalidParams

from .app import LabServer, current_work_done_token

if TYPE_CHECKING:
    from . import params as p
else:

    class _OnFirstUse:
        """`params` (cattrs and its converter, ~5 ms) loads on the first command, or when the
        pre-warm thread gets to it, not before `initialize` is answered."""

        def __getattr__(self, name: str) -> Any:
            return getattr(importlib.import_module("labls.server.params"), name)

    p = _OnFirstUse()


def register(server: LabServer) -> None:
    @server.command("labls.datasets.list")
    async def datasets_list(ls: LabServer, *args: Any) -> dict[str, Any]:
        from labls.sandbox import datasets

        p.structure(args, p.Empty, "labls.datasets.list")
        cfg = ls.config
        scan = await asyncio.to_thread(datasets.scan, cfg.dataset_cache_root, cfg.datasets)
        return {
            "cacheRoot": scan.cache_root,
            "rootExists": scan.root_exists,
            "error": scan.root_error,
            "datasets": [_dataset_wire(d) for d in scan.datasets],
        }

    @server.command("labls.prompt.render")
    async def prompt_render(ls: LabServer, *args: Any) -> dict[str, Any]:
        from labls.lab.prompting import render_prompt
        from labls.prompts import PromptError

        prm = p.structure(args, p.PromptRenderParams, "labls.prompt.render")
        user_vars = dict(prm.vars)
        if "runId" in user_vars:  # fill the repair variables from that run's record
            from labls.lab.prompting import repair_context

            run_id = user_vars.pop("runId")
            record = await ls.require_runs().get(str(run_id))
            if record is None:
                raise p.invalid("labls.prompt.render", "vars.runId", f"names no run: {run_id!r}")
            user_vars.update(repair_context(record, ls.root))
        try:
            text, context = render_prompt(ls.config, prm.template, user_vars)
        except PromptError as exc:
            raise JsonRpcInvalidParams(f"labls.prompt.render: {exc}") from None
        return {
            "text": text,
            "template": prm.template,
            "datasets": {
                "cacheRoot": context["cache_root"],
                "available": [d["name"] for d in context["available"]],
                "unavailable": [d["name"] for d in context["unavailable"]],
            },
        }


    @server.command("labls.run.start")
    async def run_start(ls: LabServer, *args: Any) -> dict[str, Any]:
        from labls.sandbox.engine import RunInputError, RunRequest

        prm = p.structure(args, p.RunStartParams, "labls.run.start")
        runs = ls.require_runs()
        request = RunRequest(prm.script, prm.args, prm.timeout_sec, prm.gpus, prm.env, prm.label)
        try:
            record = await runs.start(request, current_work_done_token.get())
        except RunInputError as exc:
            raise JsonRpcInvalidParams(f"labls.run.start: {exc}") from None
        if prm.wait:
            return (await runs.wait(record.run_id)).to_wire()
        return {"runId": record.run_id, "state": record.state}

    @server.command("labls.run.get")
    async def run_get(ls: LabServer, *args: Any) -> dict[str, Any]:
        prm = p.structure(args, p.RunGetParams, "labls.run.get")
        wire = (await _record(ls, prm.run_id, "labls.run.get")).to_wire()
        if prm.fields is None:
            return wire
        unknown = sorted(set(prm.fields) - set(wire))
        if unknown:
            raise p.invalid("labls.run.get", "fields", f"names no field of a run record: "
                            f"{', '.join(unknown)} (fields: {', '.join(wire)})")
        return {k: wire[k] for k in ("runId", *prm.fields)}

    @server.command("labls.run.cancel")
    async def run_cancel(ls: LabServer, *args: Any) -> dict[str, Any]:
        prm = p.structure(args, p.RunIdParams, "labls.run.cancel")
        await _record(ls, prm.run_id, "labls.run.cancel")
        record = await ls.require_runs().cancel(prm.run_id)
        assert record is not None
        return record.to_wire()

    @server.command("labls.run.list")
    async def run_list(ls: LabServer, *args: Any) -> dict[str, Any]:
        from labls.sandbox.records import STATES

        prm = p.structure(args, p.RunListParams, "labls.run.list")
        if not 1 <= prm.limit <= 10_000:
            raise p.invalid("labls.run.list", "limit", f"must be 1..10000, got {prm.limit}")
        if prm.state is not None and prm.state not in STATES:
            raise p.invalid("labls.run.list", "state", f"must be one of {sorted(STATES)}")
        records = await ls.require_runs().recent(prm.limit, prm.state)
        return {"runs": [r.to_wire() for r in records]}

    @server.command("labls.run.compare")
    async def run_compare(ls: LabServer, *args: Any) -> dict[str, Any]:
        prm = p.structure(args, p.RunCompareParams, "labls.run.compare")
        record = await _record(ls, prm.run_id, "labls.run.compare")
        if prm.baseline_id is not None:
            await _record(ls, prm.baseline_id, "labls.run.compare", "baselineId")
        runs = ls.require_runs()
        comparison = await asyncio.to_thread(runs.compare, record, prm.baseline_id)
        return comparison.wire()


    @server.command("labls.edit.apply")
    async def edit_apply(ls: LabServer, *args: Any) -> dict[str, Any]:
        from labls.lab.editplan import EditError
        from labls.lab.edits import plan_edit
        from labls.lab.experiment import guard_for
        from labls.lab.journal import StepLock

        from . import edits

        prm = p.structure(args, p.EditApplyParams, "labls.edit.apply")
        if not prm.dry_run and StepLock(ls.config.state_path(ls.root)).busy():
            return {"ok": False, "via": "none", "files": [], "failures": [], "reason":
                    "busy: an experiment step is running in this workspace; its discard "
                    "would undo this edit, so it is refused (retry once the step ends)"}
        try:
            plan = await asyncio.to_thread(plan_edit, ls.root, prm.format, prm.text, prm.path,
                                           prm.edit, guard_for(ls.root, ls.config))
        except EditError as exc:
            raise JsonRpcInvalidParams(f"labls.edit.apply: {exc}") from None
        return await edits.apply(ls, plan, prm.dry_run)

    @server.command("labls.experiment.step")
    async def experiment_step(ls: LabServer, *args: Any) -> dict[str, Any]:
        from labls.lab.commits import StepRefused
        from labls.lab.experiment import StepResult
        from labls.sandbox.engine import RunInputError

        prm = p.structure(args, p.ExperimentStepParams, "labls.experiment.step")
        if "format" not in prm.edit:
            raise p.invalid("labls.experiment.step", "edit.format", "is required")
        _judged_script(ls, prm.script, "labls.experiment.step")
        script = ls.config.loop.script
        try:
            result = await ls.require_runs().step(prm.hypothesis, prm.edit, script,
                                                  prm.timeout_sec, prm.args)
        except StepRefused as exc:  # the same shape as any step's answer
            return {"ok": False, **StepResult("crash", str(exc)).wire()}
        except RunInputError as exc:  # the baseline's run, asked as the step asks
            raise JsonRpcInvalidParams(f"labls.experiment.step: {exc}") from None
        return {"ok": True, **result.wire()}


    @server.command("labls.loop.start")
    async def loop_start(ls: LabServer, *args: Any) -> dict[str, Any]:
        from labls.lab.edits import aider_available
        from labls.lab.loop import LoopSpec

        prm = p.structure(args, p.LoopStartParams, "labls.loop.start")
        if not 1 <= prm.iterations <= 10_000:
            raise p.invalid("labls.loop.start", "iterations", "must be 1..10000")
        if prm.time_budget_sec is not None and prm.time_budget_sec <= 0:
            raise p.invalid("labls.loop.start", "timeBudgetSec", "must be > 0")
        if not aider_available():
            raise JsonRpcInvalidParams("labls.loop.start: the loop drives the model through "
                                       "aider: pip install 'labls[aider]'")
        cfg = ls.config
        _check_loop_args(ls, prm)
        spec = LoopSpec(prm.iterations, prm.time_budget_sec, prm.model or cfg.loop.model,
                        prm.program or "program.md", prm.script or cfg.loop.script,
                        prepare=prm.prepare or cfg.loop.prepare or None,
                        prepare_timeout_sec=prm.prepare_timeout_sec)
        state = await asyncio.to_thread(ls.require_runs().loop_start, spec)
        return {"loopId": state.loop_id}

    @server.command("labls.loop.get")
    async def loop_get(ls: LabServer, *args: Any) -> dict[str, Any]:
        return await _loop(ls, args, "labls.loop.get", ls.require_runs().loop_get)

    @server.command("labls.loop.stop")
    async def loop_stop(ls: LabServer, *args: Any) -> dict[str, Any]:
        return await _loop(ls, args, "labls.loop.stop", ls.require_runs().loop_stop)


def _check_loop_args(ls: LabServer, prm: Any) -> None:
    """What an agent may not choose: the model (where the code and prompts are sent) and a
    prepare script (the one run that may write the dataset cache) are the user's config's;
    the script is the configured one and the program a workspace file."""
    from labls.lab.editplan import EditError, confine

    cfg, command = ls.config, "labls.loop.start"
    if prm.model is not None and prm.model != cfg.loop.model:
        raise p.invalid(command, "model", f"{prm.model!r} is not the configured loop.model "
                        f"{cfg.loop.model!r}; only the user's config chooses the model")
    if prm.prepare is not None and prm.prepare != cfg.loop.prepare:
        raise p.invalid(command, "prepare", "only the user's config (loop.prepare) names a "
                        "prepare script: it is the one run that may write the dataset cache")
    _judged_script(ls, prm.script, command)
    if prm.program is not None:
        try:
            confine(ls.root, prm.program)
        except EditError as exc:
            raise p.invalid(command, "program", str(exc)) from None


def _judged_script(ls: LabServer, script: str | None, command: str) -> None:
    """What a step runs is what it is judged by: the user's `loop.script`, never a script the
    agent picks (one that prints whatever it likes would get any edit kept)."""
    if script is not None and script != ls.config.loop.script:
        raise p.invalid(command, "script", f"{script!r} is not the configured loop.script "
                        f"{ls.config.loop.script!r}; only the user's config chooses what a step "
                        "is judged by")


async def _loop(ls: LabServer, args: tuple[Any, ...], command: str, action: Any) -> Any:
    prm = p.structure(args, p.LoopIdParams, command)
    state = await asyncio.to_thread(action, prm.loop_id)
    if state is None:
        raise p.invalid(command, "loopId", f"names no loop: {prm.loop_id!r}")
    return state


async def _record(ls: LabServer, run_id: str, command: str, field: str = "runId") -> Any:
    record = await ls.require_runs().get(run_id)
    if record is None:
        raise p.invalid(command, field, f"names no run: {run_id!r}")
    return record


def _dataset_wire(d: Any) -> dict[str, Any]:
    data = asdict(d)
    data.pop("example")
    return data
