"""`workspace/executeCommand` handlers. Routing only: structure args → call → answer.

Modules behind the handlers are imported on first use (and pre-warmed after `initialized`), so
that spawn → `initialize` answered costs no more than a bare pygls server.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

from pygls.exceptions import JsonRpcInvalidParams

from . import params as p
from .app import LabServer


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
            user_vars.update(await ls.services.repair_vars(user_vars.pop("runId")))
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


def _dataset_wire(d: Any) -> dict[str, Any]:
    data = asdict(d)
    data.pop("example")
    return data
