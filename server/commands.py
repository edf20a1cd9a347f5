"""`workspace/executeCommand` handlers: structure the arguments, call the lab session, answer.

One module-level function per command (`COMMANDS` maps the names). `LabError` from the lab
core becomes -32602 with its message. The params models (cattrs, ~5 ms) load on the first
command or when the pre-warm thread gets to them, not before `initialize` is answered.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from labls.lab.errors import LabError

from .app import Encoded, LabServer, current_work_done_token

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


async def datasets_list(ls: LabServer, prm: p.Empty) -> dict[str, Any]:
    from labls.lab.session import datasets_of

    return await _in_thread(datasets_of, ls.config)  # (needs no registry)


async def prompt_render(ls: LabServer, prm: p.PromptRenderParams) -> dict[str, Any]:
    from labls.lab.session import render_prompt

    record_of = ls.require_session().record if "runId" in prm.vars else None
    return await _in_thread(render_prompt, ls.config, ls.root, prm, "labls.prompt.render",
                            record_of)


async def run_start(ls: LabServer, prm: p.RunStartParams) -> dict[str, Any]:
    runs = ls.require_runs()
    record = await runs.start(prm, current_work_done_token.get())
    if prm.wait:
        return (await runs.wait(record.run_id)).page().to_wire()
    return {"runId": record.run_id, "state": record.state}


async def run_get(ls: LabServer, prm: p.RunGetParams) -> dict[str, Any]:
    return await _in_thread(ls.require_session().get, prm, "labls.run.get")


async def run_cancel(ls: LabServer, prm: p.RunIdParams) -> dict[str, Any]:
    record = await _in_thread(ls.require_session().cancel, prm.run_id, "labls.run.cancel")
    return record.page().to_wire()


async def run_show_log(ls: LabServer, prm: p.RunIdParams) -> dict[str, Any]:
    """Open the run's log in the editor (`window/showDocument`)."""
    record = await _in_thread(ls.require_session().record, prm.run_id, "labls.run.showLog")
    return await _show(ls, Path(record.log_path))


async def prompt_show(ls: LabServer, prm: p.PromptRenderParams) -> dict[str, Any]:
    """Render a prompt into a file of the state dir and open it in the editor (the repair
    prompt of a failed run, from its diagnostic's code action)."""
    answer = await prompt_render(ls, prm)
    run_id = prm.vars.get("runId")
    name = f"{prm.template}-{run_id}.md" if isinstance(run_id, str) else f"{prm.template}.md"
    folder = ls.config.state_path(ls.root) / "prompts"
    path = folder / Path(name).name
    await _in_thread(_write, path, answer["text"])
    return {**await _show(ls, path), "template": prm.template}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


async def _show(ls: LabServer, path: Path) -> dict[str, Any]:
    shown = False
    caps = ls.client_capabilities
    if caps and caps.window and caps.window.show_document:
        result = await ls.window_show_document_async(
            types.ShowDocumentParams(uri=path.as_uri(), take_focus=True))
        shown = bool(result and result.success)
    return {"path": str(path), "shown": shown}


async def run_list(ls: LabServer, prm: p.RunListParams) -> dict[str, Any]:
    records = await _in_thread(ls.require_session().recent, prm, "labls.run.list")
    return {"runs": [r.to_wire() for r in records]}


async def run_compare(ls: LabServer, prm: p.RunCompareParams) -> dict[str, Any]:
    return await _in_thread(ls.require_session().compare_runs, prm, "labls.run.compare")


async def edit_apply(ls: LabServer, prm: p.EditApplyParams) -> dict[str, Any]:
    from labls.lab.session import STEP_BUSY, edit_refused

    from . import edits

    session = ls.require_session()
    if not prm.dry_run and session.step_running():
        return edit_refused(STEP_BUSY)
    buffers = edits.open_buffers(ls) if edits.client_applies_edits(ls) else {}
    plan = await _in_thread(session.plan_edit, prm, "labls.edit.apply", buffers)
    return await edits.apply(ls, plan, prm.dry_run)


async def experiment_step(ls: LabServer, prm: p.ExperimentStepParams) -> dict[str, Any]:
    """The step; its verdict also shown to the user (a step started from a code action has
    no other place to say how it went)."""
    result = await _in_thread(ls.require_session().step, prm, "labls.experiment.step")
    commit = f", committed {result['commit'][:10]}" if result.get("commit") else ""
    ls.window_show_message(types.ShowMessageParams(
        type=types.MessageType.Info if result["verdict"] == "keep" else types.MessageType.Warning,
        message=f"labls step {result['verdict']}: {result['reason']}{commit}"))
    return result


async def loop_start(ls: LabServer, prm: p.LoopStartParams) -> dict[str, Any]:
    session = ls.require_session()
    spec = session.loop_spec(prm, "labls.loop.start")
    state = await _in_thread(session.loop_start, spec)
    return {"loopId": state.loop_id}


async def loop_get(ls: LabServer, prm: p.LoopIdParams) -> dict[str, Any]:
    return await _in_thread(ls.require_session().loop_get, prm.loop_id, "labls.loop.get")


async def loop_stop(ls: LabServer, prm: p.LoopIdParams) -> dict[str, Any]:
    return await _in_thread(ls.require_session().loop_stop, prm.loop_id, "labls.loop.stop")


async def history(ls: LabServer, prm: p.HistoryParams) -> dict[str, Any]:
    return await _in_thread(ls.require_session().history, prm, "labls.history")


# command → (its params model in lab/params.py, by name: loaded on first use; its handler)
COMMANDS: dict[str, tuple[str, Handler]] = {
    "labls.datasets.list": ("Empty", datasets_list),
    "labls.prompt.render": ("PromptRenderParams", prompt_render),
    "labls.run.start": ("RunStartParams", run_start),
    "labls.run.get": ("RunGetParams", run_get),
    "labls.run.cancel": ("RunIdParams", run_cancel),
    "labls.run.list": ("RunListParams", run_list),
    "labls.run.showLog": ("RunIdParams", run_show_log),
    "labls.prompt.show": ("PromptRenderParams", prompt_show),
    "labls.run.compare": ("RunCompareParams", run_compare),
    "labls.edit.apply": ("EditApplyParams", edit_apply),
    "labls.experiment.step": ("ExperimentStepParams", experiment_step),
    "labls.loop.start": ("LoopStartParams", loop_start),
    "labls.loop.get": ("LoopIdParams", loop_get),
    "labls.loop.stop": ("LoopIdParams", loop_stop),
    "labls.history": ("HistoryParams", history),
}


def _translated(name: str, model: str, handler: Handler) -> Callable[..., Awaitable[Any]]:
    """pygls calls a command with its arguments spread: here they are structured into the
    command's params model, the lab core's refusals become -32602, and the answer is encoded
    to JSON off the loop."""

    async def command(ls: LabServer, *args: Any) -> Encoded:
        try:
            prm = p.structure(_one_object(args, name), getattr(p, model), name)
            await ls.until_ready()
            answer = await handler(ls, prm)
        except LabError as exc:
            raise JsonRpcInvalidParams(str(exc)) from None
        return await asyncio.to_thread(Encoded, answer)

    command.__name__ = handler.__name__  # (not functools.wraps: pygls reads the signature)
    return command


def register(server: LabServer) -> None:
    for name, (model, handler) in COMMANDS.items():
        server.command(name)(_translated(name, model, handler))
