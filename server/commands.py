"""`workspace/executeCommand` handlers: structure the arguments, call the lab session, answer.

One module-level function per command (`COMMANDS` maps the names). `LabError` from the lab
core becomes -32602 with its message. The params models (cattrs, ~5 ms) load on the first
command or when the pre-warm thread gets to them, not before `initialize` is answered.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pygls.exceptions import JsonRpcInvalidParams

from labls.lab.errors import LabError

from .app import LabServer, current_work_done_token

if TYPE_CHECKING:
    from labls.lab import params as p
else:

    class _OnFirstUse:
        def __getattr__(self, name: str) -> Any:
            return getattr(importlib.import_module("labls.lab.params"), name)

    p = _OnFirstUse()

Handler = Callable[[LabServer, Any], Awaitable[Any]]


def _one_object(args: tuple[Any, ...], command: str) -> Any:
    """`arguments` is a list holding one object (or empty, for all defaults)."""
    if len(args) > 1:
        raise JsonRpcInvalidParams(
            f"{command}: arguments must be a list holding one object, got {len(args)} elements")
    return args[0] if args else {}


def _in_thread(fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
    return asyncio.to_thread(fn, *args)


async def datasets_list(ls: LabServer, raw: Any) -> dict[str, Any]:
    from labls.lab.session import datasets_of

    p.structure(raw, p.Empty, "labls.datasets.list")
    return await _in_thread(datasets_of, ls.config)  # (needs no registry)


async def prompt_render(ls: LabServer, raw: Any) -> dict[str, Any]:
    from labls.lab.session import render_prompt

    prm = p.structure(raw, p.PromptRenderParams, "labls.prompt.render")
    record_of = ls.require_session().record if "runId" in prm.vars else None
    return await _in_thread(render_prompt, ls.config, ls.root, prm, "labls.prompt.render",
                            record_of)


async def run_start(ls: LabServer, raw: Any) -> dict[str, Any]:
    prm = p.structure(raw, p.RunStartParams, "labls.run.start")
    runs = ls.require_runs()
    record = await runs.start(prm, current_work_done_token.get())
    if prm.wait:
        return (await runs.wait(record.run_id)).to_wire()
    return {"runId": record.run_id, "state": record.state}


async def run_get(ls: LabServer, raw: Any) -> dict[str, Any]:
    prm = p.structure(raw, p.RunGetParams, "labls.run.get")
    return await _in_thread(ls.require_session().get, prm, "labls.run.get")


async def run_cancel(ls: LabServer, raw: Any) -> dict[str, Any]:
    prm = p.structure(raw, p.RunIdParams, "labls.run.cancel")
    record = await _in_thread(ls.require_session().cancel, prm.run_id, "labls.run.cancel")
    return record.to_wire()


async def run_list(ls: LabServer, raw: Any) -> dict[str, Any]:
    prm = p.structure(raw, p.RunListParams, "labls.run.list")
    records = await _in_thread(ls.require_session().recent, prm, "labls.run.list")
    return {"runs": [r.to_wire() for r in records]}


async def run_compare(ls: LabServer, raw: Any) -> dict[str, Any]:
    prm = p.structure(raw, p.RunCompareParams, "labls.run.compare")
    return await _in_thread(ls.require_session().compare_runs, prm, "labls.run.compare")


async def edit_apply(ls: LabServer, raw: Any) -> dict[str, Any]:
    from labls.lab.session import STEP_BUSY, edit_refused

    from . import edits

    prm = p.structure(raw, p.EditApplyParams, "labls.edit.apply")
    session = ls.require_session()
    if not prm.dry_run and session.step_running():
        return edit_refused(STEP_BUSY)
    plan = await _in_thread(session.plan_edit, prm, "labls.edit.apply")
    return await edits.apply(ls, plan, prm.dry_run)


async def experiment_step(ls: LabServer, raw: Any) -> dict[str, Any]:
    prm = p.structure(raw, p.ExperimentStepParams, "labls.experiment.step")
    return await _in_thread(ls.require_session().step, prm, "labls.experiment.step")


async def loop_start(ls: LabServer, raw: Any) -> dict[str, Any]:
    prm = p.structure(raw, p.LoopStartParams, "labls.loop.start")
    session = ls.require_session()
    spec = session.loop_spec(prm, "labls.loop.start")
    state = await _in_thread(session.loop_start, spec)
    return {"loopId": state.loop_id}


async def loop_get(ls: LabServer, raw: Any) -> dict[str, Any]:
    prm = p.structure(raw, p.LoopIdParams, "labls.loop.get")
    return await _in_thread(ls.require_session().loop_get, prm.loop_id, "labls.loop.get")


async def loop_stop(ls: LabServer, raw: Any) -> dict[str, Any]:
    prm = p.structure(raw, p.LoopIdParams, "labls.loop.stop")
    return await _in_thread(ls.require_session().loop_stop, prm.loop_id, "labls.loop.stop")


async def history(ls: LabServer, raw: Any) -> dict[str, Any]:
    prm = p.structure(raw, p.HistoryParams, "labls.history")
    if not 1 <= prm.limit <= 10_000:
        raise p.invalid("labls.history", "limit", f"must be 1..10000, got {prm.limit}")
    return {"experiments": await _in_thread(ls.require_session().history, prm.limit)}


COMMANDS: dict[str, Handler] = {
    "labls.datasets.list": datasets_list,
    "labls.prompt.render": prompt_render,
    "labls.run.start": run_start,
    "labls.run.get": run_get,
    "labls.run.cancel": run_cancel,
    "labls.run.list": run_list,
    "labls.run.compare": run_compare,
    "labls.edit.apply": edit_apply,
    "labls.experiment.step": experiment_step,
    "labls.loop.start": loop_start,
    "labls.loop.get": loop_get,
    "labls.loop.stop": loop_stop,
    "labls.history": history,
}


def _translated(name: str, handler: Handler) -> Callable[..., Awaitable[Any]]:
    """pygls calls a command with its arguments spread; the lab core's refusals are -32602."""

    async def command(ls: LabServer, *args: Any) -> Any:
        try:
            return await handler(ls, _one_object(args, name))
        except LabError as exc:
            raise JsonRpcInvalidParams(str(exc)) from None

    command.__name__ = handler.__name__  # (not functools.wraps: pygls reads the signature)
    return command


def register(server: LabServer) -> None:
    for name, handler in COMMANDS.items():
        server.command(name)(_translated(name, handler))
